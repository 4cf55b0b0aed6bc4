//go:build linux

package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The public listener's event loops (Config.EventLoop). fasthttp serves a
// connection from a goroutine that reads again as soon as it has answered;
// the next request has not arrived yet, so that read fails (EAGAIN), the
// goroutine parks, and the request costs a second read when the poller
// wakes it: about two reads per request where nginx does one
// (docs/BENCHMARKS.md). An event loop reads a connection only when epoll
// says it is readable, so a request costs one read, one write and a share
// of one epoll_wait.
//
// The loops answer only GET and HEAD of the three public routes, in the
// plainest form (parseHot). The first request a loop cannot answer makes
// it hand the connection, with the bytes it read and any answer not yet
// sent, to the fasthttp server, which serves it from then on as it would
// have from the start: other routes and methods, bodies, malformed or
// oversized requests, a request split over several reads (a slow client).
// So the loops reject nothing themselves, and every answer they do not
// give is the one the listener gave without them.
//
// Each loop is one goroutine with its own epoll set, GOMAXPROCS of them.
// A loop never blocks in a system call: it asks epoll for ready events
// without waiting, and when there are none it parks in Go's poller on the
// epoll descriptor itself, so that the scheduler, timers and the rest of
// the process run as usual. Connections are accepted by the listener as
// before (peerListener: the retry on EMFILE); each accepted socket is
// duplicated out of Go's poller and given to a loop round robin.
//
// Timeouts, checked by a sweep every tick: a new connection that sends
// nothing within ReadHeaderTimeout gets fasthttp's 408 and is closed; a
// keep-alive connection idle for IdleTimeout is closed; an answer the
// client does not take within WriteTimeout closes the connection. Reading
// a request's headers is bounded by fasthttp, since a request not
// complete in one read is handed over.

// epollServer serves the public listener with event loops and fs. Serve
// and ShutdownWithContext are fasthttp.Server's, so that Server.Serve
// drives either.
type epollServer struct {
	s     *Server
	fs    publicServer
	queue *connQueue
	// maxHeader bounds the request line and headers a loop reads
	// (MaxHeaderBytes); a longer request is fasthttp's to answer 431.
	maxHeader int
	tick      time.Duration

	closing  atomic.Bool // Shutdown began: answer with Connection: close, drain
	kill     atomic.Bool // Shutdown's deadline passed: close everything now
	accepted atomic.Bool // Serve's accept loop returned: no more connections come

	mu        sync.Mutex
	loops     []*loop
	loopsDone chan struct{} // closed by Serve when every loop returned
}

// publicServer is what Server.Serve needs of the public listener's server.
type publicServer interface {
	Serve(net.Listener) error
	ShutdownWithContext(context.Context) error
}

// newEpollServer returns the event-loop server of the public listener;
// fs serves every connection a loop hands over.
func (s *Server) newEpollServer(fs publicServer) publicServer {
	tick := min(s.cfg.ReadHeaderTimeout, s.cfg.IdleTimeout, s.cfg.WriteTimeout) / 8
	return &epollServer{s: s, fs: fs, queue: newConnQueue(), maxHeader: s.cfg.MaxHeaderBytes,
		tick: min(max(tick, 5*time.Millisecond), 250*time.Millisecond), loopsDone: make(chan struct{})}
}

// Serve accepts on ln until it fails or is closed, and returns when every
// loop has returned (after ShutdownWithContext, or at once on a listener
// error) and fasthttp has stopped accepting handed-over connections.
func (e *epollServer) Serve(ln net.Listener) error {
	var wg sync.WaitGroup
	defer close(e.loopsDone)
	loops := make([]*loop, runtime.GOMAXPROCS(0))
	for i := range loops {
		l, err := newLoop(e)
		if err != nil {
			for _, l := range loops[:i] {
				l.closeAll()
			}
			e.queue.Close()
			return err
		}
		loops[i] = l
	}
	e.mu.Lock()
	e.loops = loops
	e.mu.Unlock()
	for _, l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run()
		}()
	}
	fsDone := make(chan error, 1)
	go func() { fsDone <- e.fs.Serve(e.queue) }()

	err := e.accept(ln, loops)
	// A listener error (not a shutdown) drains the loops as a shutdown does.
	e.accepted.Store(true)
	e.closing.Store(true)
	e.wakeAll()
	wg.Wait()
	e.queue.Close()
	if ferr := <-fsDone; ferr != nil && !errors.Is(ferr, net.ErrClosed) {
		err = errors.Join(err, ferr)
	}
	if errors.Is(err, net.ErrClosed) && e.closing.Load() {
		return nil // fasthttp's Serve returns nil on a closed listener
	}
	return err
}

