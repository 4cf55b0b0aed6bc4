package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// ReconnectConfig configures a Reconnector. Start from
// DefaultReconnectConfig; NewReconnector validates it.
type ReconnectConfig struct {
	// BackoffBase is the ceiling of the first wait: after the n-th
	// consecutive failure (n from 0) the wait is drawn uniformly from
	// [0, min(BackoffCap, BackoffBase·2^n)) ("full jitter"). Default 500ms.
	BackoffBase time.Duration

	// BackoffCap is the largest ceiling. Default 30s.
	BackoffCap time.Duration

	// MinDelay is the least wait between two attempts, whatever the jitter
	// draws, so no path can retry in a tight loop: over any time T a
	// Reconnector dials at most 1+T/MinDelay times. At most BackoffBase.
	// Default 20ms.
	MinDelay time.Duration

	// ResetAfter: a session that lived at least this long resets the
	// backoff to its first step. Default 30s.
	ResetAfter time.Duration

	// GoodbyeJitter is the window a reconnect after a goodbye (a session
	// that ended with ErrGoodbye) is spread over: the wait is uniform in
	// [MinDelay, GoodbyeJitter). 0 means BackoffBase. A server shedding for
	// rebalancing thus sees its clients return through the dispatcher
	// spread over the window, not as a storm.
	GoodbyeJitter time.Duration

	// OnRetry, when set, is called before every wait with the failure that
	// caused it.
	OnRetry func(RetryEvent)
}

// ErrGoodbye is what a SessionFunc returns (or wraps) when the server ended
// the session on purpose with a goodbye in the application's protocol:
// it sheds connections for rebalancing, or drains. The Reconnector then
// does not count the end as a failure: the backoff is reset, the next dial
// goes through the dispatcher avoiding that server, after a wait drawn
// from [MinDelay, GoodbyeJitter). For bin/tcpserver's protocol:
//
//	if strings.HasPrefix(line, "GOODBYE ") {
//		return fmt.Errorf("%s: %w", ans.ID, client.ErrGoodbye)
//	}
var ErrGoodbye = errors.New("server said goodbye")

// RetryEvent describes one failure a Reconnector is about to wait after.
type RetryEvent struct {
	// Err is the dial error, or the error the session function returned
	// (nil when it returned nil).
	Err error
	// Session is true when a session ended, false when a dial failed.
	Session bool
	// Attempt counts consecutive failures since the last reset, from 0.
	Attempt int
	// Wait is the delay before the next dial.
	Wait time.Duration
	// Goodbye is true when the session ended with ErrGoodbye: not a
	// failure, Attempt stays 0.
	Goodbye bool
}

// DefaultReconnectConfig returns usable defaults.
func DefaultReconnectConfig() ReconnectConfig {
	return ReconnectConfig{
		BackoffBase: 500 * time.Millisecond,
		BackoffCap:  30 * time.Second,
		MinDelay:    20 * time.Millisecond,
		ResetAfter:  30 * time.Second,
	}
}

// Validate checks the cross-field rules: every duration positive and
// MinDelay <= BackoffBase <= BackoffCap.
func (c ReconnectConfig) Validate() error {
	switch {
	case c.BackoffBase <= 0 || c.BackoffCap <= 0 || c.MinDelay <= 0 || c.ResetAfter <= 0:
		return errors.New("reconnect config: BackoffBase, BackoffCap, MinDelay and ResetAfter must be positive")
	case c.MinDelay > c.BackoffBase:
		return fmt.Errorf("reconnect config: MinDelay %v exceeds BackoffBase %v", c.MinDelay, c.BackoffBase)
	case c.BackoffBase > c.BackoffCap:
		return fmt.Errorf("reconnect config: BackoffBase %v exceeds BackoffCap %v", c.BackoffBase, c.BackoffCap)
	case c.GoodbyeJitter < 0 || c.GoodbyeJitter > 0 && c.GoodbyeJitter < c.MinDelay:
		return fmt.Errorf("reconnect config: GoodbyeJitter %v must be 0 or at least MinDelay %v", c.GoodbyeJitter, c.MinDelay)
	}
	return nil
}

