package prober

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"sync"
	"time"

	"github.com/tcpdispatch/tcpdispatch"
)

// statusClient pulls status documents over kept-alive HTTP/1.1 connections
// that cost nothing but their socket while idle.
//
// net/http's Transport keeps two goroutines on every kept-alive connection
// (its read and write loops); at 2,000 servers with a status URL that was
// 4,000 goroutines and most of the leader's 34 MB of stacks (make scale,
// 2026-12-02). Here an idle connection is a socket in a map: the pull's
// own goroutine (the probe's) writes the request and reads the answer with
// net/http's response parser (http.ReadResponse, so chunked bodies,
// Connection: close and HTTP/1.0 are read as before) through a pooled
// buffer, and puts the connection back when the server keeps it open and
// nothing is left unread. A request on a kept connection that fails
// before any byte of an answer (the server closed it while idle) is sent
// again once on a new connection, as net/http does.
//
// URLs other than plain http:// (https) go to the fallback client.
type statusClient struct {
	dialer   *net.Dialer
	fallback *http.Client
	maxIdle  int
	idleFor  time.Duration // an idle connection older than this is closed
	now      func() time.Time

	mu   sync.Mutex
	idle map[string]idleStatusConn // by host:port, one each
	// sweeper closes connections idle past idleFor; armed while any is
	// kept, so that a replica that stops pulling (a follower after
	// answering a second opinion) does not keep them.
	sweeper *time.Timer

	bufs sync.Pool // *bufio.Reader of statusBufSize
}

type idleStatusConn struct {
	conn  net.Conn
	since time.Time
}

// maxStatusResponse bounds the bytes read for one answer, status line,
// headers and chunk framing included: a server that sends more is an
// error, its connection closed (net/http's MaxResponseHeaderBytes, 16 KiB,
// plus the document).
const maxStatusResponse = 16<<10 + tcpdispatch.MaxStatusBytes + 1<<10

func newStatusClient(dialer *net.Dialer, fallback *http.Client, maxIdle int, idleFor time.Duration) *statusClient {
	return &statusClient{dialer: dialer, fallback: fallback, maxIdle: maxIdle, idleFor: idleFor,
		now: time.Now, idle: make(map[string]idleStatusConn)}
}

// limitedConn reads from a connection at most n bytes per answer.
type limitedConn struct {
	conn net.Conn
	n    int64
}

var errStatusTooLarge = errors.New("answer larger than the status limit")

func (l *limitedConn) Read(b []byte) (int, error) {
	if l.n <= 0 {
		return 0, errStatusTooLarge
	}
	if int64(len(b)) > l.n {
		b = b[:l.n]
	}
	n, err := l.conn.Read(b)
	l.n -= int64(n)
	return n, err
}

// get GETs u, which must be http://, before deadline and returns the
// answer's code and body (at most tcpdispatch.MaxStatusBytes+1 bytes).
func (c *statusClient) get(ctx context.Context, u *neturl.URL, deadline time.Time) (int, []byte, error) {
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUser-Agent: tcpdispatch-prober\r\nAccept: application/json\r\n\r\n"
	for attempt := 0; ; attempt++ {
		conn, reused := c.take(host)
		if conn == nil {
			var err error
			dctx, cancel := context.WithDeadline(ctx, deadline)
			conn, err = c.dialer.DialContext(dctx, "tcp", host)
			cancel()
			if err != nil {
				return 0, nil, err
			}
		}
		code, body, keep, answered, err := c.exchange(ctx, conn, req, deadline)
		if err == nil && keep {
			c.put(host, conn)
		} else {
			conn.Close()
		}
		if err != nil && reused && !answered && attempt == 0 && ctx.Err() == nil && time.Now().Before(deadline) {
			continue // the server closed the kept connection meanwhile
		}
		return code, body, err
	}
}

// exchange writes req on conn and reads one answer. answered reports
// whether any byte of an answer came back; keep whether conn may carry
// the next request.
func (c *statusClient) exchange(ctx context.Context, conn net.Conn, req string, deadline time.Time) (code int, body []byte, keep, answered bool, err error) {
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(conn, req); err != nil {
		return 0, nil, false, false, err
	}
	lc := &limitedConn{conn: conn, n: maxStatusResponse}
	br, _ := c.bufs.Get().(*bufio.Reader)
	if br == nil {
		br = bufio.NewReaderSize(lc, statusBufSize)
	} else {
		br.Reset(lc)
	}
	defer func() {
		br.Reset(nil)
		c.bufs.Put(br)
	}()
	if _, err := br.Peek(1); err != nil {
		return 0, nil, false, false, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, nil, false, true, err
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, tcpdispatch.MaxStatusBytes+1))
	if err != nil {
		return 0, nil, false, true, fmt.Errorf("read body: %w", err)
	}
	// Reusable only when the whole answer was read (ReadAll reached the
	// body's end, not the limit) and nothing follows it.
	keep = len(body) <= tcpdispatch.MaxStatusBytes && !resp.Close && br.Buffered() == 0
	return resp.StatusCode, body, keep, true, nil
}

// take returns the idle connection to host, if any, and whether it was one.
func (c *statusClient) take(host string) (net.Conn, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ic, ok := c.idle[host]
	if !ok {
		return nil, false
	}
	delete(c.idle, host)
	if c.now().Sub(ic.since) > c.idleFor {
		ic.conn.Close()
		return nil, false
	}
	return ic.conn, true
}

// put keeps conn for the next pull from host, unless the pool is full or
// already holds one for host.
func (c *statusClient) put(host string, conn net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.idle[host]; dup || len(c.idle) >= c.maxIdle {
		conn.Close()
		return
	}
	c.idle[host] = idleStatusConn{conn: conn, since: c.now()}
	if c.sweeper == nil {
		c.sweeper = time.AfterFunc(c.idleFor, c.sweep)
	}
}

// sweep closes the connections idle for longer than idleFor: those of
// servers removed or no longer pulled. It runs from the sweeper.
func (c *statusClient) sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for host, ic := range c.idle {
		if now.Sub(ic.since) > c.idleFor {
			ic.conn.Close()
			delete(c.idle, host)
		}
	}
	if c.sweeper == nil {
		return // closeIdle ran meanwhile
	}
	if len(c.idle) > 0 {
		c.sweeper.Reset(c.idleFor)
	} else {
		c.sweeper = nil
	}
}

// closeIdle closes every idle connection (the term ended).
func (c *statusClient) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for host, ic := range c.idle {
		ic.conn.Close()
		delete(c.idle, host)
	}
	if c.sweeper != nil {
		c.sweeper.Stop()
		c.sweeper = nil
	}
	c.fallback.CloseIdleConnections()
}

// idleConns is how many connections are kept.
func (c *statusClient) idleConns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.idle)
}
