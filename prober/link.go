package prober

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Persistent connections ("links", issue 11). After a successful probe of
// a server without a status URL the leader keeps one idle TCP connection
// open to the server's addr. (A server with a status URL reports its
// connections, and a link would count among them; its persistent
// connection is the kept-alive one its status is pulled on.) A process
// that dies while its host stays up has its sockets closed by the kernel at
// once, so the link reads EOF or a reset within milliseconds: a death
// notice. When the link had held for at least an interval, the leader
// probes the server at once (a notice probe); if
// the connect is refused or reset as well, nothing listens any more and the
// server goes down without waiting for fall failures. Any other outcome of
// the notice probe is an ordinary result: a timeout counts towards fall, a
// success means the server merely closed the idle connection.
//
// Links never replace the regular probes, which still run once per
// interval and catch what a link cannot: a host that vanishes (no FIN
// comes), a process that hangs. A server that keeps closing links although
// it stays up (an idle timeout, a server that closes every connection
// after accepting it) gets no link for linkBackoff after linkMaxFails such
// closes. The leader never writes to a link: the server sees a client
// that connects and says nothing.

const (
	// linkMaxFails is how many links a server may close while staying up
	// before it gets none for linkBackoff.
	linkMaxFails = 3
	linkBackoff  = 10 * time.Minute
	// linkMinLife: a link that ends sooner was closed by the server on
	// accepting it, which says nothing about its death.
	linkMinLife = 50 * time.Millisecond
	// linkReserve is the open files kept free of links for everything
	// else: probes in flight are counted apart; this covers etcd, HTTP
	// listeners and kept-alive status pulls.
	linkReserve = 2048
	// linkReadCap bounds what a server may send on a link (a banner)
	// before the leader closes it: a link is not a client.
	linkReadCap = 4 << 10
)

// link is one persistent connection: dialed by a short-lived goroutine,
// then watched by the term's linkPoller (one goroutine and one epoll
// instance for all links, instead of a goroutine parked in a read per
// link: at 5,000 links those goroutines' stacks were 43 MB).
type link struct {
	mu     sync.Mutex
	closed bool   // by the leader
	id     uint64 // the poller's key; 0 until the dial completes
	open   atomic.Bool
}

// close closes the connection from the leader's side. It reports whether
// the poller held the link, in which case no linkEvent will come for it
// and the caller accounts for its end; otherwise the dial's goroutine
// sends one. Only Run's goroutine calls it.
func (l *link) close(p *linkPoller) bool {
	l.mu.Lock()
	l.closed = true
	id := l.id
	l.mu.Unlock()
	if id == 0 {
		return false
	}
	l.open.Store(false)
	return p.remove(id)
}

// linkEvent reports that a link ended.
type linkEvent struct {
	id  string
	gen uint64
	l   *link
	// err is why: the dial's error when the link never opened (dialed
	// false), else the read's.
	err    error
	dialed bool
	// lived is how long the link was open.
	lived time.Duration
}

// closeLink closes e's link, if any.
func (t *term) closeLink(e *entry) {
	if e.link == nil {
		return
	}
	if e.link.close(t.poller) {
		t.linkCount--
		t.p.metrics.links.Set(float64(t.linkCount))
	}
	e.link = nil
}

// openLink starts e's persistent connection, if the budget allows.
func (t *term) openLink(ctx context.Context, e *entry) {
	if t.poller == nil {
		return
	}
	budget := t.p.cfg.MaxLinks
	if t.nofile > 0 {
		// Status pulls keep one connection per server with a status URL.
		budget = min(budget, t.nofile-t.capacity-linkReserve-t.statusServers)
	}
	if t.linkCount >= budget {
		return
	}
	l := &link{}
	e.link = l
	t.linkCount++
	t.p.metrics.links.Set(float64(t.linkCount))
	id, gen, addr := e.id, e.gen, e.addr
	if ap, ok := t.connectable(addr); ok {
		// Opened by the connector: no goroutine, and no net.Conn kept.
		t.conn.open(ap, t.p.cfg.Timeout, func(fd int, err error) {
			ev, polled := t.pollLink(l, fd, err, id, gen)
			if polled {
				return
			}
			ev.id, ev.gen, ev.l = id, gen, l
			// Possibly called from Run's own goroutine (a connect that
			// completed at once): never block on Run.
			select {
			case t.links <- ev:
			default:
				t.probes.Go(func() {
					select {
					case t.links <- ev:
					case <-ctx.Done():
					}
				})
			}
		})
		return
	}
	t.probes.Go(func() {
		ev, polled := t.dialLink(ctx, l, addr, id, gen)
		if polled {
			return // the poller reports its end
		}
		ev.id, ev.gen, ev.l = id, gen, l
		select {
		case t.links <- ev:
		case <-ctx.Done():
		}
	})
}

