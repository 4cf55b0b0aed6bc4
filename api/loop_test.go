package api

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcpdispatch/tcpdispatch/store"
)

// rawExchange writes reqs on one connection to addr at once (pipelined)
// and returns the answers as sent, Date masked, up to want answers or the
// end of the connection.
func rawExchange(t *testing.T, addr string, reqs []string, want int) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, strings.Join(reqs, "")); err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &raw))
	var out []string
	consumed := 0
	for i := 0; i < want; i++ {
		method := http.MethodGet
		if i < len(reqs) && strings.HasPrefix(reqs[i], "HEAD ") {
			method = http.MethodHead
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// What the answer took of the raw stream: all read so far, less
		// what bufio holds for the next one.
		end := raw.Len() - br.Buffered()
		out = append(out, maskDate(string(raw.Bytes()[consumed:end])))
		consumed = end
	}
	return out
}

var dateRE = regexp.MustCompile(`(?m)^Date: [^\r]*\r$`)

func maskDate(s string) string { return dateRE.ReplaceAllString(s, "Date: *\r") }

// rawRoundTrip dials addr, writes req and returns, with the time it took,
// the answer's first line (firstLine, trimmed) or everything the server
// sent until it closed the connection, reading for at most 5 s.
func rawRoundTrip(t *testing.T, addr, req string, firstLine bool) (string, time.Duration) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetDeadline(start.Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	if firstLine {
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line), time.Since(start)
	}
	b, _ := io.ReadAll(c)
	return string(b), time.Since(start)
}

