package api

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/internal/testpki"
)

// serveListeners runs s.Serve on new loopback listeners (admin too when
// withAdmin) and returns their addresses; the test's cleanup cancels it
// and checks it returned nil.
func serveListeners(t *testing.T, s *Server, withAdmin bool) (public, admin string) {
	t.Helper()
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	ls := Listeners{Public: listen()}
	public = ls.Public.Addr().String()
	if withAdmin {
		ls.Admin = listen()
		admin = ls.Admin.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ls) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve = %v; want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return public, admin
}

// status GETs url with c and returns the status code.
func status(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func plainClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}
}

// TestAdminListener checks which routes each listener serves, with and
// without an admin listener.
func TestAdminListener(t *testing.T) {
	f := newFixtures(t)
	reg := prometheus.NewRegistry()
	s, err := New(Config{Name: "r"}, sourceOf(f.one), fakeLeader(false), nil, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	pub, adm := serveListeners(t, s, true)
	c := plainClient(t)
	for _, tc := range []struct {
		base, path string
		want       int
	}{
		{pub, "/get-tcp-ip", 200}, {pub, "/healthz", 200}, {pub, "/readyz", 200},
		{pub, "/v1/servers", 404}, {pub, "/v1/status", 404}, {pub, "/metrics", 404}, {pub, "/debug/pprof/", 404},
		{adm, "/v1/servers", 200}, {adm, "/v1/status", 200}, {adm, "/metrics", 200},
		{adm, "/debug/pprof/", 200}, {adm, "/debug/pprof/cmdline", 200}, {adm, "/debug/pprof/goroutine?debug=1", 200},
		{adm, "/get-tcp-ip", 404},
	} {
		if got := status(t, c, "http://"+tc.base+tc.path); got != tc.want {
			t.Errorf("GET %s on %s = %d; want %d", tc.path, map[string]string{pub: "public", adm: "admin"}[tc.base], got, tc.want)
		}
	}

	// Without an admin listener every route stays on the public one, and
	// profiles are not served at all.
	s2, err := New(Config{Name: "r"}, sourceOf(f.one), fakeLeader(false), nil, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	pub2, _ := serveListeners(t, s2, false)
	for path, want := range map[string]int{"/get-tcp-ip": 200, "/v1/servers": 200, "/v1/status": 200, "/metrics": 200, "/healthz": 200, "/readyz": 200, "/debug/pprof/": 404} {
		if got := status(t, c, "http://"+pub2+path); got != want {
			t.Errorf("single listener: GET %s = %d; want %d", path, got, want)
		}
	}
}

// tlsConn is a kept-open HTTPS connection sending requests by hand, so a
// test knows exactly which connection a request used.
type tlsConn struct {
	conn *tls.Conn
	br   *bufio.Reader
}

func dialTLS(t *testing.T, addr string, cfg *tls.Config) (*tlsConn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	return &tlsConn{conn: conn, br: bufio.NewReader(conn)}, nil
}

// get sends GET path on the connection and returns the status code.
func (c *tlsConn) get(path string) (int, error) {
	_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: dispatch.test\r\n\r\n", path); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func (c *tlsConn) serial() string {
	return c.conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestHTTPSRotation serves both listeners over HTTPS, the admin one with
// mTLS, and rotates both certificates mid-run: connections opened before
// keep working with the old certificate, new handshakes get the new one,
// and a broken file keeps the last good certificate, logged and counted.
func TestHTTPSRotation(t *testing.T) {
	f := newFixtures(t)
	dir := t.TempDir()
	ca := testpki.New(t)
	pubCert, pubKey := ca.Leaf(t, "dispatch.test", "127.0.0.1").WriteFiles(t, dir, "public")
	admCert, admKey := ca.Leaf(t, "admin.test", "127.0.0.1").WriteFiles(t, dir, "admin")
	clientCA := testpki.New(t)
	clientCAFile := clientCA.WriteCA(t, dir, "client-ca")
	reg := prometheus.NewRegistry()
	cfg := Config{Name: "r", Security: Security{
		PublicTLS:         TLSFiles{CertFile: pubCert, KeyFile: pubKey},
		AdminTLS:          TLSFiles{CertFile: admCert, KeyFile: admKey, ClientCAFile: clientCAFile},
		CertCheckInterval: 10 * time.Millisecond,
	}}
	s, err := New(cfg, sourceOf(f.one), fakeLeader(false), nil, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	pub, adm := serveListeners(t, s, true)

	pubTLS := &tls.Config{RootCAs: ca.Pool, ServerName: "dispatch.test"}
	operator := clientCA.Leaf(t, "operator")
	admTLS := &tls.Config{RootCAs: ca.Pool, ServerName: "admin.test", Certificates: []tls.Certificate{operator.TLS}}

	oldPub, err := dialTLS(t, pub, pubTLS)
	if err != nil {
		t.Fatalf("HTTPS to the public listener: %v", err)
	}
	oldAdm, err := dialTLS(t, adm, admTLS)
	if err != nil {
		t.Fatalf("HTTPS with a client certificate to the admin listener: %v", err)
	}
	if code, err := oldPub.get("/get-tcp-ip"); err != nil || code != 200 {
		t.Fatalf("get-tcp-ip over HTTPS = %d, %v", code, err)
	}
	if code, err := oldAdm.get("/v1/status"); err != nil || code != 200 {
		t.Fatalf("/v1/status over mTLS = %d, %v", code, err)
	}
	// mTLS: no client certificate, or one from another CA, is refused.
	for name, certs := range map[string][]tls.Certificate{"none": nil, "other CA": {testpki.New(t).Leaf(t, "intruder").TLS}} {
		c, err := dialTLS(t, adm, &tls.Config{RootCAs: ca.Pool, ServerName: "admin.test", Certificates: certs})
		if err == nil {
			// TLS 1.3 reports the client certificate's rejection on the
			// first read.
			_, err = c.get("/v1/status")
		}
		if err == nil {
			t.Errorf("admin listener accepted a client with certificate %s", name)
		}
	}

	oldPubSerial, oldAdmSerial := oldPub.serial(), oldAdm.serial()
	// Rotate both, to certificates of a new CA: a client trusting only
	// the new CA can only handshake once the new certificate is served.
	ca2 := testpki.New(t)
	ca2.Leaf(t, "dispatch.test", "127.0.0.1").WriteFiles(t, dir, "public")
	ca2.Leaf(t, "admin.test", "127.0.0.1").WriteFiles(t, dir, "admin")
	newPubTLS := &tls.Config{RootCAs: ca2.Pool, ServerName: "dispatch.test"}
	newAdmTLS := &tls.Config{RootCAs: ca2.Pool, ServerName: "admin.test", Certificates: []tls.Certificate{operator.TLS}}
	waitHandshake := func(addr string, cfg *tls.Config, old string) *tlsConn {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := dialTLS(t, addr, cfg)
			if err == nil && c.serial() != old {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("no handshake with the rotated certificate on %s: %v", addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	newPub := waitHandshake(pub, newPubTLS, oldPubSerial)
	newAdm := waitHandshake(adm, newAdmTLS, oldAdmSerial)
	for name, c := range map[string]*tlsConn{"old public": oldPub, "old admin": oldAdm, "new public": newPub, "new admin": newAdm} {
		path := "/v1/status"
		if strings.HasSuffix(name, "public") {
			path = "/get-tcp-ip"
		}
		if code, err := c.get(path); err != nil || code != 200 {
			t.Errorf("%s connection after the rotation: %d, %v; want 200", name, code, err)
		}
	}
	if oldPub.serial() != oldPubSerial {
		t.Error("the connection open before the rotation changed certificate")
	}
	if got := testutil.ToFloat64(s.secMetrics().tlsReloads.WithLabelValues("public", "ok")); got < 1 {
		t.Errorf("public reloads counted ok = %v; want >= 1", got)
	}

	// A broken new file keeps the last good certificate.
	if err := os.WriteFile(filepath.Join(dir, "public.crt"), []byte("-----BEGIN CERTIFICATE-----\nbroken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(s.secMetrics().tlsReloads.WithLabelValues("public", "error")) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("a broken certificate file was not counted")
		}
		c, err := dialTLS(t, pub, newPubTLS)
		if err != nil {
			t.Fatalf("handshake after a broken certificate file: %v; want the last good certificate", err)
		}
		c.conn.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if code, err := newPub.get("/get-tcp-ip"); err != nil || code != 200 {
		t.Errorf("after a broken file: %d, %v", code, err)
	}
}

// TestRealIP checks which address hashing and rate limiting use.
func TestRealIP(t *testing.T) {
	s := &Server{}
	s.sec.trusted = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		realIP       string
		want         string
		malformed    bool // parse errors may allocate
	}{
		{name: "untrusted peer: headers ignored", remote: "192.0.2.9:4000", xff: []string{"203.0.113.7"}, realIP: "198.51.100.1", want: "192.0.2.9"},
		{name: "trusted peer, no header", remote: "10.1.1.1:4000", want: "10.1.1.1"},
		{name: "trusted peer, one hop", remote: "10.1.1.1:4000", xff: []string{"203.0.113.7"}, want: "203.0.113.7"},
		{name: "rightmost untrusted hop wins over a forged left one", remote: "10.1.1.1:4000", xff: []string{"6.6.6.6, 203.0.113.7, 10.2.2.2"}, want: "203.0.113.7"},
		{name: "several header lines", remote: "127.0.0.1:4000", xff: []string{"6.6.6.6", "203.0.113.7,10.3.3.3"}, want: "203.0.113.7"},
		{name: "hop with a port", remote: "10.1.1.1:4000", xff: []string{"203.0.113.7:5555"}, want: "203.0.113.7"},
		{name: "IPv6 hop", remote: "10.1.1.1:4000", xff: []string{"2001:db8::7"}, want: "2001:db8::7"},
		{name: "all hops trusted: leftmost", remote: "10.1.1.1:4000", xff: []string{"10.9.9.9, 10.8.8.8"}, want: "10.9.9.9"},
		{name: "garbage hop stops the walk", remote: "10.1.1.1:4000", xff: []string{"203.0.113.7, nonsense, 10.2.2.2"}, want: "10.2.2.2", malformed: true},
		{name: "X-Real-IP from a trusted peer", remote: "10.1.1.1:4000", realIP: "198.51.100.1", want: "198.51.100.1"},
		{name: "bad X-Real-IP", remote: "10.1.1.1:4000", realIP: "bogus", want: "10.1.1.1", malformed: true},
		{name: "X-Forwarded-For wins over X-Real-IP", remote: "10.1.1.1:4000", xff: []string{"203.0.113.7"}, realIP: "198.51.100.1", want: "203.0.113.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "/get-tcp-ip", nil)
			req.RemoteAddr = tc.remote
			req.Header["X-Forwarded-For"] = tc.xff
			if tc.realIP != "" {
				req.Header.Set("X-Real-IP", tc.realIP)
			}
			if got := s.realIP(req); got != tc.want {
				t.Errorf("realIP = %q; want %q", got, tc.want)
			}
			if n := testing.AllocsPerRun(100, func() { s.realIP(req) }); n != 0 && !tc.malformed {
				t.Errorf("realIP allocates %v times", n)
			}
		})
	}
	// No trusted proxies: the peer, whatever the headers.
	s.sec.trusted = nil
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr, req.Header["X-Forwarded-For"] = "127.0.0.1:1", []string{"203.0.113.7"}
	if got := s.realIP(req); got != "127.0.0.1" {
		t.Errorf("without trusted proxies realIP = %q; want the peer", got)
	}
}

// limited reports whether the rate limiter has an entry for ip: the
// address a request was attributed to.
func (s *Server) limited(ip string) bool {
	a := netip.MustParseAddr(ip)
	sh := &s.sec.limiter.shards[shardOf(a)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.entries[a] != nil
}

func (s *Server) secMetrics() *securityMetrics {
	if s.sec.publicCert != nil {
		return s.sec.publicCert.m
	}
	return s.sec.limiter.m
}

// rawGet sends one HTTP/1.1 GET on conn after prefix (a PROXY header) and
// returns the status code, or an error when the server closed the
// connection.
func rawGet(conn net.Conn, prefix []byte, path string) (int, error) {
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(append(prefix, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"...)); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestTrustedProxies checks, through the rate limiter's table, which
// client address a request is attributed to: X-Forwarded-For and PROXY
// protocol v1 and v2 headers count from a trusted peer (127.0.0.2) only.
func TestTrustedProxies(t *testing.T) {
	f := newFixtures(t)
	cfg := Config{Name: "r", Security: Security{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		ProxyProtocol:  true,
		RateLimit:      1000, RateBurst: 1000,
	}}
	s, err := New(cfg, sourceOf(f.hash), fakeLeader(false), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := serveListeners(t, s, false)
	v2 := func(src string) []byte {
		h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP(src), Port: 5555}, &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 80})
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v1 := func(src string) []byte {
		return []byte(fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 5555 80\r\n", src))
	}
	const pick = "/get-tcp-ip"
	// Trusted peer, PROXY v1 and v2: the header's source is the client.
	for name, hdr := range map[string][]byte{"v1": v1("203.0.113.1"), "v2": v2("203.0.113.2")} {
		code, err := rawGet(dialFrom(t, "127.0.0.2", pub), hdr, pick)
		if err != nil || code != 200 {
			t.Fatalf("PROXY %s from a trusted peer: %d, %v", name, code, err)
		}
	}
	for _, ip := range []string{"203.0.113.1", "203.0.113.2"} {
		if !s.limited(ip) {
			t.Errorf("request with a PROXY header naming %s was not attributed to it", ip)
		}
	}
	if s.limited("127.0.0.2") {
		t.Error("a request through the trusted proxy was attributed to the proxy")
	}
	// Trusted peer without a header (the balancer's own health check).
	if code, err := rawGet(dialFrom(t, "127.0.0.2", pub), nil, pick); err != nil || code != 200 {
		t.Fatalf("trusted peer without a PROXY header: %d, %v", code, err)
	}
	if !s.limited("127.0.0.2") {
		t.Error("a headerless request from the trusted peer was not attributed to it")
	}
	// Untrusted peer: a PROXY header is refused (the connection closed),
	// a plain request is its own.
	for name, hdr := range map[string][]byte{"v1": v1("203.0.113.66"), "v2": v2("203.0.113.67")} {
		if code, err := rawGet(dialFrom(t, "127.0.0.1", pub), hdr, pick); err == nil {
			t.Errorf("PROXY %s from an untrusted peer answered %d; want the connection closed", name, code)
		}
	}
	if s.limited("203.0.113.66") || s.limited("203.0.113.67") {
		t.Error("a PROXY header from an untrusted peer was believed")
	}
	// X-Forwarded-For: believed from the trusted peer, not from another.
	conn := dialFrom(t, "127.0.0.1", pub)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.9\r\nConnection: close\r\n\r\n", pick)
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("plain request from an untrusted peer: %v", err)
	}
	if s.limited("198.51.100.9") || !s.limited("127.0.0.1") {
		t.Error("X-Forwarded-For from an untrusted peer was believed")
	}
	conn = dialFrom(t, "127.0.0.2", pub)
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6, 198.51.100.10\r\nConnection: close\r\n\r\n", pick)
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("forwarded request from the trusted peer: %v", err)
	}
	if !s.limited("198.51.100.10") || s.limited("6.6.6.6") {
		t.Error("X-Forwarded-For from the trusted peer: want the rightmost untrusted hop")
	}

	// Hashing follows the believed address: the pick for a forwarded
	// client is the pick for ?key=<client>.
	h := s.Handler()
	for _, ip := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "2001:db8::5"} {
		req, _ := http.NewRequest(http.MethodGet, pick, nil)
		req.RemoteAddr = "127.0.0.2:999"
		req.Header.Set("X-Forwarded-For", ip)
		got := get(t, h, pick+"?key="+ip, "192.0.2.1:1").Body.String()
		rec := serveReq(h, req)
		if rec.Body.String() != got {
			t.Errorf("forwarded client %s got %s; hashing its address gives %s", ip, rec.Body, got)
		}
	}
}

// TestProxyProtocolNeedsTrustedProxies checks the configuration rule.
func TestProxyProtocolNeedsTrustedProxies(t *testing.T) {
	if _, err := New(Config{Security: Security{ProxyProtocol: true}}, sourceOf(nil), fakeLeader(false), nil, nil, nil); err == nil {
		t.Fatal("New accepted the PROXY protocol without trusted proxies")
	}
	for _, c := range []Security{
		{PublicTLS: TLSFiles{CertFile: "x"}},
		{AdminTLS: TLSFiles{KeyFile: "x"}},
		{AdminTLS: TLSFiles{ClientCAFile: "x"}},
		{RateLimit: -1},
	} {
		if err := (Config{Security: c}).Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil; want an error", c)
		}
	}
}

// TestRateLimit checks 429 with Retry-After per address.
func TestRateLimit(t *testing.T) {
	f := newFixtures(t)
	reg := prometheus.NewRegistry()
	cfg := Config{Name: "r", Security: Security{RateLimit: 0.5, RateBurst: 2,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	s, err := New(cfg, sourceOf(f.one), fakeLeader(false), nil, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	for i := range 2 {
		if rec := get(t, h, "/get-tcp-ip", "192.0.2.1:1000"); rec.Code != 200 {
			t.Fatalf("request %d within the burst = %d", i, rec.Code)
		}
	}
	rec := get(t, h, "/get-tcp-ip", "192.0.2.1:1001")
	wantJSONError(t, rec, http.StatusTooManyRequests, "rate limit")
	if ra := rec.Header().Get("Retry-After"); ra != "2" {
		t.Errorf("Retry-After = %q; want 2 (one token at 0.5/s)", ra)
	}
	// Another address, and a client behind a trusted proxy, have their own
	// buckets; the proxy's own bucket is not spent by its clients.
	if rec := get(t, h, "/get-tcp-ip", "192.0.2.2:1000"); rec.Code != 200 {
		t.Errorf("another address = %d; want 200", rec.Code)
	}
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodGet, "/get-tcp-ip", nil)
		req.RemoteAddr = "10.0.0.1:1"
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i))
		if rec := serveReq(h, req); rec.Code != 200 {
			t.Errorf("forwarded client %d = %d; want 200", i, rec.Code)
		}
	}
	// IPv6 addresses of one /64 share a bucket.
	get(t, h, "/get-tcp-ip", "[2001:db8::1]:1")
	get(t, h, "/get-tcp-ip", "[2001:db8::2]:1")
	if rec := get(t, h, "/get-tcp-ip", "[2001:db8::3]:1"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("third request from one /64 = %d; want 429", rec.Code)
	}
	if got := testutil.ToFloat64(s.sec.limited); got != 2 {
		t.Errorf("rate_limited outcome = %v; want 2", got)
	}
	// Health checks are never limited.
	for range 5 {
		if rec := get(t, h, "/healthz", "192.0.2.1:1"); rec.Code != 200 {
			t.Fatalf("/healthz from a limited address = %d", rec.Code)
		}
	}
}

// TestRateLimitBounded floods the limiter with distinct addresses: the
// table stays within its size, evictions are counted, and an address seen
// recently keeps its bucket.
func TestRateLimitBounded(t *testing.T) {
	m, err := newSecurityMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	const size = 1024
	lt := newLimiterTable(1, 1, size, clock, m)
	if _, ok := lt.allow("192.0.2.1"); !ok {
		t.Fatal("first request refused")
	}
	const flood = 200_000
	for i := range flood {
		now = now.Add(time.Microsecond)
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		lt.allow(a.String())
		if i%100 == 0 {
			// The busy address stays recent.
			if _, ok := lt.allow("192.0.2.1"); ok {
				t.Fatalf("after %d addresses the busy address got a fresh bucket", i)
			}
		}
	}
	if n := lt.size(); n > size {
		t.Errorf("table holds %d addresses; want <= %d", n, size)
	}
	ev := testutil.ToFloat64(m.rateEvictions)
	if ev < flood-size {
		t.Errorf("evictions = %v; want >= %d", ev, flood-size)
	}
	if got := testutil.ToFloat64(m.rateAddresses); got > size {
		t.Errorf("addresses gauge = %v; want <= %d", got, size)
	}
}

// TestServersRedactsStatusURL checks that /v1/servers hides status-url
// secrets.
func TestServersRedactsStatusURL(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	snap := snapshotOf(t, cli, "/redact/", []kv{
		{"servers/a/addr", "10.0.0.1:9000"},
		{"servers/a/status-url", "http://10.0.0.1:9100/status?token=s3cr3t"},
		{"servers/b/addr", "10.0.0.2:9000"},
		{"servers/b/status-url", "http://user:pw@10.0.0.2:9100/status"},
		{"servers/c/addr", "169.254.169.254:80"},
	})
	s := newTestServer(t, sourceOf(snap), fakeLeader(false), nil)
	rec := get(t, s.Handler(), "/v1/servers", "")
	body := rec.Body.String()
	for _, secret := range []string{"s3cr3t", "pw@", "user:"} {
		if strings.Contains(body, secret) {
			t.Errorf("/v1/servers shows %q: %s", secret, body)
		}
	}
	var v struct {
		Servers []struct {
			ID        string   `json:"id"`
			StatusURL string   `json:"status_url"`
			Eligible  bool     `json:"eligible"`
			Errors    []string `json:"errors"`
		} `json:"servers"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Servers) != 3 || v.Servers[0].StatusURL != "http://10.0.0.1:9100/status?redacted" {
		t.Errorf("servers = %+v; want a's status_url redacted", v.Servers)
	}
	if c := v.Servers[2]; c.Eligible || len(c.Errors) == 0 || !strings.Contains(strings.Join(c.Errors, ";"), "not allowed") {
		t.Errorf("link-local server c = %+v; want rejected by the default target policy", c)
	}
}

// serveReq serves req and returns the recording.
func serveReq(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}
