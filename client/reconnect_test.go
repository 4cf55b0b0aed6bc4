package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	cfg := ReconnectConfig{BackoffBase: 100 * time.Millisecond, BackoffCap: time.Second, MinDelay: 10 * time.Millisecond, ResetAfter: time.Second}
	for _, tc := range []struct {
		attempt  int
		wantCeil time.Duration // n given to rand
	}{
		{0, 100 * time.Millisecond},
		{1, 200 * time.Millisecond},
		{2, 400 * time.Millisecond},
		{3, 800 * time.Millisecond},
		{4, time.Second},
		{5, time.Second},
		{63, time.Second},
		{1000, time.Second},
	} {
		var gotN int64
		d := backoff(cfg, tc.attempt, func(n int64) int64 { gotN = n; return n - 1 })
		if time.Duration(gotN) != tc.wantCeil || d != tc.wantCeil-1 {
			t.Errorf("attempt %d: ceiling %v, wait %v; want ceiling %v", tc.attempt, time.Duration(gotN), d, tc.wantCeil)
		}
		if d := backoff(cfg, tc.attempt, func(int64) int64 { return 0 }); d != cfg.MinDelay {
			t.Errorf("attempt %d: zero jitter gives %v, want MinDelay %v", tc.attempt, d, cfg.MinDelay)
		}
	}
}

func TestReconnectConfigValidate(t *testing.T) {
	ok := DefaultReconnectConfig()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*ReconnectConfig){
		"zero base":      func(c *ReconnectConfig) { c.BackoffBase = 0 },
		"min over base":  func(c *ReconnectConfig) { c.MinDelay = c.BackoffBase + 1 },
		"base over cap":  func(c *ReconnectConfig) { c.BackoffBase = c.BackoffCap + 1 },
		"negative reset": func(c *ReconnectConfig) { c.ResetAfter = -1 },
	} {
		c := ok
		mutate(&c)
		if c.Validate() == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}

// fastReconnect is a ReconnectConfig for tests.
func fastReconnect() ReconnectConfig {
	return ReconnectConfig{BackoffBase: 20 * time.Millisecond, BackoffCap: 100 * time.Millisecond, MinDelay: time.Millisecond, ResetAfter: time.Hour}
}

func TestReconnectorMovesAwayFromEndedSession(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	d := newFakeDispatcher(t, func(w http.ResponseWriter, q url.Values) { answerExcluding(w, q, a.server(), b.server()) })
	c := newTestClient(t, Config{Bootstrap: []string{d.addr()}})
	var retries []RetryEvent
	cfg := fastReconnect()
	cfg.OnRetry = func(e RetryEvent) { retries = append(retries, e) }
	r, err := NewReconnector(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var echoes []string
	errBye := errors.New("bye")
	err = r.Run(ctx, func(_ context.Context, conn net.Conn, ans Answer) error {
		echoes = append(echoes, roundTrip(t, conn, "hi"))
		if len(echoes) == 4 {
			cancel()
		}
		return errBye
	})
	if err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	// Each session's server is excluded on the next ask, so sessions
	// alternate.
	want := []string{"a hi", "b hi", "a hi", "b hi"}
	for i := range want {
		if echoes[i] != want[i] {
			t.Fatalf("echoes = %q, want %q", echoes, want)
		}
	}
	if len(retries) != 3 {
		t.Fatalf("%d retries, want 3", len(retries))
	}
	for i, e := range retries {
		if !e.Session || e.Attempt != i || !errors.Is(e.Err, errBye) || e.Wait < cfg.MinDelay {
			t.Fatalf("retry %d = %+v", i, e)
		}
	}
	qs := d.requests()
	if qs[0].Has("exclude") || qs[1].Get("exclude") != "a" || qs[2].Get("exclude") != "b" {
		t.Fatalf("queries %v: want no exclude, then the previous session's server", qs)
	}
}

func TestReconnectorResetsBackoffAfterLongSession(t *testing.T) {
	a := startEcho(t, "a")
	d := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) { writeAnswer(w, a.server()) })
	clock := newFakeClock()
	c := newTestClient(t, Config{Bootstrap: []string{d.addr()}, Now: clock.Now})
	var attempts []int
	cfg := fastReconnect()
	cfg.ResetAfter = time.Minute
	cfg.OnRetry = func(e RetryEvent) { attempts = append(attempts, e.Attempt) }
	r, _ := NewReconnector(c, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	n := 0
	_ = r.Run(ctx, func(context.Context, net.Conn, Answer) error {
		n++
		switch n {
		case 3:
			clock.Advance(time.Minute) // a long session
		case 5:
			cancel()
		}
		return nil
	})
	want := []int{0, 1, 0, 1}
	if len(attempts) != len(want) {
		t.Fatalf("attempts %v, want %v", attempts, want)
	}
	for i := range want {
		if attempts[i] != want[i] {
			t.Fatalf("attempts %v, want %v", attempts, want)
		}
	}
}