// accept gives each connection of ln to a loop, or to fasthttp when it is
// not a TCP socket a loop can take.
func (e *epollServer) accept(ln net.Listener, loops []*loop) error {
	for i := 0; ; i++ {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		if !loops[i%len(loops)].adopt(c) {
			e.queue.push(c)
		}
	}
}

// ShutdownWithContext stops the loops and fasthttp: loops close their idle
// connections at once and the others once their answer is sent, answering
// with Connection: close meanwhile; when ctx ends first, they close every
// connection. The caller closes the listener first.
func (e *epollServer) ShutdownWithContext(ctx context.Context) error {
	e.closing.Store(true)
	e.wakeAll()
	var err error
	select {
	case <-e.loopsDone:
	case <-ctx.Done():
		err = ctx.Err()
		e.kill.Store(true)
		e.wakeAll()
		<-e.loopsDone
	}
	if ferr := e.fs.ShutdownWithContext(ctx); ferr != nil && !errors.Is(ferr, net.ErrClosed) {
		return errors.Join(err, ferr)
	}
	return err
}

func (e *epollServer) wakeAll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range e.loops {
		l.wake()
	}
}

// econn is one connection of a loop.
type econn struct {
	fd int
	ip string // client address, as peerConn formats it
	// pending is the part of the last answers the socket did not take;
	// while there is some, the loop waits for the socket to be writable
	// and reads nothing.
	pending    []byte
	deadline   time.Time // see the sweep
	used       bool      // a request was read: the idle timeout applies
	closeAfter bool      // close once pending is sent
}

// loop is one event loop: its goroutine alone touches its connections.
type loop struct {
	e          *epollServer
	epfd, evfd int
	// file is epfd in Go's poller: the loop parks on it (wait).
	file     *os.File
	raw      syscall.RawConn
	deadline time.Time // file's read deadline

	// mu guards the inbox and evfd, which adopt and wake use from other
	// goroutines.
	mu     sync.Mutex
	inbox  []*econn // adopted, not yet registered
	woken  bool     // evfd was written and not yet read
	closed bool     // closeAll ran: evfd is closed

	conns     []*econn // by descriptor
	count     int
	events    [128]unix.EpollEvent
	in, out   []byte
	req       hotRequest
	date      dateLine
	now       time.Time
	nextSweep time.Time
	draining  bool
}

func newLoop(e *epollServer) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	l := &loop{e: e, epfd: epfd, evfd: evfd, in: make([]byte, 64<<10), out: make([]byte, 0, 64<<10)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}); err != nil {
		l.closeAll()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	// Non-blocking, so that os.NewFile puts it in Go's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		l.closeAll()
		return nil, os.NewSyscallError("fcntl", err)
	}
	l.file = os.NewFile(uintptr(epfd), "epoll")
	if l.raw, err = l.file.SyscallConn(); err != nil {
		l.closeAll()
		return nil, err
	}
	return l, nil
}

// closeAll closes the loop's descriptors and connections.
func (l *loop) closeAll() {
	for _, c := range l.conns {
		if c != nil {
			unix.Close(c.fd)
		}
	}
	l.conns, l.count = nil, 0
	l.mu.Lock()
	for _, c := range l.inbox {
		unix.Close(c.fd)
	}
	l.inbox, l.closed = nil, true
	unix.Close(l.evfd)
	l.mu.Unlock()
	if l.file != nil {
		l.file.Close() // closes epfd
	} else {
		unix.Close(l.epfd)
	}
}

// adopt takes c from Go's poller into the loop. It reports false, leaving
// c as it was, when c is not a TCP connection.
func (l *loop) adopt(c net.Conn) bool {
	pc, ok := c.(*peerConn)
	if !ok {
		return false
	}
	tc, ok := pc.Conn.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	fd := -1
	if cerr := rc.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); cerr != nil || err != nil {
		return false
	}
	// Without the PROXY protocol (the loops' condition) the client
	// address is the socket's: formatting it here reads nothing.
	ip := pc.clientIP()
	// The duplicate shares the socket (and its O_NONBLOCK, TCP_NODELAY and
	// keep-alive); closing the original takes it out of Go's poller.
	tc.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		// The loop returned (a shutdown's deadline passed).
		unix.Close(fd)
		return true
	}
	l.inbox = append(l.inbox, &econn{fd: fd, ip: ip})
	l.wakeLocked()
	return true
}

// wake makes the loop look at its inbox and the server's state.
func (l *loop) wake() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.wakeLocked()
}

func (l *loop) wakeLocked() {
	if l.woken || l.closed {
		return
	}
	l.woken = true
	var one = [8]byte{1}
	_, _ = unix.Write(l.evfd, one[:])
}

