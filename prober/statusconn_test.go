package prober

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// countConns counts the connections srv accepted.
func countConns(srv *httptest.Server) *atomic.Int32 {
	var n atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	return &n
}

const okDoc = `{"conns": 7, "max_conns": 10, "load": 0.1}`

// TestStatusClientKeepsConnections: pulls reuse one connection per
// server, also for chunked answers; a connection the server closed while
// idle costs no failed pull; answers that end the connection are not
// reused.
func TestStatusClientKeepsConnections(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, okDoc) })
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, okDoc[:10])
		w.(http.Flusher).Flush()
		fmt.Fprint(w, okDoc[10:])
	})
	mux.HandleFunc("/close", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, okDoc)
	})
	srv := httptest.NewUnstartedServer(mux)
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	p, _ := newTestProber(t, testConfig(), keyspace.Layout{}, nil)
	defer p.http.closeIdle()
	pull := func(path string) {
		t.Helper()
		st, err := pullStatus(context.Background(), p.http, srv.URL+path, time.Second)
		if err != nil || st.Conns != 7 {
			t.Fatalf("%s: %+v %v", path, st, err)
		}
	}
	for range 5 {
		pull("/ok")
		pull("/chunked")
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 10 pulls; want 1, kept alive", n)
	}
	srv.CloseClientConnections() // the server ends idle connections
	pull("/ok")
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections after the server closed the first; want 2", n)
	}
	pull("/close")
	pull("/close")
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections after two Connection: close answers; want 3 (the first reuses the kept one)", n)
	}
	if n := p.http.idleConns(); n != 0 {
		t.Errorf("%d idle connections after Connection: close; want 0", n)
	}
}

// rawServer answers every request on a connection with answer, then
// closes the connection if closeAfter.
func rawServer(t *testing.T, answer string, closeAfter bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					break
				}
				req.Body.Close()
				if _, err := c.Write([]byte(answer)); err != nil || closeAfter {
					break
				}
			}
			c.Close()
		}
	}()
	return "http://" + ln.Addr().String()
}

func TestStatusClientAnswers(t *testing.T) {
	p, _ := newTestProber(t, testConfig(), keyspace.Layout{}, nil)
	defer p.http.closeIdle()
	tests := []struct {
		name, answer string
		closeAfter   bool
		errPart      string
	}{
		{"HTTP/1.0 until EOF", "HTTP/1.0 200 OK\r\n\r\n" + okDoc, true, ""},
		{"trailing bytes", "HTTP/1.1 200 OK\r\nContent-Length: " + fmt.Sprint(len(okDoc)) + "\r\n\r\n" + okDoc + "garbage", false, ""},
		{"endless headers", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("y", 1000)+"\r\n", 200) + "\r\n" + okDoc, true, "larger than"},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n", true, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := rawServer(t, tt.answer, tt.closeAfter)
			for range 2 {
				st, err := pullStatus(context.Background(), p.http, url+"/status", time.Second)
				if tt.errPart == "" && (err != nil || st.Conns != 7) {
					t.Fatalf("%+v %v", st, err)
				}
				if tt.errPart != "" && (err == nil || !strings.Contains(err.Error(), tt.errPart)) {
					t.Fatalf("error %v; want one containing %q", err, tt.errPart)
				}
			}
			if n := p.http.idleConns(); n != 0 {
				t.Errorf("%d connections kept; want none after an answer that cannot be followed", n)
			}
		})
	}
}

// TestStatusClientHTTPS: https status URLs are pulled by net/http.
func TestStatusClientHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, okDoc) }))
	defer srv.Close()
	p, _ := newTestProber(t, testConfig(), keyspace.Layout{}, nil)
	p.http.fallback = srv.Client()
	defer p.http.closeIdle()
	if st, err := pullStatus(context.Background(), p.http, srv.URL+"/status", time.Second); err != nil || st.Conns != 7 {
		t.Fatalf("%+v %v", st, err)
	}
}

// TestStatusClientSweep: connections idle longer than their bound are
// closed, by the sweeper's timer when nothing else runs (a follower that
// answered a second opinion and pulls nothing more).
func TestStatusClientSweep(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, okDoc) }))
	defer srv.Close()
	p, _ := newTestProber(t, testConfig(), keyspace.Layout{}, nil)
	defer p.http.closeIdle()
	p.http.idleFor = 50 * time.Millisecond
	if _, err := pullStatus(context.Background(), p.http, srv.URL+"/status", time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.http.idleConns(); n != 1 {
		t.Fatalf("%d idle after a pull; want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.http.idleConns() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("an idle connection outlived its bound by 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A pull after the sweep keeps a connection, and a new sweeper is armed.
	if _, err := pullStatus(context.Background(), p.http, srv.URL+"/status", time.Second); err != nil {
		t.Fatal(err)
	}
	for p.http.idleConns() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the second idle connection outlived its bound")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