func TestReconnectorClosesConnWhenCancelled(t *testing.T) {
	a := startEcho(t, "a")
	d := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) { writeAnswer(w, a.server()) })
	c := newTestClient(t, Config{Bootstrap: []string{d.addr()}})
	r, _ := NewReconnector(c, fastReconnect())
	ctx, cancel := context.WithCancel(t.Context())
	reading := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(_ context.Context, conn net.Conn, _ Answer) error {
			close(reading)
			_, err := bufio.NewReader(conn).ReadString('\n') // blocks: nothing is sent
			return err
		})
	}()
	<-reading
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel while the session was blocked reading")
	}
}

// deadDispatcher accepts connections and closes them at once, counting
// them: every request fails fast, the worst case for a retry loop.
func deadDispatcher(t *testing.T) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String(), accepted
}

// TestRetryBoundedAgainstDeadDispatcher runs a Reconnector for 2s against a
// dispatcher that fails every request at once. With one endpoint, no cache
// and no static list, one dial is exactly one request, and dial k+1 starts
// after a wait w_k >= MinDelay, so over T there are at most 1 + T/MinDelay
// requests whatever the jitter draws; with real jitter the waits grow as
// U[0, min(Cap, Base·2^k)) and far fewer happen.
func TestRetryBoundedAgainstDeadDispatcher(t *testing.T) {
	const T = 2 * time.Second
	cfg := ReconnectConfig{BackoffBase: 100 * time.Millisecond, BackoffCap: time.Second, MinDelay: 20 * time.Millisecond, ResetAfter: time.Minute}
	for _, tc := range []struct {
		name string
		rand func(int64) int64
		// max is the bound asserted. Worst case (jitter always 0): every
		// wait is MinDelay, 1 + 2s/20ms = 101. Real jitter: 21 requests
		// would need the first 20 waits to sum under 2s; 16 of them are
		// U[0,1s), whose sum is under 2s with probability 2^16/16! < 1e-8.
		max int64
	}{
		{"worst-case jitter", func(int64) int64 { return 0 }, 1 + int64(T/cfg.MinDelay)},
		{"real jitter", nil, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, accepted := deadDispatcher(t)
			c := newTestClient(t, Config{Bootstrap: []string{addr}, Rand: tc.rand})
			var dialFailures atomic.Int64
			rc := cfg
			rc.OnRetry = func(e RetryEvent) {
				if e.Session {
					t.Errorf("a session started against a dead dispatcher")
				}
				dialFailures.Add(1)
			}
			r, err := NewReconnector(c, rc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), T)
			defer cancel()
			_ = r.Run(ctx, func(context.Context, net.Conn, Answer) error { return nil })
			n := accepted.Load()
			t.Logf("%s: %d requests in %v (bound %d), %d dial failures", tc.name, n, T, tc.max, dialFailures.Load())
			if n > tc.max {
				t.Fatalf("%d requests in %v, bound %d", n, T, tc.max)
			}
			if n < 2 {
				t.Fatalf("%d requests: the Reconnector stopped retrying", n)
			}
			if f := dialFailures.Load(); f < n-1 || f > n {
				t.Fatalf("%d requests but %d dial failures: want one request per dial", n, f)
			}
		})
	}
}

// TestReconnectorGoodbyeIsNotAFailure: sessions that end with a wrapped
// ErrGoodbye keep Attempt at 0, wait within [MinDelay, GoodbyeJitter) and
// move away from the server that said goodbye; a failure after them
// counts from 0 again.
func TestReconnectorGoodbyeIsNotAFailure(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	d := newFakeDispatcher(t, func(w http.ResponseWriter, q url.Values) { answerExcluding(w, q, a.server(), b.server()) })
	c := newTestClient(t, Config{Bootstrap: []string{d.addr()}})
	var retries []RetryEvent
	cfg := fastReconnect()
	cfg.GoodbyeJitter = 30 * time.Millisecond
	cfg.OnRetry = func(e RetryEvent) { retries = append(retries, e) }
	r, err := NewReconnector(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var ids []string
	errDead := errors.New("read: connection reset")
	_ = r.Run(ctx, func(_ context.Context, conn net.Conn, ans Answer) error {
		ids = append(ids, ans.ID)
		switch len(ids) {
		case 4:
			return errDead
		case 5:
			cancel()
			return nil
		}
		return fmt.Errorf("line %q: %w", "GOODBYE", ErrGoodbye)
	})
	if len(retries) != 4 {
		t.Fatalf("retries %+v; want 4", retries)
	}
	for i, e := range retries[:3] {
		if !e.Goodbye || e.Attempt != 0 || e.Wait < cfg.MinDelay || e.Wait >= cfg.GoodbyeJitter {
			t.Errorf("goodbye %d: %+v; want attempt 0 and a wait in [%v, %v)", i, e, cfg.MinDelay, cfg.GoodbyeJitter)
		}
	}
	if e := retries[3]; e.Goodbye || e.Attempt != 0 {
		t.Errorf("failure after goodbyes: %+v; want attempt 0, not a goodbye", e)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1] {
			t.Errorf("sessions %v: want each goodbye to move to the other server", ids)
		}
	}
	// Validation.
	bad := fastReconnect()
	bad.GoodbyeJitter = -1
	if bad.Validate() == nil {
		t.Error("negative GoodbyeJitter accepted")
	}
	bad.GoodbyeJitter = bad.MinDelay / 2
	if bad.Validate() == nil {
		t.Error("GoodbyeJitter below MinDelay accepted")
	}
}