func (l *loop) run() {
	defer l.closeAll()
	l.now = time.Now()
	l.nextSweep = l.now.Add(l.e.tick)
	for {
		n := l.wait()
		l.now = time.Now()
		for i := range n {
			ev := &l.events[i]
			fd := int(ev.Fd)
			if fd == l.evfd {
				l.takeInbox()
				continue
			}
			if fd < len(l.conns) && l.conns[fd] != nil {
				l.event(l.conns[fd], ev.Events)
			}
		}
		if l.e.kill.Load() {
			return
		}
		if l.e.closing.Load() && !l.draining {
			l.drain()
		}
		if !l.now.Before(l.nextSweep) {
			l.sweep()
		}
		if l.draining && l.count == 0 && l.e.accepted.Load() {
			return
		}
	}
}

// wait returns how many events are ready, parking in Go's poller when
// none is, until one is or the next sweep is due.
func (l *loop) wait() int {
	n, err := l.poll()
	if n > 0 || (err != nil && err != unix.EINTR) {
		return max(n, 0)
	}
	if !l.deadline.Equal(l.nextSweep) {
		_ = l.file.SetReadDeadline(l.nextSweep)
		l.deadline = l.nextSweep
	}
	n = 0
	// Read calls the function, and while it returns false, waits for the
	// epoll descriptor to be readable; a deadline ends the wait.
	_ = l.raw.Read(func(uintptr) bool {
		m, err := l.poll()
		if err != nil && err != unix.EINTR {
			return true
		}
		n = max(m, 0)
		return n > 0
	})
	return n
}

// takeInbox registers the adopted connections.
func (l *loop) takeInbox() {
	var buf [8]byte
	l.mu.Lock()
	_, _ = unix.Read(l.evfd, buf[:])
	in := l.inbox
	l.inbox, l.woken = nil, false
	l.mu.Unlock()
	for _, c := range in {
		if l.draining {
			unix.Close(c.fd)
			continue
		}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)}); err != nil {
			l.e.s.log.WithError(err).Debug("public listener: epoll_ctl add")
			unix.Close(c.fd)
			continue
		}
		for c.fd >= len(l.conns) {
			l.conns = append(l.conns, make([]*econn, max(64, len(l.conns)))...)
		}
		l.conns[c.fd] = c
		l.count++
		// fasthttp's ReadTimeout of a new connection's first request.
		c.deadline = l.now.Add(l.e.s.cfg.ReadHeaderTimeout)
	}
}

// event handles what epoll reported for c.
func (l *loop) event(c *econn, ev uint32) {
	if len(c.pending) > 0 {
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			l.flush(c)
		}
		return
	}
	n, err := rawRead(c.fd, l.in)
	switch {
	case n > 0:
		l.serve(c, l.in[:n])
	case err == unix.EAGAIN || err == unix.EINTR:
	default: // end of stream or a reset
		l.closeConn(c)
	}
}

// serve answers the requests in data, a read's worth of c's bytes, and
// hands c over at the first one it cannot answer.
func (l *loop) serve(c *econn, data []byte) {
	c.used = true
	out := l.out[:0]
	for len(data) > 0 {
		n, ok := parseHot(data, l.e.maxHeader, &l.req)
		if !ok {
			l.out = out
			l.handOver(c, data, out)
			return
		}
		out = l.answer(c, &l.req, out)
		data = data[n:]
		if l.req.close || l.draining {
			// fasthttp reads nothing after a Connection: close request.
			c.closeAfter = true
			break
		}
	}
	l.out = out
	l.write(c, out)
}

// answer appends the answer to req.
func (l *loop) answer(c *econn, req *hotRequest, out []byte) []byte {
	var r reply
	l.decide(c, req, &r)
	return r.appendHTTP(out, l.date.at(l.now), req.head, req.http10, req.close || l.draining)
}

// decide is fast.go's fastHandler and recoverFast for the loop's routes.
func (l *loop) decide(c *econn, req *hotRequest, r *reply) {
	s := l.e.s
	defer func() {
		if p := recover(); p != nil {
			s.log.WithField("panic", p).WithField("route", req.route).Error("handler panicked")
			*r = reply{}
			r.setError(http.StatusInternalServerError, "internal error")
		}
	}()
	switch req.route {
	case routeGetTCPIP:
		start := time.Now()
		s.lookup(req.head, view(req.query), l.clientIP(c, req), r)
		s.metrics.observeSince(start)
	case routeHealthz:
		healthy(r)
	case routeReadyz:
		s.ready(r)
	}
}

// clientIP is fastIP for a loop's request.
func (l *loop) clientIP(c *econn, req *hotRequest) string {
	s := l.e.s
	if len(s.sec.trusted) == 0 {
		return c.ip
	}
	if a, err := netip.ParseAddr(c.ip); err != nil || !s.sec.trusts(a) {
		return c.ip
	}
	var xbuf [maxHotForwarded]string
	xff := xbuf[:0]
	for _, v := range req.xff[:req.nxff] {
		xff = append(xff, view(v))
	}
	var xri []string
	if req.xri != nil {
		xri = []string{view(req.xri)}
	}
	return s.forwardedIP(c.ip, xff, xri)
}