// SessionFunc uses one connection. It should return when the connection
// fails or ctx is cancelled; Run closes conn after it returns, and also
// when ctx is cancelled, so a SessionFunc blocked reading conn returns.
type SessionFunc func(ctx context.Context, conn net.Conn, ans Answer) error

// Reconnector keeps a session with some tcp-server up. It holds only
// configuration: Run may be called several times, concurrently.
type Reconnector struct {
	c   *Client
	cfg ReconnectConfig
}

// NewReconnector returns a Reconnector dialing through c.
func NewReconnector(c *Client, cfg ReconnectConfig) (*Reconnector, error) {
	if c == nil {
		return nil, errors.New("reconnector: nil client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Reconnector{c: c, cfg: cfg}, nil
}

// Run dials, runs fn on the connection, and when fn returns dials again,
// until ctx is cancelled; then it returns nil. Every dial failure and every
// session end is followed by a full-jitter backoff wait, so the clients of
// a server that dies come back spread over time; a session that lived
// ResetAfter resets the backoff. The next dial after a session asks the
// dispatchers to exclude that session's server (it may still be reached
// through the cache or the static list).
func (r *Reconnector) Run(ctx context.Context, fn SessionFunc) error {
	attempt := 0
	var avoid []string
	for {
		conn, ans, err := r.c.dialAvoiding(ctx, avoid)
		if ctx.Err() != nil {
			if conn != nil {
				conn.Close()
			}
			return nil
		}
		if err != nil {
			if !r.wait(ctx, RetryEvent{Err: err, Attempt: attempt}) {
				return nil
			}
			attempt++
			continue
		}
		start := r.c.cfg.Now()
		err = r.session(ctx, conn, ans, fn)
		if ctx.Err() != nil {
			return nil
		}
		goodbye := errors.Is(err, ErrGoodbye)
		if goodbye || r.c.cfg.Now().Sub(start) >= r.cfg.ResetAfter {
			attempt = 0
		}
		avoid = []string{ans.ID}
		if ans.Source != SourceDispatcher {
			avoid = nil // cache and static ids mean nothing to a dispatcher
		}
		if !r.wait(ctx, RetryEvent{Err: err, Session: true, Attempt: attempt, Goodbye: goodbye}) {
			return nil
		}
		if !goodbye {
			attempt++
		}
	}
}

// session runs fn and closes conn when fn returns or ctx ends, whichever
// comes first.
func (r *Reconnector) session(ctx context.Context, conn net.Conn, ans Answer, fn SessionFunc) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer func() {
		stop()
		conn.Close()
	}()
	return fn(ctx, conn, ans)
}

// wait reports ev, then sleeps its backoff; false means ctx ended.
func (r *Reconnector) wait(ctx context.Context, ev RetryEvent) bool {
	if ev.Goodbye {
		ev.Wait = goodbyeWait(r.cfg, r.c.rand)
	} else {
		ev.Wait = backoff(r.cfg, ev.Attempt, r.c.rand)
	}
	if ra, ok := RetryAfter(ev.Err); ok {
		// The dispatchers asked for it: a full-jitter draw below it
		// would only earn another 429.
		ev.Wait = max(ev.Wait, ra)
	}
	if h := r.cfg.OnRetry; h != nil {
		h(ev)
	}
	t := time.NewTimer(ev.Wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// backoff returns the wait after the attempt-th consecutive failure:
// uniform in [0, min(cap, base·2^attempt)), raised to MinDelay.
func backoff(cfg ReconnectConfig, attempt int, rnd func(int64) int64) time.Duration {
	ceil := cfg.BackoffCap
	if attempt < 62 && cfg.BackoffBase <= cfg.BackoffCap>>attempt {
		ceil = cfg.BackoffBase << attempt
	}
	d := time.Duration(rnd(int64(ceil)))
	return max(d, cfg.MinDelay)
}

// goodbyeWait returns the wait before reconnecting after a goodbye:
// uniform in [MinDelay, GoodbyeJitter), GoodbyeJitter 0 meaning
// BackoffBase.
func goodbyeWait(cfg ReconnectConfig, rnd func(int64) int64) time.Duration {
	window := cfg.GoodbyeJitter
	if window == 0 {
		window = cfg.BackoffBase
	}
	return cfg.MinDelay + time.Duration(rnd(max(1, int64(window-cfg.MinDelay))))
}
