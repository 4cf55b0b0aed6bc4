package api

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// The public listener is served by fasthttp, not net/http: get-tcp-ip is
// one tiny GET, and net/http's per-request allocations (request, header
// maps, bufio writers, a goroutine per connection's response path) cost
// about half of nginx's throughput on it (docs/BENCHMARKS.md). fasthttp
// reuses its request and response objects per connection, so the lookup
// path allocates nothing.
//
// Only GET and HEAD of /get-tcp-ip, /healthz and /readyz take the fast
// path; every other request on the public listener (the operator routes
// when there is no admin listener, the internal POST routes, 404 and 405
// answers) is handed to echo through fasthttpadaptor, unchanged. Both
// servers write the same reply (lookup.go).
//
// The limits map to fasthttp as follows:
//
//   - MaxHeaderBytes: the read buffer is MaxHeaderBytes + 4 KiB, the
//     slack net/http allows; a request line and headers that do not fit
//     get 431.
//   - ReadHeaderTimeout: fasthttp's ReadTimeout, armed when a connection
//     opens and at the first byte of each keep-alive request, so a client
//     that dribbles its headers is cut off (slowloris) with 408.
//   - ReadTimeout: once the headers are in, the body gets ReadTimeout
//     more (HeaderReceived); bodies are capped at fasthttp's 4 MiB.
//   - WriteTimeout and IdleTimeout: as in net/http.
//
// fasthttp formats the Date header in one goroutine per process, started
// with the first response and never stopped (the tests' leak checks
// ignore it).

// fastServer returns the fasthttp server of the public listener; fallback
// answers every request that is not a public route.
func (s *Server) fastServer(fallback http.Handler) *fasthttp.Server {
	fb := fasthttpadaptor.NewFastHTTPHandler(fallback)
	bodyTimeout := s.cfg.ReadTimeout
	return &fasthttp.Server{
		Handler:      s.recoverFast(s.fastHandler(fb)),
		ErrorHandler: s.fastError,
		HeaderReceived: func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
			return fasthttp.RequestConfig{ReadTimeout: bodyTimeout}
		},
		ReadBufferSize:               s.cfg.MaxHeaderBytes + 4<<10,
		ReadTimeout:                  s.cfg.ReadHeaderTimeout,
		WriteTimeout:                 s.cfg.WriteTimeout,
		IdleTimeout:                  s.cfg.IdleTimeout,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		// A response in flight when shutdown begins tells its client to
		// reconnect (elsewhere) rather than reuse the connection.
		CloseOnShutdown: true,
		Logger:          fastLogger{s.log},
		// fasthttp's worker pool keeps a janitor goroutine that sleeps
		// this long between sweeps of idle workers and cannot be woken:
		// it outlives Serve by up to this much. Short, so that it is gone
		// soon after shutdown; sweeping often costs next to nothing, and
		// a keep-alive connection holds its worker while open.
		MaxIdleWorkerDuration: 100 * time.Millisecond,
	}
}

// fastHandler answers the public routes and hands the rest to fallback.
func (s *Server) fastHandler(fallback fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		head := ctx.IsHead()
		if !head && !ctx.IsGet() {
			fallback(ctx)
			return
		}
		var r reply
		// The raw path, as echo routes on: "/get-tcp-ip/" or an escaped
		// spelling is not the route.
		switch string(ctx.URI().PathOriginal()) {
		case "/get-tcp-ip":
			start := time.Now()
			s.lookup(head, view(ctx.URI().QueryString()), s.fastIP(ctx), &r)
			r.writeFast(ctx)
			s.metrics.observeSince(start)
			return
		case "/healthz":
			healthy(&r)
		case "/readyz":
			s.ready(&r)
		default:
			fallback(ctx)
			return
		}
		r.writeFast(ctx)
	}
}

// view returns b as a string without copying. The string aliases the
// request's buffer: lookup and what it calls only read it during the
// request, and nothing keeps it (the balancer hashes keys; answers are the
// snapshot's own bytes).
func view(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// Header names and values of the fast path, as bytes so that setting them
// allocates nothing.
var (
	hdrCacheControl = []byte("Cache-Control")
	hdrNoStore      = []byte("no-store")
	hdrDegraded     = []byte(DegradedHeader)
	hdrAllDown      = []byte(DegradedAllDown)
)

// writeFast writes r through fasthttp. The body is not copied: it is the
// snapshot's immutable answer or a slice made for this reply.
func (r *reply) writeFast(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(r.status)
	h := &ctx.Response.Header
	if r.contentType != nil {
		h.SetContentType(r.contentType[0])
	}
	if r.noStore {
		h.SetCanonical(hdrCacheControl, hdrNoStore)
	}
	if r.degraded {
		h.SetCanonical(hdrDegraded, hdrAllDown)
	}
	if r.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(r.retryAfter))
	}
	ctx.Response.SetBodyRaw(r.body)
}

