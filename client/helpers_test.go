package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/tcpdispatch/tcpdispatch/internal/testnet"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDispatcher is an httptest stand-in for a dispatcher replica; it
// records every get-tcp-ip query and fails the test on any other path.
type fakeDispatcher struct {
	t      testing.TB
	srv    *httptest.Server
	handle func(w http.ResponseWriter, q url.Values)

	mu      sync.Mutex
	queries []url.Values
	hosts   []string // Host headers
}

func newFakeDispatcher(t testing.TB, handle func(w http.ResponseWriter, q url.Values)) *fakeDispatcher {
	t.Helper()
	f := &fakeDispatcher{t: t, handle: handle}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/get-tcp-ip" || r.Method != http.MethodGet {
			t.Errorf("fake dispatcher: unexpected %s %s", r.Method, r.URL)
			http.Error(w, "unexpected", http.StatusNotFound)
			return
		}
		q := r.URL.Query()
		f.mu.Lock()
		f.queries = append(f.queries, q)
		f.hosts = append(f.hosts, r.Host)
		f.mu.Unlock()
		f.handle(w, q)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeDispatcher) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeDispatcher) hostHeaders() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.hosts...)
}

func (f *fakeDispatcher) requests() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]url.Values(nil), f.queries...)
}

// writeAnswer writes a 200 get-tcp-ip answer: the first server is the pick.
func writeAnswer(w http.ResponseWriter, servers ...Server) {
	a := struct {
		ID           string   `json:"id"`
		Addr         string   `json:"addr"`
		Alternatives []Server `json:"alternatives"`
	}{ID: servers[0].ID, Addr: servers[0].Addr, Alternatives: append([]Server{}, servers[1:]...)}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(a)
}

// answerExcluding answers servers minus the ?exclude= ids, or 503.
func answerExcluding(w http.ResponseWriter, q url.Values, servers ...Server) {
	ex := map[string]bool{}
	for id := range strings.SplitSeq(q.Get("exclude"), ",") {
		ex[id] = true
	}
	var left []Server
	for _, s := range servers {
		if !ex[s.ID] {
			left = append(left, s)
		}
	}
	if len(left) == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"error":"no healthy server: %d excluded"}`, len(ex))
		return
	}
	writeAnswer(w, left...)
}

// echoServer is a TCP server answering each line with "<id> <line>".
type echoServer struct {
	id, addr string
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func startEcho(t testing.TB, id string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{id: id, addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]bool{}}
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			e.mu.Lock()
			e.conns[c] = true
			e.mu.Unlock()
			e.wg.Go(func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintf(c, "%s %s\n", id, sc.Text()); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(e.stop)
	return e
}

// stop closes the listener and every connection and waits; idempotent.
func (e *echoServer) stop() {
	e.ln.Close()
	e.mu.Lock()
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

func (e *echoServer) server() Server { return Server{ID: e.id, Addr: e.addr} }

// deadAddr returns a loopback address that refuses connections.
func deadAddr(t testing.TB) string { return testnet.DeadAddr(t) }

// roundTrip writes a line on c and returns the echoed line.
func roundTrip(t testing.TB, c net.Conn, line string) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(got, "\n")
}

// fakeResolver answers a fixed name and fails the test for any other.
type fakeResolver struct {
	t    testing.TB
	name string

	mu    sync.Mutex
	addrs []string
	err   error
	calls int
}

func (r *fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if host != r.name {
		r.t.Errorf("fakeResolver: unexpected lookup of %q", host)
		return nil, fmt.Errorf("unexpected host %q", host)
	}
	return append([]string(nil), r.addrs...), r.err
}

func (r *fakeResolver) set(addrs []string, err error) {
	r.mu.Lock()
	r.addrs, r.err = addrs, err
	r.mu.Unlock()
}

func (r *fakeResolver) lookups() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// noShuffle makes Config.Rand keep list order in shuffles (j == i) and draw
// the largest jitter.
func noShuffle(n int64) int64 { return n - 1 }
