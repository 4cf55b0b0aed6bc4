package prober

import (
	"container/heap"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// Connect probes without a goroutine each (issue 11). A probe of a
// blackholed server waits its whole timeout in connect; with net.Dialer
// every such probe held a goroutine parked in the dial (about 10 KB of
// stack and 2 KB of dial state each): at 3,000 blackholed servers, a 1 s
// interval and a 500 ms timeout, ~1,500 of them at any moment, 15 MB of
// stacks on the leader. The connector instead opens a non-blocking socket,
// starts the connect and leaves the socket to one epoll instance; one
// goroutine collects the outcomes and the timeouts. A probe is then a few
// system calls and a small record, whatever its outcome.
//
// Only IP literals go through the connector; an addr with a host name is
// resolved and dialed by net.Dialer on a goroutine, as before.

// connectDone receives a connect's outcome: nil when the connection was
// established (and closed at once), else an error in net.Dialer's form
// (*net.OpError wrapping the errno, or os.ErrDeadlineExceeded on timeout).
type connectDone func(err error, elapsed time.Duration)

// pendingConnect is one connect in progress.
type pendingConnect struct {
	fd       int
	addr     netip.AddrPort
	started  time.Time
	deadline time.Time
	index    int  // in the deadline heap
	timedOut bool // its deadline passed first
	done     connectDone
	// keep hands the connected socket to done's caller (see open)
	// instead of closing it.
	keep   bool
	opened func(fd int, err error)
}

// connector runs connect probes on one epoll instance.
type connector struct {
	epfd int
	file *os.File // epfd, waited on through Go's poller (see linkPoller)
	raw  syscall.RawConn
	// control vets the address before any packet is sent (the target
	// policy), as net.Dialer's Control does.
	control func(network, address string, c syscall.RawConn) error

	mu      sync.Mutex
	stopped bool
	pending map[int]*pendingConnect // by fd
	byDue   deadlines
	armed   time.Time // the read deadline set on file; zero: none
}

// newConnector creates the epoll instance.
func newConnector(control func(network, address string, c syscall.RawConn) error) (*connector, error) {
	epfd, f, raw, err := newEpoll("connect-epoll")
	if err != nil {
		return nil, err
	}
	return &connector{epfd: epfd, file: f, raw: raw, control: control, pending: make(map[int]*pendingConnect)}, nil
}

// start connects to addr within timeout, closes the connection, and calls
// done with the outcome: at once (in the caller's goroutine) when the
// connect completes or fails immediately, else later from run's goroutine.
// After run has returned, done is called at once with net.ErrClosed.
func (c *connector) start(addr netip.AddrPort, timeout time.Duration, done connectDone) {
	now := time.Now()
	c.connect(&pendingConnect{addr: addr, started: now, deadline: now.Add(timeout), done: done})
}

// open is start for a connection that is kept: opened receives the
// connected socket (non-blocking, close-on-exec), which the caller then
// owns, or the error; when, as for start.
func (c *connector) open(addr netip.AddrPort, timeout time.Duration, opened func(fd int, err error)) {
	now := time.Now()
	c.connect(&pendingConnect{addr: addr, started: now, deadline: now.Add(timeout), keep: true, opened: opened})
}

// report hands pc's outcome to its caller; fd is the connected socket
// (-1 with an error), closed here unless pc keeps it.
func (pc *pendingConnect) report(fd int, err error, elapsed time.Duration) {
	if err != nil {
		err = &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(pc.addr), Err: err}
	}
	if pc.keep {
		pc.opened(fd, err)
		return
	}
	if err == nil {
		closeReset(fd)
	}
	pc.done(err, elapsed)
}

// closeReset closes a probe's connected socket with a reset (SO_LINGER 0)
// instead of a FIN, as HAProxy's health checks do: one packet instead of
// four, no TIME_WAIT socket left on the leader for a minute, and less than
// half the CPU of a connect probe with an orderly close (28 vs 63 µs on
// loopback here). The server sees a connection reset before any data,
// which a TCP server handles like any client that went away.
func closeReset(fd int) {
	_ = syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	syscall.Close(fd)
}

