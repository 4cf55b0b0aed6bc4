package api

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/valyala/fasthttp"

	"github.com/tcpdispatch/tcpdispatch/store"
)

// TestFastPathMatchesEcho sends the same requests to the public listener
// (fasthttp, and the event loops: Config.EventLoop) and to the echo
// handler, and checks that status, the headers clients read and, where
// the pick is deterministic, the body are the same.
func TestFastPathMatchesEcho(t *testing.T) {
	f := newFixtures(t)
	type request struct {
		method, target string
		header         http.Header
	}
	get := func(target string) request { return request{method: http.MethodGet, target: target} }
	head := func(target string) request { return request{method: http.MethodHead, target: target} }
	lookups := []request{
		get("/get-tcp-ip"), get("/get-tcp-ip?format=text"), get("/get-tcp-ip?key=user-42"),
		get("/get-tcp-ip?n=3"), get("/get-tcp-ip?n=3&format=text"), get("/get-tcp-ip?exclude=h1,h2&key=k"),
		get("/get-tcp-ip?exclude=h1,h2,h3,h4,h5"), get("/get-tcp-ip?key=%zz"), get("/get-tcp-ip?n=0"),
		get("/get-tcp-ip?format=xml"), get("/get-tcp-ip?exclude=a%2Fb"), get("/get-tcp-ip?&&=&key&exclude=,,&x=%41"),
		get("/get-tcp-ip?key=" + strings.Repeat("k", 300)),
		head("/get-tcp-ip"), head("/get-tcp-ip?format=text"), head("/get-tcp-ip?exclude=h1,h2,h3,h4,h5"),
		get("/healthz"), get("/readyz"), head("/healthz"), head("/readyz"),
		get("/get-tcp-ip/"), get("/nope"), get("/v1/status"),
		{method: http.MethodPost, target: "/get-tcp-ip"}, {method: http.MethodDelete, target: "/healthz"},
	}
	for _, tc := range []struct {
		name string
		snap *store.Snapshot
		// sameBody: picks do not depend on which server asked first.
		sameBody bool
		cfg      func(*Config)
		requests []request
	}{
		{name: "hash", snap: f.hash, sameBody: true, requests: lookups},
		{name: "one", snap: f.one, sameBody: true, requests: lookups},
		{name: "none", snap: f.none, sameBody: true, requests: lookups},
		{name: "no snapshot", sameBody: true, requests: lookups},
		{name: "mixed", snap: f.mixed, requests: lookups},
		{name: "all down", snap: f.down, requests: lookups},
		{name: "rate limited", snap: f.hash, sameBody: true,
			cfg:      func(c *Config) { c.RateLimit, c.RateBurst = 0.001, 2 },
			requests: []request{get("/get-tcp-ip"), get("/get-tcp-ip"), get("/get-tcp-ip"), head("/get-tcp-ip")}},
		{name: "trusted proxy", snap: f.hash, sameBody: true,
			cfg: func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} },
			requests: []request{
				{method: http.MethodGet, target: "/get-tcp-ip", header: http.Header{"X-Forwarded-For": {"203.0.113.7"}}},
				{method: http.MethodGet, target: "/get-tcp-ip", header: http.Header{"X-Forwarded-For": {"198.51.100.1, 127.0.0.2", "127.0.0.3"}}},
				{method: http.MethodGet, target: "/get-tcp-ip", header: http.Header{"X-Real-Ip": {"192.0.2.44"}}},
				{method: http.MethodGet, target: "/get-tcp-ip", header: http.Header{"X-Forwarded-For": {"bogus"}}},
			}},
	} {
		for _, loop := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/event loop %v", tc.name, loop), func(t *testing.T) {
				newServer := func() *Server {
					cfg := Config{Name: "replica-1", EventLoop: loop}
					if tc.cfg != nil {
						tc.cfg(&cfg)
					}
					s, err := New(cfg, sourceOf(tc.snap), fakeLeader(false), nil, prometheus.NewRegistry(), nil)
					if err != nil {
						t.Fatal(err)
					}
					return s
				}
				// Two servers: a rate limiter's state is per server.
				viaEcho, viaFast := newServer().Handler(), newServer()
				addr, _ := serveListeners(t, viaFast, false)
				client := &http.Client{Timeout: 5 * time.Second}
				defer client.CloseIdleConnections()
				for _, r := range tc.requests {
					req := httptest.NewRequest(r.method, r.target, nil)
					req.RemoteAddr = "127.0.0.1:40000"
					req.Header = r.header.Clone()
					if req.Header == nil {
						req.Header = http.Header{}
					}
					want := httptest.NewRecorder()
					viaEcho.ServeHTTP(want, req)

					hreq, err := http.NewRequest(r.method, "http://"+addr+r.target, nil)
					if err != nil {
						t.Fatal(err)
					}
					hreq.Header = r.header.Clone()
					resp, err := client.Do(hreq)
					if err != nil {
						t.Fatalf("%s %s: %v", r.method, r.target, err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()

					what := r.method + " " + r.target
					if resp.StatusCode != want.Code {
						t.Errorf("%s: status %d, echo %d (body %q, echo %q)", what, resp.StatusCode, want.Code, body, want.Body)
						continue
					}
					for _, h := range []string{"Content-Type", "Cache-Control", "Retry-After", DegradedHeader, "Allow"} {
						if got, w := resp.Header.Get(h), want.Header().Get(h); got != w {
							t.Errorf("%s: %s %q, echo %q", what, h, got, w)
						}
					}
					if resp.Header.Get("Date") == "" {
						t.Errorf("%s: no Date header", what)
					}
					if r.method == http.MethodHead {
						continue
					}
					if tc.sameBody || resp.StatusCode != http.StatusOK {
						if string(body) != want.Body.String() && r.target != "/v1/status" {
							t.Errorf("%s: body %q, echo %q", what, body, want.Body)
						}
					} else if len(body) == 0 {
						t.Errorf("%s: empty body", what)
					}
				}
			})
		}
	}
}