// dialLink dials addr and hands the connection to the poller. It reports
// false with the event to send when the link did not open.
func (t *term) dialLink(ctx context.Context, l *link, addr, id string, gen uint64) (linkEvent, bool) {
	dctx, cancel := context.WithTimeout(ctx, t.p.cfg.Timeout)
	conn, err := t.p.linkDialer.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return linkEvent{err: err}, false
	}
	return t.holdLink(l, id, gen, func() { conn.Close() },
		func(ev linkEvent) (uint64, error) { return t.poller.add(conn, ev) })
}

// holdLink hands an open connection to the poller unless l was closed
// meanwhile; release closes the connection when the poller does not take
// it. It reports false with the event to send when the link did not open.
func (t *term) holdLink(l *link, id string, gen uint64, release func(), add func(linkEvent) (uint64, error)) (linkEvent, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		release()
		return linkEvent{dialed: true, err: net.ErrClosed}, false
	}
	key, err := add(linkEvent{id: id, gen: gen, l: l, dialed: true})
	if err != nil {
		release()
		return linkEvent{dialed: true, err: err}, false
	}
	l.id = key
	l.open.Store(true)
	return linkEvent{}, true
}

// pollLink hands the socket the connector opened (fd, or err) to the
// poller, as dialLink does a dialed connection.
func (t *term) pollLink(l *link, fd int, err error, id string, gen uint64) (linkEvent, bool) {
	if err != nil {
		return linkEvent{err: err}, false
	}
	if err := setKeepAlive(fd, t.p.linkDialer.KeepAliveConfig); err != nil {
		syscall.Close(fd)
		return linkEvent{dialed: true, err: err}, false
	}
	return t.holdLink(l, id, gen, func() { syscall.Close(fd) },
		func(ev linkEvent) (uint64, error) { return t.poller.addFD(fd, ev) })
}

// setKeepAlive sets TCP keepalive on fd as net.Dialer does for cfg
// (whole seconds).
func setKeepAlive(fd int, cfg net.KeepAliveConfig) error {
	secs := func(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
	for _, o := range []struct{ level, opt, v int }{
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, secs(cfg.Idle)},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, secs(cfg.Interval)},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, cfg.Count},
	} {
		if err := syscall.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
	}
	return nil
}

// linkPoller watches every open link of a term with one epoll instance:
// a link is idle, so any readiness is news (a close, a reset, a keepalive
// timeout, or bytes a link should not carry). The conns stay registered
// with Go's own poller too, which nobody waits on. The epoll instance is
// itself waited on through Go's poller, never in a blocking epoll_wait: a
// thread blocked in a system call holds its P until sysmon takes it back,
// up to 10 ms later, which on a replica pinned to one core stalled every
// get-tcp-ip answer behind it (p99 14 ms instead of 2 ms).
type linkPoller struct {
	epfd  int
	file  *os.File // epfd, pollable
	raw   syscall.RawConn
	ended chan<- linkEvent
	mu    sync.Mutex
	next  uint64
	conns map[uint64]*polledLink
}

// polledLink is one link the poller holds: a dialed conn, or (conn nil)
// a socket fd the connector opened, non-blocking and outside Go's poller.
type polledLink struct {
	conn     net.Conn
	raw      syscall.RawConn
	fd       int
	ev       linkEvent // what to report when it ends
	openedAt time.Time
	read     int
}

// newLinkPoller creates the epoll instance; ended receives the links that
// end on the server's side.
func newLinkPoller(ended chan<- linkEvent) (*linkPoller, error) {
	epfd, f, raw, err := newEpoll("link-epoll")
	if err != nil {
		return nil, err
	}
	return &linkPoller{epfd: epfd, file: f, raw: raw, ended: ended, conns: make(map[uint64]*polledLink)}, nil
}

