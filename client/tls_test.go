package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/internal/testpki"
)

// startTLSDispatcher serves get-tcp-ip over HTTPS with a certificate for
// hosts only, answering srv.
func startTLSDispatcher(t *testing.T, ca *testpki.CA, srv Server, hosts ...string) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"id": srv.ID, "addr": srv.Addr})
	}))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, hosts...).TLS}}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// TestHTTPSVerifiesDispatcherName: the SDK resolves the Dispatcher name
// and connects to the IP, and the certificate must be valid for the name
// (it has no IP in it).
func TestHTTPSVerifiesDispatcherName(t *testing.T) {
	ca := testpki.New(t)
	echo := startEcho(t, "tcp1")
	ts := startTLSDispatcher(t, ca, Server{ID: "tcp1", Addr: echo.addr}, "dispatch.test")
	_, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	res := &fakeResolver{t: t, name: "dispatch.test", addrs: []string{"127.0.0.1"}}

	for name, cfg := range map[string]Config{
		"TLSConfig": {TLSConfig: &tls.Config{RootCAs: ca.Pool}},
		// A caller's own client: its transport is copied and its
		// TLSClientConfig used.
		"HTTPClient": {HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.Dispatcher, cfg.Scheme, cfg.Resolver = "dispatch.test:"+port, "https", res
			c := newTestClient(t, cfg)
			conn, ans, err := c.Dial(context.Background())
			if err != nil {
				t.Fatalf("Dial over HTTPS with a name certificate: %v", err)
			}
			conn.Close()
			if ans.Source != SourceDispatcher || ans.Dispatcher != "127.0.0.1:"+port {
				t.Errorf("answer = %+v; want from the dispatcher at the resolved IP", ans)
			}
		})
	}

	// A certificate for another name is refused, and said so.
	other := startTLSDispatcher(t, ca, Server{ID: "tcp1", Addr: echo.addr}, "other.test", "127.0.0.1")
	_, oport, _ := net.SplitHostPort(other.Listener.Addr().String())
	var dispatchErr error
	c := newTestClient(t, Config{Dispatcher: "dispatch.test:" + oport, Scheme: "https", Resolver: res,
		TLSConfig: &tls.Config{RootCAs: ca.Pool},
		Hooks:     Hooks{OnDispatch: func(ev DispatchEvent) { dispatchErr = ev.Err }}})
	if _, _, err := c.Dial(context.Background()); !errors.Is(err, ErrNoServer) {
		t.Fatalf("Dial to a dispatcher with another name's certificate = %v; want ErrNoServer", err)
	}
	var ve *tls.CertificateVerificationError
	if !errors.As(dispatchErr, &ve) || !strings.Contains(dispatchErr.Error(), `"dispatch.test"`) {
		t.Errorf("dispatch error = %v; want a verification error for dispatch.test", dispatchErr)
	}

	// A Bootstrap IP is verified against the IP itself, as before.
	c = newTestClient(t, Config{Bootstrap: []string{other.Listener.Addr().String()}, Scheme: "https",
		TLSConfig: &tls.Config{RootCAs: ca.Pool}})
	conn, _, err := c.Dial(context.Background())
	if err != nil {
		t.Fatalf("Dial to a Bootstrap IP whose certificate names the IP: %v", err)
	}
	conn.Close()
}

// TestRetryAfter: a 429 with Retry-After demotes the replica and makes
// the Reconnector wait at least that long.
func TestRetryAfter(t *testing.T) {
	limited := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) {
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":"rate limit"}`))
	})
	c := newTestClient(t, Config{Bootstrap: []string{limited.addr()}})
	_, _, err := c.Dial(context.Background())
	if d, ok := RetryAfter(err); !ok || d != 7*time.Second {
		t.Fatalf("RetryAfter(%v) = %v, %v; want 7s", err, d, ok)
	}
	c.mu.Lock()
	until := c.demoted[limited.addr()]
	c.mu.Unlock()
	if time.Until(until) < 6*time.Second {
		t.Errorf("429 demoted the replica until %v; want at least Retry-After", until)
	}

	r, err := NewReconnector(c, ReconnectConfig{BackoffBase: 10 * time.Millisecond, BackoffCap: 20 * time.Millisecond,
		MinDelay: time.Millisecond, ResetAfter: time.Second,
		OnRetry: nil})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var waits []time.Duration
	r.cfg.OnRetry = func(ev RetryEvent) {
		waits = append(waits, ev.Wait)
		cancel()
	}
	if err := r.Run(ctx, func(context.Context, net.Conn, Answer) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if len(waits) != 1 || waits[0] < 7*time.Second {
		t.Errorf("Reconnector waits = %v; want one wait of at least 7s", waits)
	}

	for v, want := range map[string]time.Duration{"": 0, "3": 3 * time.Second, "-1": 0, "junk": 0, "99999999": maxRetryAfter,
		time.Now().Add(time.Minute).UTC().Format(http.TimeFormat): time.Minute} {
		if got := parseRetryAfter(v, time.Now()); got < want-2*time.Second || got > want {
			t.Errorf("parseRetryAfter(%q) = %v; want %v", v, got, want)
		}
	}
}
