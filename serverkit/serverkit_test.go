package serverkit

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/tcpdispatch/tcpdispatch/internal/depcheck"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipeConn returns the server side of a net.Pipe and closes the client
// side when the test ends.
func pipeConn(t *testing.T) net.Conn {
	t.Helper()
	srv, cli := net.Pipe()
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return srv
}

func TestDocument(t *testing.T) {
	for _, tc := range []struct {
		name     string
		max      int
		load     func() float64
		conns    int
		draining bool
		want     Document
	}{
		{"unlimited", 0, nil, 3, false, Document{Conns: 3}},
		{"quarter", 4, nil, 1, false, Document{Conns: 1, MaxConns: 4, Load: 0.25}},
		{"over the limit", 2, nil, 3, false, Document{Conns: 3, MaxConns: 2, Load: 1}},
		{"own load", 4, func() float64 { return 0.7 }, 1, false, Document{Conns: 1, MaxConns: 4, Load: 0.7}},
		{"own load clamped up", 0, func() float64 { return 1.7 }, 0, false, Document{Load: 1}},
		{"own load clamped down", 0, func() float64 { return -2 }, 0, false, Document{}},
		{"NaN falls back", 4, math.NaN, 2, false, Document{Conns: 2, MaxConns: 4, Load: 0.5}},
		{"negative max is unlimited", -5, nil, 1, false, Document{Conns: 1}},
		{"draining", 0, nil, 0, true, Document{Draining: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStatus(tc.max, tc.load)
			for range tc.conns {
				s.Track(pipeConn(t))
			}
			if tc.draining {
				s.SetDraining()
			}
			if got := s.Document(); got != tc.want {
				t.Fatalf("Document() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestStatusHTTP(t *testing.T) {
	s := NewStatus(10, nil)
	s.Track(pipeConn(t))
	srv := httptest.NewServer(s)
	defer srv.Close()
	get := func(method string) (int, string, http.Header) {
		req, _ := http.NewRequest(method, srv.URL+"/status", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	code, body, h := get(http.MethodGet)
	if code != 200 || body != `{"conns":1,"max_conns":10,"load":0.1,"draining":false}`+"\n" || h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET = %d %q %v", code, body, h)
	}
	if code, body, _ := get(http.MethodHead); code != 200 || body != "" {
		t.Fatalf("HEAD = %d %q", code, body)
	}
	if code, _, h := get(http.MethodPost); code != http.StatusMethodNotAllowed || h.Get("Allow") == "" {
		t.Fatalf("POST = %d", code)
	}
	s.SetDraining()
	s.SetDraining() // idempotent
	code, body, _ = get(http.MethodGet)
	var d Document
	if err := json.Unmarshal([]byte(body), &d); code != http.StatusServiceUnavailable || err != nil || !d.Draining || d.Conns != 1 {
		t.Fatalf("draining GET = %d %q", code, body)
	}
	select {
	case <-s.Draining():
	default:
		t.Fatal("Draining channel not closed")
	}
}

func TestTrack(t *testing.T) {
	s := NewStatus(2, nil)
	a, b := s.Track(pipeConn(t)), s.Track(pipeConn(t))
	if s.Conns() != 2 || !s.Full() {
		t.Fatalf("conns %d full %v", s.Conns(), s.Full())
	}
	a.Close()
	a.Close() // counted once
	if s.Conns() != 1 || s.Full() {
		t.Fatalf("after close: conns %d full %v", s.Conns(), s.Full())
	}
	if _, ok := b.(interface{ NetConn() net.Conn }); !ok {
		t.Fatal("tracked conn does not expose NetConn")
	}
	b.Close()
	if s.Conns() != 0 {
		t.Fatalf("conns %d", s.Conns())
	}
}

// recordingConn records when it is closed.
type recordingConn struct {
	net.Conn
	name string
	log  *closeLog
}

type closeLog struct {
	mu    sync.Mutex
	start time.Time
	names []string
	at    []time.Duration
}

func (c *recordingConn) Close() error {
	c.log.mu.Lock()
	c.log.names = append(c.log.names, c.name)
	c.log.at = append(c.log.at, time.Since(c.log.start))
	c.log.mu.Unlock()
	return c.Conn.Close()
}

// fakeClock is a manually set clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func TestDrainClosesIdlestFirstAtAnEvenPace(t *testing.T) {
	clock := &fakeClock{}
	s := NewStatus(0, nil)
	s.now = clock.Now
	log := &closeLog{}
	// Track c3 first and c1 last, with c1 the least recently active.
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, name := range []string{"c3", "c2", "c4", "c1"} {
		clock.Set(base.Add(time.Duration([]int{3, 2, 4, 1}[i]) * time.Second))
		s.Track(&recordingConn{Conn: pipeConn(t), name: name, log: log})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const window = 400 * time.Millisecond
	log.start = time.Now()
	if err := s.Drain(t.Context(), ln, window); err != nil {
		t.Fatal(err)
	}
	took := time.Since(log.start)
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepts after Drain")
	}
	if !s.Document().Draining || s.Conns() != 0 {
		t.Fatalf("after Drain: %+v", s.Document())
	}
	want := []string{"c1", "c2", "c3", "c4"}
	if strings.Join(log.names, ",") != strings.Join(want, ",") {
		t.Fatalf("closed %v, want idlest first %v", log.names, want)
	}
	// The k-th close is due at k/4 of the window.
	for k, at := range log.at {
		due := window * time.Duration(k+1) / 4
		if at < due-20*time.Millisecond || at > due+150*time.Millisecond {
			t.Errorf("close %d at %v, due at %v", k+1, at, due)
		}
	}
	if took < window-20*time.Millisecond || took > window+200*time.Millisecond {
		t.Fatalf("Drain took %v for a %v window", took, window)
	}
	t.Logf("closes at %v", log.at)
}

func TestDrainReturnsWhenConnectionsLeave(t *testing.T) {
	s := NewStatus(0, nil)
	a, b := s.Track(pipeConn(t)), s.Track(pipeConn(t))
	go func() {
		time.Sleep(50 * time.Millisecond)
		a.Close()
		b.Close()
	}()
	start := time.Now()
	if err := s.Drain(t.Context(), nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Drain took %v after its connections left", took)
	}
}

func TestDrainCancelledClosesEverything(t *testing.T) {
	s := NewStatus(0, nil)
	s.Track(pipeConn(t))
	s.Track(pipeConn(t))
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := s.Drain(ctx, nil, time.Hour); err != context.DeadlineExceeded {
		t.Fatalf("Drain = %v, want DeadlineExceeded", err)
	}
	if s.Conns() != 0 {
		t.Fatalf("%d conns left", s.Conns())
	}
}

func TestDrainZeroWindow(t *testing.T) {
	s := NewStatus(0, nil)
	s.Track(pipeConn(t))
	if err := s.Drain(t.Context(), nil, 0); err != nil || s.Conns() != 0 {
		t.Fatalf("Drain = %v, conns %d", err, s.Conns())
	}
}

func echoHandler(_ context.Context, c net.Conn) {
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		fmt.Fprintf(c, "echo %s\n", sc.Text())
	}
}

func dialLine(t *testing.T, addr, line string) (net.Conn, string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintln(c, line)
	got, err := bufio.NewReader(c).ReadString('\n')
	return c, strings.TrimSpace(got), err
}

func TestServerLimitsAndDrains(t *testing.T) {
	srv, err := New(Config{MaxConns: 2, DrainWindow: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, echoHandler) }()

	c1, got, err := dialLine(t, ln.Addr().String(), "one")
	if err != nil || got != "echo one" {
		t.Fatalf("c1: %q %v", got, err)
	}
	if _, got, err := dialLine(t, ln.Addr().String(), "two"); err != nil || got != "echo two" {
		t.Fatalf("c2: %q %v", got, err)
	}
	// Over MaxConns: accepted and closed at once.
	if _, got, err := dialLine(t, ln.Addr().String(), "three"); err == nil {
		t.Fatalf("third connection served (%q) over MaxConns 2", got)
	}
	if d := srv.Status().Document(); d.Conns != 2 || d.Load != 1 {
		t.Fatalf("document %+v", d)
	}

	start := time.Now()
	cancel()
	// Draining: reported at once, while the connections still work.
	deadline := time.Now().Add(time.Second)
	for !srv.Status().Document().Draining {
		if time.Now().After(deadline) {
			t.Fatal("not draining after cancel")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the drain window")
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("Serve returned after %v, before the 300ms window", took)
	}
	_ = c1.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c1.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Serve returned")
	}
}

func TestServerCloseCutsDrainShort(t *testing.T) {
	srv, err := New(Config{DrainWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, echoHandler) }()
	if _, _, err := dialLine(t, ln.Addr().String(), "x"); err != nil {
		t.Fatal(err)
	}
	cancel()
	time.Sleep(20 * time.Millisecond)
	srv.Close()
	srv.Close() // idempotent
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
}

func TestConfigValidate(t *testing.T) {
	if _, err := New(Config{MaxConns: -1}); err == nil {
		t.Error("negative MaxConns accepted")
	}
	if _, err := New(Config{DrainWindow: -1}); err == nil {
		t.Error("negative DrainWindow accepted")
	}
	if _, err := New(DefaultConfig()); err != nil {
		t.Error(err)
	}
}

// TestNoEtcdDependency keeps the kit light: etcd is in serverkit/register.
func TestNoEtcdDependency(t *testing.T) {
	depcheck.Forbid(t, depcheck.Heavy...)
	// The contract package and the backoff helper import only the
	// standard library themselves (their own tests check it).
	depcheck.StandardLibraryOnly(t, "github.com/tcpdispatch/tcpdispatch", "github.com/tcpdispatch/tcpdispatch/internal/backoff")
}