// newEpoll creates a non-blocking epoll instance and registers it with
// Go's poller (os.NewFile does for a non-blocking fd), so that it is
// waited on there, never in a blocking epoll_wait.
func newEpoll(name string) (int, *os.File, syscall.RawConn, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return -1, nil, nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return -1, nil, nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(epfd), name)
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return -1, nil, nil, err
	}
	return epfd, f, raw, nil
}

// add registers conn; ev is reported, with the error and the time lived,
// when the server ends it.
func (p *linkPoller) add(conn net.Conn, ev linkEvent) (uint64, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0, errors.New("link is not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var key uint64
	var rerr error
	err = raw.Control(func(fd uintptr) {
		key, rerr = p.register(int(fd), &polledLink{conn: conn, raw: raw, ev: ev})
	})
	return key, cmp.Or(err, rerr)
}

// addFD registers a connected socket the poller then owns; see add.
func (p *linkPoller) addFD(fd int, ev linkEvent) (uint64, error) {
	return p.register(fd, &polledLink{fd: fd, ev: ev})
}

// register adds fd to the epoll set under a new key and holds pl for it.
func (p *linkPoller) register(fd int, pl *polledLink) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return 0, net.ErrClosed
	}
	p.next++
	key := p.next
	e := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP}
	*(*uint64)(unsafe.Pointer(&e.Fd)) = key
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &e); err != nil {
		return 0, os.NewSyscallError("epoll_ctl", err)
	}
	pl.openedAt = time.Now()
	p.conns[key] = pl
	return key, nil
}

// remove closes the link key from the leader's side; false if it had
// already ended.
func (p *linkPoller) remove(key uint64) bool {
	p.mu.Lock()
	pl := p.conns[key]
	delete(p.conns, key)
	p.mu.Unlock()
	if pl == nil {
		return false
	}
	p.drop(pl)
	return true
}

// drop deregisters and closes pl.
func (p *linkPoller) drop(pl *polledLink) {
	if pl.conn == nil {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, pl.fd, nil)
		syscall.Close(pl.fd)
		return
	}
	_ = pl.raw.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
	pl.conn.Close()
}