// write sends out on c; what the socket does not take waits for it to be
// writable.
func (l *loop) write(c *econn, out []byte) {
	n, err := rawWrite(c.fd, out)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		n = 0
	case err != nil:
		l.closeConn(c)
		return
	}
	if n < len(out) {
		c.pending = append(c.pending[:0], out[n:]...)
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(c.fd)}); err != nil {
			l.closeConn(c)
			return
		}
		c.deadline = l.now.Add(l.e.s.cfg.WriteTimeout)
		return
	}
	l.sent(c)
}

// flush sends more of c's pending answer.
func (l *loop) flush(c *econn) {
	n, err := rawWrite(c.fd, c.pending)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return
	case err != nil:
		l.closeConn(c)
		return
	}
	if c.pending = c.pending[n:]; len(c.pending) > 0 {
		return
	}
	c.pending = nil
	if !c.closeAfter {
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)}); err != nil {
			l.closeConn(c)
			return
		}
	}
	l.sent(c)
}

// sent is called when every answer of c is sent.
func (l *loop) sent(c *econn) {
	if c.closeAfter {
		l.closeConn(c)
		return
	}
	c.deadline = l.now.Add(l.e.s.cfg.IdleTimeout)
}

// forget takes c out of the loop, leaving its descriptor open.
func (l *loop) forget(c *econn) {
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	l.conns[c.fd] = nil
	l.count--
}

func (l *loop) closeConn(c *econn) {
	l.forget(c)
	unix.Close(c.fd)
}

// handOver gives c to fasthttp with in, the bytes read and not answered,
// and out, answers not yet sent.
func (l *loop) handOver(c *econn, in, out []byte) {
	l.forget(c)
	f := os.NewFile(uintptr(c.fd), "")
	nc, err := net.FileConn(f) // a duplicate, in Go's poller
	f.Close()
	if err != nil {
		l.e.s.log.WithError(err).Debug("public listener: hand over a connection")
		return
	}
	hc := &handedConn{Conn: nc, in: append([]byte(nil), in...), out: append([]byte(nil), out...), writeTimeout: l.e.s.cfg.WriteTimeout}
	l.e.queue.push(&peerConn{Conn: hc, ip: c.ip})
}

// drain begins the shutdown: idle connections are closed, the others once
// their answer is sent.
func (l *loop) drain() {
	l.draining = true
	l.takeInbox()
	for _, c := range l.conns {
		if c == nil {
			continue
		}
		if len(c.pending) > 0 {
			c.closeAfter = true
			continue
		}
		l.closeConn(c)
	}
}

// sweep enforces the timeouts.
func (l *loop) sweep() {
	l.nextSweep = l.now.Add(l.e.tick)
	for _, c := range l.conns {
		if c == nil || l.now.Before(c.deadline) {
			continue
		}
		if !c.used && len(c.pending) == 0 {
			// As fasthttp answers a new connection that sent nothing in
			// its ReadTimeout (fastError).
			var r reply
			r.setError(http.StatusRequestTimeout, "request not read in time")
			_, _ = unix.Write(c.fd, r.appendHTTP(l.out[:0], l.date.at(l.now), false, false, true))
		}
		l.closeConn(c)
	}
}

// handedConn is a connection a loop handed over: Read returns the bytes
// the loop read first, and the answers the loop had not sent are sent
// before anything else is read or written.
type handedConn struct {
	net.Conn
	in, out      []byte
	writeTimeout time.Duration
}

func (c *handedConn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	_, err := c.Conn.Write(c.out)
	c.out = nil
	_ = c.Conn.SetWriteDeadline(time.Time{})
	return err
}

func (c *handedConn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	if len(c.in) > 0 {
		n := copy(p, c.in)
		c.in = c.in[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *handedConn) Write(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// connQueue is the listener fasthttp serves handed-over connections from.
// push must not be called after Close.
type connQueue struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn, 64), done: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

// Close ends Accept and closes the connections not yet accepted.
func (q *connQueue) Close() error {
	q.once.Do(func() {
		close(q.done)
		for {
			select {
			case c := <-q.ch:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (q *connQueue) Addr() net.Addr { return queueAddr{} }

type queueAddr struct{}

func (queueAddr) Network() string { return "loop" }
func (queueAddr) String() string  { return "handed over by the event loops" }

// The loop's system calls never block (non-blocking sockets, epoll_wait
// with no timeout), so they are made raw: without telling the scheduler,
// which would otherwise hand the processor to another thread when one of
// them takes a few microseconds, and make the loop wait for it back.

// poll returns the events ready now.
func (l *loop) poll() (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawRead(fd int, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