// TestLoopMatchesFast sends the same raw bytes to a public listener served
// by the event loops and to one served by fasthttp alone, and checks that
// the answers are the same bytes (Date aside), for the requests the loops
// answer and for those they hand over.
func TestLoopMatchesFast(t *testing.T) {
	f := newFixtures(t)
	const h = "Host: x\r\n"
	get := func(target string, headers ...string) string {
		return "GET " + target + " HTTP/1.1\r\n" + h + strings.Join(headers, "") + "\r\n"
	}
	cases := []struct {
		name string
		reqs []string
		want int // answers to read; default len(reqs)
	}{
		{name: "get", reqs: []string{get("/get-tcp-ip")}},
		{name: "text", reqs: []string{get("/get-tcp-ip?format=text")}},
		{name: "key", reqs: []string{get("/get-tcp-ip?key=user-42")}},
		{name: "n", reqs: []string{get("/get-tcp-ip?n=3")}},
		{name: "bad escape", reqs: []string{get("/get-tcp-ip?key=%zz")}},
		{name: "bad n", reqs: []string{get("/get-tcp-ip?n=0")}},
		{name: "bad exclude", reqs: []string{get("/get-tcp-ip?exclude=a%2Fb")}},
		{name: "noise", reqs: []string{get("/get-tcp-ip?&&=&key&exclude=,,&x=%41")}},
		{name: "fragment", reqs: []string{get("/get-tcp-ip?key=a#frag")}},
		{name: "healthz", reqs: []string{get("/healthz")}},
		{name: "readyz", reqs: []string{get("/readyz")}},
		{name: "head", reqs: []string{"HEAD /get-tcp-ip HTTP/1.1\r\n" + h + "\r\n", "HEAD /readyz HTTP/1.1\r\n" + h + "\r\n", "HEAD /healthz HTTP/1.1\r\n" + h + "\r\n"}},
		{name: "head bad", reqs: []string{"HEAD /get-tcp-ip?n=0 HTTP/1.1\r\n" + h + "\r\n"}},
		{name: "pipelined", reqs: []string{get("/get-tcp-ip"), get("/healthz"), get("/get-tcp-ip?key=k"), get("/readyz")}},
		{name: "close", reqs: []string{get("/get-tcp-ip", "Connection: close\r\n"), get("/healthz")}, want: 2},
		{name: "keep-alive", reqs: []string{get("/get-tcp-ip", "Connection: keep-alive\r\n"), get("/healthz")}},
		{name: "Close", reqs: []string{get("/get-tcp-ip", "Connection: Close\r\n"), get("/healthz")}, want: 2},
		{name: "close list", reqs: []string{get("/healthz", "Connection: keep-alive, close\r\n"), get("/healthz")}, want: 2},
		{name: "http/1.0", reqs: []string{"GET /get-tcp-ip HTTP/1.0\r\n\r\n", get("/healthz")}, want: 2},
		{name: "http/1.0 host", reqs: []string{"GET /get-tcp-ip HTTP/1.0\r\n" + h + "\r\n", get("/healthz")}, want: 2},
		{name: "http/1.0 keep-alive", reqs: []string{"GET /get-tcp-ip HTTP/1.0\r\n" + h + "Connection: keep-alive\r\n\r\n", get("/healthz")}},
		{name: "no host", reqs: []string{"GET /healthz HTTP/1.1\r\n\r\n"}},
		{name: "two hosts", reqs: []string{get("/healthz", h)}},
		{name: "lower case", reqs: []string{"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: keep-alive\r\n\r\n"}},
		{name: "empty length", reqs: []string{get("/get-tcp-ip", "Content-Length: 0\r\n"), get("/healthz")}},
		{name: "body", reqs: []string{get("/get-tcp-ip", "Content-Length: 3\r\n") + "abc", get("/healthz")}},
		{name: "chunked", reqs: []string{get("/get-tcp-ip", "Transfer-Encoding: chunked\r\n") + "0\r\n\r\n", get("/healthz")}},
		{name: "other route", reqs: []string{get("/nope"), get("/get-tcp-ip")}},
		{name: "slash", reqs: []string{get("/get-tcp-ip/"), get("/get-tcp-ip")}},
		{name: "escaped path", reqs: []string{get("/get-tcp-%69p"), get("/get-tcp-ip")}},
		{name: "absolute", reqs: []string{get("http://x/get-tcp-ip"), get("/get-tcp-ip")}},
		{name: "post", reqs: []string{"POST /get-tcp-ip HTTP/1.1\r\n" + h + "Content-Length: 0\r\n\r\n", get("/get-tcp-ip")}},
		{name: "delete", reqs: []string{"DELETE /healthz HTTP/1.1\r\n" + h + "\r\n", get("/healthz")}},
		{name: "hot then other then hot", reqs: []string{get("/get-tcp-ip"), get("/v1/status"), get("/healthz")}},
		{name: "garbage", reqs: []string{"NOT HTTP AT ALL\r\n\r\n"}},
		{name: "lower method", reqs: []string{"get /healthz HTTP/1.1\r\n" + h + "\r\n"}},
		{name: "http/2 line", reqs: []string{"GET /healthz HTTP/2.0\r\n" + h + "\r\n"}},
		{name: "bare lf", reqs: []string{"GET /healthz HTTP/1.1\n" + h + "\n"}},
		{name: "folded", reqs: []string{get("/healthz", "X-A: 1\r\n 2\r\n")}},
		{name: "space before colon", reqs: []string{get("/healthz", "X-A : 1\r\n")}},
		{name: "big header", reqs: []string{get("/healthz", "X-Big: "+strings.Repeat("b", 20<<10)+"\r\n")}},
		{name: "too big", reqs: []string{get("/healthz", "X-Big: "+strings.Repeat("b", 40<<10)+"\r\n")}},
		// More than one read's worth: the loop answers what it read
		// whole and hands the rest over, after its answers. (Not get-tcp-ip:
		// a rate limit's Retry-After would depend on how long they take.)
		{name: "many pipelined", reqs: slices.Repeat([]string{get("/healthz"), get("/readyz")}, 1500)},
		{name: "xff", reqs: []string{get("/get-tcp-ip", "X-Forwarded-For: 203.0.113.7\r\n"), get("/get-tcp-ip", "X-Real-Ip: 192.0.2.44\r\n")}},
	}
	servers := []struct {
		name string
		snap *store.Snapshot
		cfg  func(*Config)
	}{
		{name: "hash", snap: f.hash},
		// (Not all-down: its picks rotate in the snapshot both servers
		// share; TestFastPathMatchesEcho covers it.)
		{name: "none", snap: f.none},
		{name: "no snapshot"},
		{name: "rate limited", snap: f.hash, cfg: func(c *Config) { c.RateLimit, c.RateBurst = 0.001, 3 }},
		{name: "trusted proxy", snap: f.hash, cfg: func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }},
	}
	for _, sv := range servers {
		t.Run(sv.name, func(t *testing.T) {
			for _, tc := range cases {
				addrs := make([]string, 2)
				for i, loop := range []bool{false, true} {
					cfg := Config{Name: "replica-1", MaxHeaderBytes: 16 << 10, ReadHeaderTimeout: time.Second, EventLoop: loop}
					if sv.cfg != nil {
						sv.cfg(&cfg)
					}
					s, err := New(cfg, sourceOf(sv.snap), fakeLeader(false), nil, prometheus.NewRegistry(), nil)
					if err != nil {
						t.Fatal(err)
					}
					addrs[i], _ = serveListeners(t, s, false)
				}
				want := tc.want
				if want == 0 {
					want = len(tc.reqs)
				}
				fast := rawExchange(t, addrs[0], tc.reqs, want)
				loop := rawExchange(t, addrs[1], tc.reqs, want)
				if len(fast) == 0 {
					t.Errorf("%s: fasthttp gave no answer", tc.name)
				}
				if i, ok := firstDiff(fast, loop); !ok {
					t.Errorf("%s: answer %d of %d (loop: %d) differs:\nfasthttp %q\nloop     %q", tc.name, i, len(fast), len(loop), at(fast, i), at(loop, i))
				}
			}
		})
	}
}