// run reports links as they end until ctx is done, then closes every link
// still held and the epoll instance.
func (p *linkPoller) run(ctx context.Context) {
	defer func() {
		p.mu.Lock()
		conns := p.conns
		p.conns = nil
		p.mu.Unlock()
		for _, pl := range conns {
			p.drop(pl)
		}
		p.file.Close()
	}()
	// The end of ctx wakes the wait below.
	stop := context.AfterFunc(ctx, func() { _ = p.file.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	events := make([]syscall.EpollEvent, 128)
	var ended []linkEvent
	for ctx.Err() == nil {
		var n int
		var werr error
		err := p.raw.Read(func(fd uintptr) bool {
			n, werr = syscall.EpollWait(int(fd), events, 0)
			// Nothing ready: park in Go's poller until the epoll
			// instance is readable (or the deadline above).
			return n > 0 || werr != nil && werr != syscall.EINTR && werr != syscall.EAGAIN
		})
		if err != nil {
			return // ctx is done (the deadline), or the file is closed
		}
		if werr != nil {
			// Not expected with a valid epfd: retry after a pause.
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		ended = ended[:0]
		for _, e := range events[:n] {
			key := *(*uint64)(unsafe.Pointer(&e.Fd))
			if ev, ok := p.check(key); ok {
				ended = append(ended, ev)
			}
		}
		for _, ev := range ended {
			ev.l.open.Store(false)
			select {
			case p.ended <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}

// check reads what link key has to say; it reports the link's end.
func (p *linkPoller) check(key uint64) (linkEvent, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.conns[key]
	if pl == nil {
		return linkEvent{}, false // closed by the leader meanwhile
	}
	var rerr error
	var buf [256]byte
	drain := func(fd uintptr) bool {
		for {
			n, err := syscall.Read(int(fd), buf[:])
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				return true
			case err != nil:
				rerr = os.NewSyscallError("read", err)
				return true
			case n == 0:
				rerr = io.EOF
				return true
			}
			pl.read += n
			if pl.read > linkReadCap {
				rerr = errors.New("server sends on an idle link")
				return true
			}
		}
	}
	var err error
	if pl.conn == nil {
		drain(uintptr(pl.fd)) // non-blocking: returns on EAGAIN
	} else {
		err = pl.raw.Read(drain)
	}
	rerr = cmp.Or(rerr, err)
	if rerr == nil {
		return linkEvent{}, false
	}
	delete(p.conns, key)
	p.drop(pl)
	ev := pl.ev
	ev.err, ev.lived = rerr, time.Since(pl.openedAt)
	return ev, true
}

// closeLinks closes every link.
func (t *term) closeLinks() {
	for _, e := range t.entries {
		t.closeLink(e)
	}
}

// linkClosed handles the end of a link: a server-side close is a death
// notice, checked at once by a notice probe.
func (t *term) linkClosed(ctx context.Context, ev linkEvent) {
	t.linkCount--
	t.p.metrics.links.Set(float64(t.linkCount))
	e := t.entries[ev.id]
	if e == nil || e.link != ev.l || ev.gen != e.gen {
		return // closed by the leader, or for an old addr
	}
	e.link = nil
	now := time.Now()
	if !ev.dialed {
		// The server answered a probe but not this connect: try again
		// after its next good probe.
		e.linkAfter = now.Add(t.p.cfg.Interval)
		t.round.exhausted = t.round.exhausted || outOfFiles(ev.err)
		return
	}
	if ev.l.closed {
		return
	}
	t.p.metrics.linkCloses.Inc()
	// The end of a link that held is news; so is the end of a young one
	// (a server killed just after it came up, its link opened at its
	// first good probe), unless the server closed it on accepting it
	// (within linkMinLife) or was seen closing young links while it
	// stayed up: a server that closes idle connections says nothing by
	// it, and gets no link for a while after linkMaxFails closes (below).
	// A link that timed out was silent through a keepalive: that counts
	// as a failure.
	young := ev.lived < t.p.cfg.Interval
	if !young || ev.lived >= linkMinLife && !e.closesLinks {
		t.noticeProbe(ctx, e, isTimeout(ev.err), young)
	}
	if !young {
		e.closesLinks = false
	}
	e.linkFails++
	if ev.lived >= linkBackoff/10 {
		// A long-lived link is what links are for: a later close (a
		// restart, an idle timeout) does not count against the server.
		e.linkFails = 1
	}
	if e.linkFails >= linkMaxFails {
		e.linkAfter = now.Add(linkBackoff)
		e.linkFails = 0
	}
}

// noticeRecheck is how long a notice probe that connected waits before it
// connects once more. A process being killed closes its sockets one by
// one: its link can end while its listener still accepts, so a notice
// probe sent at once (microseconds later) may connect to a server that is
// dying. The recheck, well inside noticeGather, sees it refused; the
// results of others wait for it (see pass).
const noticeRecheck = 15 * time.Millisecond

// noticeProbe connects to e's addr at once, outside its schedule: a
// refusal then takes it down at once (see apply); a connect that works is
// tried again after noticeRecheck, and the second outcome counts. lost
// marks a link that timed out, young one that ended within an interval.
// Notices are rare: the probe runs on a goroutine, which may wait.
func (t *term) noticeProbe(ctx context.Context, e *entry, lost, young bool) {
	tg := target{id: e.id, addr: e.addr, notice: true, linkLost: lost, youngLink: young}
	gen := e.gen
	t.p.metrics.noticeProbes.Inc()
	t.inflight++
	t.noticeOut++
	t.probes.Go(func() {
		first := tg
		t.p.probeOne(ctx, &first, 0)
		if first.ok {
			select {
			case <-ctx.Done():
			case <-time.After(noticeRecheck):
				first = tg
				t.p.probeOne(ctx, &first, 0)
			}
		}
		t.complete(result{target: first, gen: gen})
	})
}

// refused reports whether err says nothing listens at the address: the
// host answered the connect with a reset.
func refused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// outOfFiles reports whether err says the process or system is out of
// file descriptors.
func outOfFiles(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}
