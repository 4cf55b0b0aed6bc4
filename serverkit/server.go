package serverkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/tcpdispatch/tcpdispatch/internal/backoff"
)

// Config configures a Server. Start from DefaultConfig; New validates it.
type Config struct {
	// MaxConns is the most connections served at once; a connection
	// accepted beyond it is closed at once, so its client tries another
	// server without waiting. 0 is unlimited. Reported as max_conns.
	MaxConns int

	// Load, when set, supplies the document's load figure (see NewStatus).
	Load func() float64

	// DrainWindow is how long Serve spreads the closing of connections over
	// when its ctx is cancelled. 0 closes them all at once. Default 10s.
	DrainWindow time.Duration

	// Now is the clock behind connection idleness. Default time.Now.
	Now func() time.Time

	// OnShed, when set, says goodbye to a connection the leader asked this
	// server to shed for rebalancing, before it is closed; see
	// Status.SetOnShed. ShedTimeout is the write deadline it runs under
	// (default DefaultShedTimeout).
	OnShed      func(conn net.Conn)
	ShedTimeout time.Duration
}

// DefaultConfig returns usable defaults: unlimited connections, a 10s drain.
func DefaultConfig() Config {
	return Config{DrainWindow: 10 * time.Second}
}

// Validate rejects negative limits and windows.
func (c Config) Validate() error {
	if c.MaxConns < 0 {
		return fmt.Errorf("serverkit config: MaxConns %d is negative", c.MaxConns)
	}
	if c.DrainWindow < 0 {
		return fmt.Errorf("serverkit config: DrainWindow %v is negative", c.DrainWindow)
	}
	if c.ShedTimeout < 0 {
		return fmt.Errorf("serverkit config: ShedTimeout %v is negative", c.ShedTimeout)
	}
	return nil
}

// Server runs a tcp-server's accept loop with connection tracking, the
// MaxConns limit and a graceful drain.
type Server struct {
	cfg    Config
	status *Status

	closeOnce sync.Once
	closed    chan struct{}
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st := NewStatus(cfg.MaxConns, cfg.Load)
	if cfg.Now != nil {
		st.now = cfg.Now
	}
	st.SetOnShed(cfg.OnShed, cfg.ShedTimeout)
	return &Server{cfg: cfg, status: st, closed: make(chan struct{})}, nil
}

// Status returns the server's Status, to serve as the status document.
func (s *Server) Status() *Status { return s.status }

// Serve accepts connections on ln and runs handle for each in its own
// goroutine with a tracked conn, which Serve closes when handle returns.
// When ctx is cancelled it drains (Status.Drain over DrainWindow), then
// cancels the ctx given to handlers, waits for every handler to return and
// returns nil. Close cuts the drain short. Accept errors other than a closed
// listener are retried after a pause growing from 5ms to 1s, as net/http
// does. Serve closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener, handle func(ctx context.Context, conn net.Conn)) error {
	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer func() {
		cancelHandlers()
		wg.Wait()
		s.status.WaitShed()
	}()

	// Stop accepting when ctx ends or Close is called.
	stopAccept := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopAccept()
	wg.Go(func() {
		select {
		case <-s.closed:
			ln.Close()
		case <-hctx.Done():
		}
	})

	// Accept errors (EMFILE and the like) are retried after 5ms, 10ms, …
	// up to 1s, as net/http does.
	pause := backoff.Exponential{Base: 5 * time.Millisecond, Cap: time.Second, Jitter: backoff.None}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || s.isClosed() || errors.Is(err, net.ErrClosed) {
				break
			}
			t := time.NewTimer(pause.Next())
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
			case <-s.closed:
			}
			t.Stop()
			break
		}
		pause.Reset()
		if s.status.Full() {
			c.Close()
			continue
		}
		tc := s.status.Track(c)
		wg.Go(func() {
			defer tc.Close()
			handle(hctx, tc)
		})
	}

	// Drain until the window ends or Close is called.
	dctx, cancelDrain := context.WithCancel(hctx)
	defer cancelDrain()
	stopDrain := make(chan struct{})
	var dwg sync.WaitGroup
	dwg.Go(func() {
		select {
		case <-s.closed:
			cancelDrain()
		case <-stopDrain:
		}
	})
	err := s.status.Drain(dctx, ln, s.cfg.DrainWindow)
	close(stopDrain)
	dwg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Close makes Serve stop at once: the listener and every connection are
// closed without waiting for the drain window. Serve still waits for the
// handlers to return. Close is idempotent and does not wait.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
}

func (s *Server) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}