// TestLoopTimeouts checks the timeouts the event loops enforce themselves
// against fasthttp's: a new connection that sends nothing, an idle
// keep-alive connection.
func TestLoopTimeouts(t *testing.T) {
	f := newFixtures(t)
	for _, loop := range []bool{false, true} {
		s, err := New(Config{Name: "t", ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, EventLoop: loop},
			sourceOf(f.hash), fakeLeader(false), nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		addr, _ := serveListeners(t, s, false)
		wait := func(reqs string) (string, time.Duration) {
			b, took := rawRoundTrip(t, addr, reqs, false)
			return maskDate(b), took
		}
		silent, took := wait("")
		if !strings.HasPrefix(silent, "HTTP/1.1 408 Request Timeout\r\n") || took < 150*time.Millisecond || took > 2*time.Second {
			t.Errorf("loop %v: silent connection: %q after %v; want 408 after ~200ms", loop, silent, took)
		}
		idle, took := wait("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if !strings.HasPrefix(idle, "HTTP/1.1 200 OK\r\n") || strings.Count(idle, "HTTP/1.1") != 1 || took < 250*time.Millisecond || took > 2*time.Second {
			t.Errorf("loop %v: idle connection: %q after %v; want one answer, closed after ~300ms", loop, idle, took)
		}
		t.Logf("loop %v: silent %q", loop, silent)
	}
}

// TestLoopShutdown checks the lame duck and the drain on keep-alive
// connections of the event loops, one answered by a loop and one handed
// over to fasthttp: both are served during the lame-duck window (/readyz
// failing), and closed when Run returns.
func TestLoopShutdown(t *testing.T) {
	f := newFixtures(t)
	const lameDuck = 300 * time.Millisecond
	s, err := New(Config{Name: "r", LameDuck: lameDuck, ShutdownTimeout: time.Second, EventLoop: true}, sourceOf(f.one), fakeLeader(false), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		return c, bufio.NewReader(c)
	}
	get := func(c net.Conn, br *bufio.Reader, path string) (int, string) {
		t.Helper()
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	hot, hotR := dial()
	defer hot.Close()
	handed, handedR := dial()
	defer handed.Close()
	if code, _ := get(hot, hotR, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d", code)
	}
	if code, _ := get(handed, handedR, "/v1/status"); code != http.StatusOK {
		t.Fatalf("/v1/status = %d", code)
	}

	cancel()
	time.Sleep(lameDuck / 3)
	for _, c := range []struct {
		c  net.Conn
		br *bufio.Reader
	}{{hot, hotR}, {handed, handedR}} {
		if code, body := get(c.c, c.br, "/readyz"); code != http.StatusServiceUnavailable || body != "shutting down\n" {
			t.Errorf("/readyz in the lame-duck window = %d %q; want 503", code, body)
		}
		if code, body := get(c.c, c.br, "/get-tcp-ip"); code != http.StatusOK || body != `{"id":"only","addr":"10.0.0.1:9000"}` {
			t.Errorf("/get-tcp-ip in the lame-duck window = %d %q; want 200", code, body)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	for name, br := range map[string]*bufio.Reader{"loop": hotR, "handed over": handedR} {
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("%s connection after Run returned: read = %v; want EOF", name, err)
		}
	}
}

// firstDiff returns the index of the first answer a and b differ in.
func firstDiff(a, b []string) (int, bool) {
	for i := range max(len(a), len(b)) {
		if at(a, i) != at(b, i) || i >= len(a) || i >= len(b) {
			return i, false
		}
	}
	return 0, true
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}
