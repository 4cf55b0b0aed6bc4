package prober

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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
	// linkReserve is the open files kept free of links for everything
	// else: probes in flight are counted apart; this covers etcd, HTTP
	// listeners and kept-alive status pulls.
	linkReserve = 2048
	// linkReadCap bounds what a server may send on a link (a banner)
	// before the leader closes it: a link is not a client.
	linkReadCap = 4 << 10
)

// link is one persistent connection. Its goroutine owns the read; close
// may be called from anywhere, any number of times.
type link struct {
	mu       sync.Mutex
	conn     net.Conn
	closed   bool // by the leader
	open     atomic.Bool
	openedAt time.Time
}

// close closes the connection from the leader's side.
func (l *link) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.conn != nil {
		l.conn.Close()
	}
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

func (e *entry) closeLink() {
	if e.link != nil {
		e.link.close()
		e.link = nil
	}
}

// openLink starts e's persistent connection, if the budget allows.
func (t *term) openLink(ctx context.Context, e *entry) {
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
	t.probes.Go(func() {
		ev := t.runLink(ctx, l, addr)
		ev.id, ev.gen, ev.l = id, gen, l
		select {
		case t.links <- ev:
		case <-ctx.Done():
		}
	})
}

// runLink dials addr and reads until the connection ends.
func (t *term) runLink(ctx context.Context, l *link, addr string) linkEvent {
	dctx, cancel := context.WithTimeout(ctx, t.p.cfg.Timeout)
	conn, err := t.p.linkDialer.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return linkEvent{err: err}
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		conn.Close()
		return linkEvent{dialed: true, err: net.ErrClosed}
	}
	l.conn, l.openedAt = conn, time.Now()
	l.open.Store(true)
	l.mu.Unlock()
	var buf [256]byte
	read := 0
	for {
		n, err := conn.Read(buf[:])
		read += n
		if err == nil && read > linkReadCap {
			err = errors.New("server sends on an idle link")
		}
		if err != nil {
			l.open.Store(false)
			conn.Close()
			return linkEvent{dialed: true, err: err, lived: time.Since(l.openedAt)}
		}
	}
}

// closeLinks closes every link; their goroutines then end.
func (t *term) closeLinks() {
	for _, e := range t.entries {
		e.closeLink()
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
	if ev.lived >= t.p.cfg.Interval {
		// A link that held: its end is news. (One the server closes at
		// once says nothing about its death.) One that timed out was
		// silent through a keepalive: that counts as a failure.
		t.noticeProbe(ctx, e, isTimeout(ev.err))
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

// noticeProbe connects to e's addr at once, outside its schedule: a
// refusal then takes it down at once (see apply). lost marks a link that
// timed out.
func (t *term) noticeProbe(ctx context.Context, e *entry, lost bool) {
	tg := target{id: e.id, addr: e.addr, notice: true, linkLost: lost}
	gen := e.gen
	t.inflight++
	t.probes.Go(func() {
		t.p.probeOne(ctx, &tg, 0)
		t.complete(result{target: tg, gen: gen})
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