// fastIP is realIP for a fasthttp request. The peer's address is
// formatted once per connection (peerConn); forwarding headers are read
// only from trusted proxies, and viewed in place (see view).
func (s *Server) fastIP(ctx *fasthttp.RequestCtx) string {
	ip := connIP(ctx.Conn())
	if len(s.sec.trusted) == 0 {
		return ip
	}
	if a, err := netip.ParseAddr(ip); err != nil || !s.sec.trusts(a) {
		return ip
	}
	var xbuf [4]string
	xff := xbuf[:0]
	for _, v := range ctx.Request.Header.PeekAll("X-Forwarded-For") {
		xff = append(xff, view(v))
	}
	var xri []string
	if v := ctx.Request.Header.Peek("X-Real-Ip"); v != nil {
		xri = []string{view(v)}
	}
	return s.forwardedIP(ip, xff, xri)
}

// connIP returns the client address of c, a *peerConn possibly under TLS.
func connIP(c net.Conn) string {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if pc, ok := c.(*peerConn); ok {
		return pc.clientIP()
	}
	return clientIP(c.RemoteAddr().String())
}

// peerListener wraps each accepted connection in a peerConn. Like
// net/http's Server, and unlike fasthttp, it waits and retries when accept
// fails for want of a local resource (out of file descriptors, buffers or
// memory, or a connection aborted before it was accepted): a replica out of
// descriptors keeps its listener and serves again once some are freed,
// instead of stopping.
type peerListener struct {
	net.Listener
	log *logrus.Entry
}

func (l peerListener) Accept() (net.Conn, error) {
	var wait time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return &peerConn{Conn: c}, nil
		}
		if !retryableAccept(err) {
			return nil, err
		}
		// net/http's schedule: 5ms, doubling, at most 1s.
		wait = min(max(2*wait, 5*time.Millisecond), time.Second)
		l.log.WithError(err).WithField("retry_in", wait).Warn("accept on the public listener failed; retrying")
		time.Sleep(wait)
	}
}

// retryableAccept reports whether an accept error is a local shortage that
// passes, not a closed or broken listener.
func retryableAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// peerConn remembers the client address of its connection, formatted as
// net/http's RemoteAddr host, so that requests on a keep-alive connection
// do not each format it. With the PROXY protocol, RemoteAddr reads the
// header: clientIP is first called by the connection's own goroutine,
// never in the accept loop.
type peerConn struct {
	net.Conn
	ip string // set on first use; a connection is served by one goroutine at a time
}

func (c *peerConn) clientIP() string {
	if c.ip == "" {
		c.ip = clientIP(c.RemoteAddr().String())
	}
	return c.ip
}

// fastError answers a request fasthttp could not read, in the JSON error
// shape of every other answer.
func (s *Server) fastError(ctx *fasthttp.RequestCtx, err error) {
	var (
		small *fasthttp.ErrSmallBuffer
		ne    net.Error
		r     reply
	)
	switch {
	case errors.As(err, &small):
		r.setError(http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("request header fields too large: limit %d bytes", s.cfg.MaxHeaderBytes))
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		r.setError(http.StatusRequestEntityTooLarge, "request body too large")
	case errors.As(err, &ne) && ne.Timeout():
		r.setError(http.StatusRequestTimeout, "request not read in time")
	default:
		s.badRequest.Inc()
		r.setError(http.StatusBadRequest, "malformed HTTP request")
	}
	s.log.WithError(err).Debug("public listener: unreadable request")
	r.writeFast(ctx)
	ctx.SetConnectionClose()
}

// recoverFast turns a panic of the fast path into a 500 and a log line,
// as recoverPanics does for echo.
func (s *Server) recoverFast(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.WithField("panic", p).WithField("path", string(ctx.Path())).Error("handler panicked")
				ctx.Response.Reset()
				var r reply
				r.setError(http.StatusInternalServerError, "internal error")
				r.writeFast(ctx)
			}
		}()
		next(ctx)
	}
}

// fastLogger routes fasthttp's log lines (connection errors, a client's
// doing) to logrus at debug level.
type fastLogger struct{ log *logrus.Entry }

func (l fastLogger) Printf(format string, args ...any) { l.log.Debugf(format, args...) }
