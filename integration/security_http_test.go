package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/client"
	"github.com/tcpdispatch/tcpdispatch/internal/testpki"
)

// httpsConn is one kept-open TLS connection to a replica, optionally
// opened with a PROXY protocol v1 header, on which requests are sent by
// hand so the test knows which connection each one used.
type httpsConn struct {
	conn *tls.Conn
	br   *bufio.Reader
}

func dialHTTPS(t *testing.T, from, addr, proxyFor string, cfg *tls.Config) (*httpsConn, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	if proxyFor != "" {
		_, port, _ := net.SplitHostPort(addr)
		if _, err := fmt.Fprintf(raw, "PROXY TCP4 %s 127.0.0.1 40000 %s\r\n", proxyFor, port); err != nil {
			return nil, err
		}
	}
	conn := tls.Client(raw, cfg)
	if err := conn.Handshake(); err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return &httpsConn{conn: conn, br: bufio.NewReader(conn)}, nil
}

// get sends GET path and returns the status code and body.
func (c *httpsConn) get(path string) (int, string, error) {
	_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: dispatch.test\r\n\r\n", path); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestHTTPSecurity runs one real replica with HTTPS on the public and the
// admin listener (mTLS on admin), a trusted proxy speaking the PROXY
// protocol, a rate limit and a target policy, and checks them from
// outside: routes split between listeners, a certificate rotation
// mid-run, attribution of clients behind the proxy, 429 with
// Retry-After, rejected targets, the SDK verifying the name certificate
// while dialling the IP, and no status-url secret in the log.
func TestHTTPSecurity(t *testing.T) {
	pki := t.TempDir()
	ca := testpki.New(t)
	pubCert, pubKey := ca.Leaf(t, "dispatch.test").WriteFiles(t, pki, "public")
	admCert, admKey := ca.Leaf(t, "admin.test").WriteFiles(t, pki, "admin")
	opsCA := testpki.New(t)
	opsCAFile := opsCA.WriteCA(t, pki, "ops-ca")
	operator := opsCA.Leaf(t, "operator")
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])

	c := startCluster(t, clusterOpts{replicas: 1, extra: []string{
		"--listen-admin", adminAddr,
		"--http-cert-file", pubCert, "--http-key-file", pubKey,
		"--admin-cert-file", admCert, "--admin-key-file", admKey, "--admin-client-ca", opsCAFile,
		"--trusted-proxies", "127.0.0.2/32", "--http-proxy-protocol",
		"--rate-limit", "1", "--rate-burst", "3",
		"--allowed-targets", "127.0.0.0/8",
	}})
	r := c.replicas[0]
	pub := strings.TrimPrefix(r.http, "http://")
	pubTLS := &tls.Config{RootCAs: ca.Pool, ServerName: "dispatch.test"}
	admTLS := &tls.Config{RootCAs: ca.Pool, ServerName: "admin.test", Certificates: []tls.Certificate{operator.TLS}}
	adminClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: admTLS, DisableKeepAlives: true}}

	t1 := c.startTCPServer("t1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const secret = "S3CRETTOKEN"
	for k, v := range map[string]string{
		"servers/t1/addr":        t1.addr,
		"servers/tok/addr":       "127.0.0.1:3",
		"servers/tok/status-url": "http://127.0.0.1:1/status?token=" + secret,
		"servers/meta/addr":      "169.254.169.254:80",
		"servers/out/addr":       "192.0.2.1:9000",
		"servers/cred/addr":      "127.0.0.1:2",
	} {
		if _, err := c.cli.Put(ctx, c.prefix+k, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.cli.Put(ctx, c.prefix+"servers/cred/status-url", "http://ops:"+secret+"@127.0.0.1:1/status"); err != nil {
		t.Fatal(err)
	}

	// Clients behind the trusted proxy (PROXY protocol, then TLS) are told
	// apart: each gets its own bucket.
	roots := pubTLS // what clients trust: the new CA after the rotation
	clientConn := func(ip string) *httpsConn {
		conn, err := dialHTTPS(t, "127.0.0.2", pub, ip, roots)
		if err != nil {
			t.Fatalf("HTTPS through the trusted proxy for %s: %v", ip, err)
		}
		return conn
	}
	var first string
	eventually(t, 30*time.Second, "t1 served over HTTPS", func() error {
		code, body, err := clientConn("203.0.113.100").get("/get-tcp-ip")
		if err != nil || code != 200 {
			return fmt.Errorf("%d %s %v", code, body, err)
		}
		if !strings.Contains(body, t1.addr) {
			// Before t1's first verdict no server is eligible, and the
			// all-down fallback answers from every allowed addr.
			return fmt.Errorf("not yet t1: %s", body)
		}
		first = body
		return nil
	})
	if !strings.Contains(first, t1.addr) {
		t.Fatalf("get-tcp-ip = %s; want t1 (the only allowed, healthy server)", first)
	}

	// Routes: operator routes on the admin listener only, behind mTLS.
	if code, _, err := clientConn("203.0.113.101").get("/v1/servers"); err != nil || code != http.StatusNotFound {
		t.Errorf("/v1/servers on the public listener = %d, %v; want 404", code, err)
	}
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "admin.test"}}}
	if resp, err := noCert.Get("https://" + adminAddr + "/v1/status"); err == nil {
		resp.Body.Close()
		t.Errorf("admin listener answered %d without a client certificate", resp.StatusCode)
	}
	var view struct {
		Servers []struct {
			ID        string   `json:"id"`
			StatusURL string   `json:"status_url"`
			Eligible  bool     `json:"eligible"`
			Errors    []string `json:"errors"`
		} `json:"servers"`
	}
	resp, err := adminClient.Get("https://" + adminAddr + "/v1/servers")
	if err != nil {
		t.Fatalf("/v1/servers over mTLS: %v", err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(raw, &view); err != nil {
		t.Fatalf("/v1/servers: %v: %s", err, raw)
	}
	if strings.Contains(string(raw), secret) {
		t.Errorf("/v1/servers shows the status-url secret: %s", raw)
	}
	for _, s := range view.Servers {
		switch s.ID {
		case "meta", "out":
			if s.Eligible || !strings.Contains(strings.Join(s.Errors, ";"), "not allowed") {
				t.Errorf("server %s outside --allowed-targets: %+v; want rejected", s.ID, s)
			}
		case "tok":
			if s.StatusURL != "http://127.0.0.1:1/status?redacted" {
				t.Errorf("tok status_url = %q; want redacted", s.StatusURL)
			}
		}
	}
	for _, path := range []string{"/metrics", "/debug/pprof/"} {
		resp, err := adminClient.Get("https://" + adminAddr + path)
		if err != nil {
			t.Fatalf("%s over mTLS: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s on the admin listener = %d; want 200", path, resp.StatusCode)
		}
	}

	// The SDK resolves dispatch.test to 127.0.0.1, dials the IP and
	// verifies the certificate (which names dispatch.test only).
	_, port, _ := net.SplitHostPort(pub)
	sdk, err := client.New(client.Config{Dispatcher: "dispatch.test:" + port, Scheme: "https",
		Resolver: staticResolver{"dispatch.test": {"127.0.0.1"}}, TLSConfig: &tls.Config{RootCAs: ca.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	conn, ans, err := sdk.Dial(ctx)
	if err != nil {
		t.Fatalf("SDK Dial over HTTPS: %v", err)
	}
	conn.Close()
	if ans.Source != client.SourceDispatcher || ans.ID != "t1" {
		t.Errorf("SDK answer = %+v; want t1 from the dispatcher", ans)
	}

	// Rotation mid-run, on both listeners, to certificates of a new CA.
	oldPub := clientConn("203.0.113.102")
	oldAdm, err := dialHTTPS(t, "", adminAddr, "", admTLS)
	if err != nil {
		t.Fatal(err)
	}
	ca2 := testpki.New(t)
	ca2.Leaf(t, "dispatch.test").WriteFiles(t, pki, "public")
	ca2.Leaf(t, "admin.test").WriteFiles(t, pki, "admin")
	newPubTLS := &tls.Config{RootCAs: ca2.Pool, ServerName: "dispatch.test"}
	newAdmTLS := &tls.Config{RootCAs: ca2.Pool, ServerName: "admin.test", Certificates: []tls.Certificate{operator.TLS}}
	eventually(t, 10*time.Second, "new handshakes see the rotated certificates", func() error {
		if _, err := dialHTTPS(t, "127.0.0.2", pub, "203.0.113.103", newPubTLS); err != nil {
			return err
		}
		_, err := dialHTTPS(t, "", adminAddr, "", newAdmTLS)
		return err
	})
	roots = newPubTLS
	for path, conn := range map[string]*httpsConn{"/healthz": oldPub, "/v1/status": oldAdm} {
		if code, _, err := conn.get(path); err != nil || code != 200 {
			t.Errorf("%s on a connection opened before the rotation: %d, %v; want it still served", path, code, err)
		}
	}

	// Rate limit: one client behind the proxy exhausts its burst and gets
	// 429 with Retry-After; another client behind the same proxy does not.
	limitedConn := clientConn("203.0.113.200")
	var code int
	var body string
	for range 4 {
		if code, body, err = limitedConn.get("/get-tcp-ip"); err != nil {
			t.Fatal(err)
		}
	}
	if code != http.StatusTooManyRequests || !strings.Contains(body, "rate limit") {
		t.Errorf("4th request at --rate-limit 1 --rate-burst 3 = %d %s; want 429", code, body)
	}
	if code, body, err := clientConn("203.0.113.201").get("/get-tcp-ip"); err != nil || code != 200 {
		t.Errorf("another client behind the proxy = %d %s %v; want 200", code, body, err)
	}
	// An untrusted peer's PROXY header is refused.
	if c, err := dialHTTPS(t, "127.0.0.1", pub, "203.0.113.202", newPubTLS); err == nil {
		if code, _, err := c.get("/get-tcp-ip"); err == nil {
			t.Errorf("a PROXY header from an untrusted peer was served: %d", code)
		}
	}

	// Let the leader try the status pulls, then look for the secret in
	// the replica's whole log.
	time.Sleep(2 * time.Second)
	logb, err := os.ReadFile(filepath.Join(c.dir, "d1.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(logb), secret) {
		for _, line := range strings.Split(string(logb), "\n") {
			if strings.Contains(line, secret) {
				t.Errorf("the replica log holds the status-url secret: %s", line)
				break
			}
		}
	}
}

// staticResolver resolves fixed names.
type staticResolver map[string][]string

func (r staticResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("staticResolver: no %q", host)
}