// connect starts pc's connect.
func (c *connector) connect(pc *pendingConnect) {
	addr := pc.addr
	fail := func(err error) { pc.report(-1, err, time.Since(pc.started)) }
	ip := addr.Addr().Unmap()
	family, sa := syscall.AF_INET, syscall.Sockaddr(nil)
	if ip.Is4() {
		sa = &syscall.SockaddrInet4{Port: int(addr.Port()), Addr: ip.As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(addr.Port()), Addr: ip.As16()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if err != nil {
		fail(os.NewSyscallError("socket", err))
		return
	}
	if c.control != nil {
		// As net.Dialer does: after the socket, before the connect.
		network := "tcp4"
		if family == syscall.AF_INET6 {
			network = "tcp6"
		}
		if err := c.control(network, addr.String(), rawFD(fd)); err != nil {
			syscall.Close(fd)
			fail(err)
			return
		}
	}
	for {
		err = syscall.Connect(fd, sa)
		if err != syscall.EINTR {
			break
		}
	}
	switch err {
	case nil, syscall.EISCONN:
		pc.report(fd, nil, time.Since(pc.started))
		return
	case syscall.EINPROGRESS, syscall.EALREADY:
	default:
		syscall.Close(fd)
		fail(os.NewSyscallError("connect", err))
		return
	}
	pc.fd = fd
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		syscall.Close(fd)
		fail(net.ErrClosed)
		return
	}
	// One-shot: the first outcome is the only one wanted.
	ev := syscall.EpollEvent{Events: syscall.EPOLLOUT | syscall.EPOLLONESHOT, Fd: int32(fd)}
	if err := syscall.EpollCtl(c.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		c.mu.Unlock()
		syscall.Close(fd)
		fail(os.NewSyscallError("epoll_ctl", err))
		return
	}
	c.pending[fd] = pc
	heap.Push(&c.byDue, pc)
	c.arm()
	c.mu.Unlock()
}

// arm sets the epoll file's read deadline to the earliest pending one, so
// that run wakes for it. c.mu is held.
func (c *connector) arm() {
	if c.stopped {
		return
	}
	var next time.Time
	if len(c.byDue) > 0 {
		next = c.byDue[0].deadline
	}
	if next.Equal(c.armed) {
		return
	}
	c.armed = next
	_ = c.file.SetReadDeadline(next)
}

// run collects outcomes until ctx is done, then closes every pending
// socket (their done is not called: the term that wanted them is over) and
// the epoll instance.
func (c *connector) run(ctx context.Context) {
	defer func() {
		c.mu.Lock()
		c.stopped = true
		for fd := range c.pending {
			syscall.Close(fd)
		}
		c.pending, c.byDue = nil, nil
		c.mu.Unlock()
		c.file.Close()
	}()
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.stopped = true
		c.mu.Unlock()
		_ = c.file.SetReadDeadline(time.Unix(1, 0))
	})
	defer stop()
	events := make([]syscall.EpollEvent, 128)
	var ended []*pendingConnect
	for ctx.Err() == nil {
		n := 0
		err := c.raw.Read(func(fd uintptr) bool {
			var werr error
			n, werr = syscall.EpollWait(int(fd), events, 0)
			if werr != nil {
				n = 0
			}
			return n > 0
		})
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return // the file is closed
		}
		expired := err != nil
		if expired {
			// The deadline: outcomes may be waiting too.
			if n, err = syscall.EpollWait(c.epfd, events, 0); err != nil {
				n = 0
			}
		}
		now := time.Now()
		ended = ended[:0]
		c.mu.Lock()
		if expired {
			// The file stays past its deadline until it is set again.
			c.armed = time.Unix(1, 0)
		}
		for _, e := range events[:n] {
			pc := c.pending[int(e.Fd)]
			if pc == nil {
				continue
			}
			c.forget(pc)
			ended = append(ended, pc)
		}
		for len(c.byDue) > 0 && !c.byDue[0].deadline.After(now) {
			pc := c.byDue[0]
			c.forget(pc)
			pc.timedOut = true
			ended = append(ended, pc)
		}
		c.arm()
		c.mu.Unlock()
		for _, pc := range ended {
			c.finish(pc, now)
		}
	}
}

// forget removes pc from the pending set and the heap. c.mu is held. Its
// socket stays open for finish: the fd cannot be reused meanwhile.
func (c *connector) forget(pc *pendingConnect) {
	delete(c.pending, pc.fd)
	heap.Remove(&c.byDue, pc.index)
}

// finish reads pc's outcome and reports it; a failed connect's socket is
// closed.
func (c *connector) finish(pc *pendingConnect, now time.Time) {
	elapsed := now.Sub(pc.started)
	if pc.timedOut {
		syscall.Close(pc.fd)
		pc.report(-1, os.ErrDeadlineExceeded, elapsed)
		return
	}
	errno, err := syscall.GetsockoptInt(pc.fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
	switch {
	case err != nil:
		err = os.NewSyscallError("getsockopt", err)
	case errno != 0:
		err = os.NewSyscallError("connect", syscall.Errno(errno))
	}
	if err != nil {
		syscall.Close(pc.fd)
		pc.report(-1, err, elapsed)
		return
	}
	pc.report(pc.fd, nil, elapsed)
}

// deadlines is a min-heap of pending connects by deadline.
type deadlines []*pendingConnect

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].deadline.Before(d[j].deadline) }
func (d deadlines) Swap(i, j int) {
	d[i], d[j] = d[j], d[i]
	d[i].index, d[j].index = i, j
}

func (d *deadlines) Push(x any) {
	pc := x.(*pendingConnect)
	pc.index = len(*d)
	*d = append(*d, pc)
}

func (d *deadlines) Pop() any {
	old := *d
	pc := old[len(old)-1]
	old[len(old)-1] = nil
	*d = old[:len(old)-1]
	pc.index = -1
	return pc
}

// rawFD is the syscall.RawConn a Control function receives: it may act on
// the socket (set options) before the connect, not read or write.
type rawFD int

func (fd rawFD) Control(f func(fd uintptr)) error { f(uintptr(fd)); return nil }
func (rawFD) Read(func(fd uintptr) bool) error    { return errors.ErrUnsupported }
func (rawFD) Write(func(fd uintptr) bool) error   { return errors.ErrUnsupported }