// TestFastPathLimits checks the answers fasthttp gives for requests it
// cannot read, and that a request line that fits but a header that does
// not gets 431 at exactly MaxHeaderBytes plus net/http's slack.
func TestFastPathLimits(t *testing.T) {
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("event loop %v", loop), func(t *testing.T) { testFastPathLimits(t, loop) })
	}
}

func testFastPathLimits(t *testing.T, loop bool) {
	s, err := New(Config{Name: "t", MaxHeaderBytes: 4 << 10, ReadHeaderTimeout: 300 * time.Millisecond, EventLoop: loop}, sourceOf(nil), fakeLeader(false), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveListeners(t, s, false)
	raw := func(req string) (string, time.Duration) { return rawRoundTrip(t, addr, req, true) }
	for _, tc := range []struct {
		name, req, status string
	}{
		{"fits", fmt.Sprintf("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("b", 4<<10)), "HTTP/1.1 200 OK"},
		{"too big", fmt.Sprintf("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("b", 9<<10)), "HTTP/1.1 431 Request Header Fields Too Large"},
		{"garbage", "NOT HTTP AT ALL\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"no host", "GET /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"}, // as net/http
	} {
		if got, _ := raw(tc.req); got != tc.status {
			t.Errorf("%s: status line %q, want %q", tc.name, got, tc.status)
		}
	}
	// A client that never finishes its headers is answered 408 and cut off
	// after ReadHeaderTimeout.
	got, took := raw("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	if got != "HTTP/1.1 408 Request Timeout" || took > 2*time.Second {
		t.Errorf("slow client: %q after %v, want 408 after ~300ms", got, took)
	}
}

// TestFastPathAllocations checks that get-tcp-ip answers of the fast path
// allocate nothing per request, as the echo path's (maxAllocs).
func TestFastPathAllocations(t *testing.T) {
	f := newFixtures(t)
	s := newTestServer(t, sourceOf(f.mixed), fakeLeader(false), nil)
	h := s.recoverFast(s.fastHandler(func(*fasthttp.RequestCtx) { t.Fatal("fallback called") }))
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var ctx fasthttp.RequestCtx
	ctx.Init2(&peerConn{Conn: a}, nil, false)
	for _, target := range []string{"/get-tcp-ip", "/get-tcp-ip?key=user-42&exclude=a", "/get-tcp-ip?format=text"} {
		ctx.Request.Header.SetMethod(http.MethodGet)
		ctx.Request.SetRequestURI(target)
		allocs := testing.AllocsPerRun(1000, func() {
			ctx.Response.Reset()
			h(&ctx)
			if ctx.Response.StatusCode() != http.StatusOK || len(ctx.Response.Body()) == 0 {
				t.Fatalf("%s = %d %q", target, ctx.Response.StatusCode(), ctx.Response.Body())
			}
		})
		t.Logf("GET %s: %v allocs/request", target, allocs)
		if allocs > maxAllocs {
			t.Errorf("GET %s allocates %v times per request on the fast path; want <= %d", target, allocs, maxAllocs)
		}
	}
}

// flakyListener fails its first accepts with errs, then accepts from the
// real listener.
type flakyListener struct {
	net.Listener
	errs []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.Listener.Accept()
}

// TestPeerListenerRetriesShortages checks that the public listener outlives
// running out of file descriptors (fasthttp alone would stop serving), and
// that a closed listener still ends Accept.
func TestPeerListenerRetriesShortages(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	ln := peerListener{Listener: &flakyListener{Listener: inner, errs: []error{emfile, emfile}}, log: logrus.NewEntry(logrus.New())}
	// The handshake completes in the backlog: no goroutine needed.
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept after two EMFILE = %v; want a connection", err)
	}
	c.Close()
	inner.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed listener = %v; want net.ErrClosed", err)
	}
}
