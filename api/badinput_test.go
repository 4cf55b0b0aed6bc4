package api

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// TestBadClients runs a real listener and checks that malformed queries,
// oversized headers and slowloris connections get clear answers or are cut
// off, while a well-behaved client is served throughout.
func TestBadClients(t *testing.T) {
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("event loop %v", loop), func(t *testing.T) { testBadClients(t, loop) })
	}
}

func testBadClients(t *testing.T, loop bool) {
	snap, err := store.NewSnapshot(1, balancer.WRR, []store.Server{
		{ID: "tcp1", Addr: "10.0.0.1:9000", Weight: 100, Healthy: true, State: "up", Eligible: true},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Name: "t", ReadHeaderTimeout: 300 * time.Millisecond, MaxHeaderBytes: 4 << 10, LameDuck: 1, EventLoop: loop},
		sourceOf(snap), fakeLeader(false), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := runPublic(t, srv)
	base := "http://" + addr
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()

	// Slowloris: connections that send a partial request line and dribble.
	var slow []net.Conn
	for range 20 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /get-tcp-ip HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		slow = append(slow, c)
	}
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()

	for _, tc := range []struct {
		name, query string
		code        int
	}{
		{"bad escape", "?key=%zz", http.StatusBadRequest},
		{"bad n", "?n=0", http.StatusBadRequest},
		{"bad format", "?format=xml", http.StatusBadRequest},
		{"bad exclude id", "?exclude=a%2Fb", http.StatusBadRequest},
		{"long key", "?key=" + strings.Repeat("k", 300), http.StatusBadRequest},
		{"noise", "?&&=&key&exclude=,,&x=%41", http.StatusOK},
	} {
		resp, err := client.Get(base + "/get-tcp-ip" + tc.query)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s: status %d %s, want %d", tc.name, resp.StatusCode, body, tc.code)
		}
		if tc.code == http.StatusBadRequest && !strings.Contains(string(body), `"error"`) {
			t.Errorf("%s: body %s carries no reason", tc.name, body)
		}
	}

	req, _ := http.NewRequest(http.MethodGet, base+"/get-tcp-ip", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 32<<10))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized header: status %d, want 431", resp.StatusCode)
	}

	// The well-behaved client is served while the slow ones hang on.
	for range 50 {
		resp, err := client.Get(base + "/get-tcp-ip")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d while slow clients are connected", resp.StatusCode)
		}
	}
	// The slow connections are cut once ReadHeaderTimeout passes.
	for _, c := range slow[:3] {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err := bufio.NewReader(c).ReadString('\n')
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("a slowloris connection was still open 3s after ReadHeaderTimeout")
		}
	}
}

// TestHeadHealthChecks checks that health checks by HEAD succeed, as load
// balancers send them.
func TestHeadHealthChecks(t *testing.T) {
	snap, err := store.NewSnapshot(1, balancer.WRR, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Name: "t"}, sourceOf(snap), fakeLeader(false), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		req, _ := http.NewRequest(http.MethodHead, path, nil)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("HEAD %s = %d, want 200", path, rec.Code)
		}
	}
}
