package election

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/internal/backoff"
	"github.com/tcpdispatch/tcpdispatch/internal/logging"
)

// Death notices (issue 11): failover without waiting for the leader's TTL
// when the leader's process dies on a host that stays up.
//
// Every replica that does not lead keeps one idle TCP connection, a link,
// to an address owned by the leader's process (see Locator). When the
// process dies, the kernel closes its sockets at once: the link ends with
// EOF or a reset within a round trip. The watcher then dials the address
// again. Only a refusal (ECONNREFUSED: the host answers, nothing listens)
// confirms the death; the watcher then re-reads the leader key and, if it
// still holds the same lease and create revision, revokes that lease. The
// key goes with it, and the next candidate wins in milliseconds instead of
// after the TTL.
//
// Any other outcome leaves failover to the lease TTL, as without death
// notices: a timeout or a partition (no answer at all), a paused process
// (SIGSTOP: its sockets stay open, the link does not end), a successful
// dial (the leader merely closed the idle link; the new connection becomes
// the link).
//
// Safety does not depend on the notice being right. Every leader write is
// a Leadership.Txn fenced on the leader key's create revision, so a leader
// whose lease was revoked by mistake (say, its listener vanished while the
// process lived) cannot write another byte of its term; it loses
// leadership as if its lease had expired, and the next term starts from
// etcd. The revoke is idempotent across replicas: all followers may notice
// the same death, the first revoke deletes the key, and every later one
// finds the key gone or the lease unknown and does nothing.
//
// etcd has no conditional revoke, so compare-and-revoke is a read of the
// key followed by a revoke of the lease it was read with. That is exact
// nonetheless: a lease ID is granted once, and every term runs on a lease
// of its own (one session per term), so the revoke can end the dead term
// and nothing else, whatever happened between the read and the revoke.

// Locator returns the host:port of an address owned by replica name's
// process, such as its embedded etcd member's peer listener, so that the
// address refuses connections as soon as the process is gone. It must
// return within ctx's deadline.
type Locator func(ctx context.Context, name string) (string, error)

// DeathWatchConfig configures a DeathWatch. Fields cannot change while Run
// runs.
type DeathWatchConfig struct {
	// Name is this replica's name: it keeps no link while it leads.
	// Required.
	Name string
	// Prefix is the election's key prefix, as in Config.Prefix. Required.
	Prefix string
	// DialTimeout bounds each dial: opening a link, and the dial that
	// confirms a death. A dial that runs out is no confirmation. Default 1s.
	DialTimeout time.Duration
	// OpTimeout bounds each etcd call (read the leader, locate it, re-read
	// the key, revoke). Default 2s.
	OpTimeout time.Duration
	// RetryInterval is the pause, jittered by ±20%, before following the
	// leader again after a link could not be opened or was given up.
	// Default 500ms.
	RetryInterval time.Duration
	// Dial opens connections; nil uses a net.Dialer. Tests replace it.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Confirm, when set, locates a second listener of a replica's process
	// (its member's client URL). A leader killed before this replica's
	// link to it was open (within a moment of winning, on a busy host) is
	// refused at the first dial; that counts as a notice when a dial to
	// the Confirm address is refused too: both of the process's listeners
	// closed. A wrong peer URL alone (the member alive behind its client
	// URL) still deposes nobody. Nil: a refused first dial is no notice.
	Confirm Locator
}

// DefaultDeathWatchConfig returns default timings; Name and Prefix must be
// set.
func DefaultDeathWatchConfig() DeathWatchConfig {
	return DeathWatchConfig{DialTimeout: time.Second, OpTimeout: 2 * time.Second, RetryInterval: 500 * time.Millisecond}
}

// Validate reports the first rule c breaks, or nil.
func (c DeathWatchConfig) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("death watch: Name is empty")
	case c.Prefix == "":
		return errors.New("death watch: Prefix is empty")
	case c.DialTimeout <= 0 || c.OpTimeout <= 0 || c.RetryInterval <= 0:
		return errors.New("death watch: DialTimeout, OpTimeout and RetryInterval must be positive")
	}
	return nil
}

// noticeOutcome labels tcpdispatch_leader_death_notices_total.
type noticeOutcome string

const (
	// noticeRevoked: the confirming dial was refused and this replica
	// revoked the dead leader's lease.
	noticeRevoked noticeOutcome = "revoked"
	// noticeGone: refused, but the key was already gone or held another
	// lease (another replica revoked first, or the term ended).
	noticeGone noticeOutcome = "already_gone"
	// noticeAlive: the confirming dial connected; the leader only closed
	// the idle link.
	noticeAlive noticeOutcome = "alive"
	// noticeUnconfirmed: the confirming dial failed otherwise (timeout,
	// unreachable); failover is left to the TTL.
	noticeUnconfirmed noticeOutcome = "unconfirmed"
	// noticeFailed: refused, but reading the key or revoking failed.
	noticeFailed noticeOutcome = "failed"
)

// linkReadCap is what the leader's address may send on a link before the
// watcher drops it; a link is not a client.
const linkReadCap = 4 << 10

// revokeTries is how many times a confirmed death's re-read and revoke
// are attempted when etcd fails them.
const revokeTries = 3

// minLinkLife is how long a link must have lived for a successful
// confirming dial to become the next link at once; a leader that closes
// links faster is followed again only after RetryInterval.
const minLinkLife = time.Second

// DeathWatch keeps a link to the current leader and revokes its lease when
// the leader's process is confirmed dead. See the comment above Locator.
type DeathWatch struct {
	cfg     DeathWatchConfig
	cli     *clientv3.Client
	locate  Locator
	log     *logrus.Entry
	notices *prometheus.CounterVec

	// held is the leader key a link was last open to. A refused dial to
	// that same term counts as a notice even when the link broke for
	// another reason first (a watch re-evaluation), but a refused first
	// dial to a leader never linked to (a wrong address) does not, unless
	// Confirm's address is refused too.
	held string
}

// NewDeathWatch validates cfg and returns a watch that counts into reg.
// A nil log discards.
func NewDeathWatch(cfg DeathWatchConfig, cli *clientv3.Client, locate Locator, log *logrus.Entry, reg prometheus.Registerer) (*DeathWatch, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cli == nil || locate == nil {
		return nil, errors.New("death watch: nil etcd client or locator")
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	notices, err := newDeathWatchMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &DeathWatch{cfg: cfg, cli: cli, locate: locate, log: logging.OrDiscard(log), notices: notices}, nil
}

// leaderTerm is one leader term as the watch sees it.
type leaderTerm struct {
	key       string
	name      string
	lease     clientv3.LeaseID
	createRev int64
}

// Run follows the leader until ctx is cancelled, then returns nil once
// every goroutine it started has exited. Run must not be called twice at
// once.
func (w *DeathWatch) Run(ctx context.Context) error {
	for {
		if err := w.follow(ctx); err != nil && ctx.Err() == nil {
			w.log.WithError(err).Debug("follow the leader; retrying")
		}
		if !backoff.Sleep(ctx, backoff.SpreadOf(w.cfg.RetryInterval)) {
			return nil
		}
	}
}

// follow follows one leader term: it returns when the term ends (as seen
// by a watch of its key), after a death notice was handled, when no link
// can be kept, or when ctx is cancelled.
func (w *DeathWatch) follow(ctx context.Context) error {
	lt, rev, err := w.leader(ctx)
	if err != nil {
		return err
	}
	tctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // before the Wait
	wg.Go(func() {
		defer cancel()
		w.awaitChange(tctx, lt, rev)
	})
	if lt == nil || lt.name == w.cfg.Name {
		<-tctx.Done()
		return nil
	}
	lctx, lcancel := context.WithTimeout(tctx, w.cfg.OpTimeout)
	addr, err := w.locate(lctx, lt.name)
	lcancel()
	if err != nil {
		return fmt.Errorf("locate leader %s: %w", lt.name, err)
	}
	conn, err := w.dial(tctx, addr)
	if err != nil {
		if refused(err) && tctx.Err() == nil && (w.held == lt.key || w.bothRefused(tctx, lt)) {
			w.confirmed(ctx, lt, addr, 0)
			return nil
		}
		return fmt.Errorf("link to leader %s at %s: %w", lt.name, addr, err)
	}
	for {
		w.held = lt.key
		opened := time.Now()
		w.hold(tctx, conn)
		if tctx.Err() != nil {
			return nil // the term ended or Run is stopping
		}
		lived := time.Since(opened)
		// The link ended while the term lasts: is anyone still there?
		conn, err = w.dial(tctx, addr)
		switch {
		case tctx.Err() != nil:
			if conn != nil {
				conn.Close()
			}
			return nil
		case err == nil:
			w.notices.WithLabelValues(string(noticeAlive)).Inc()
			if lived < minLinkLife {
				conn.Close()
				return nil // follow again after a pause
			}
			continue // the new connection is the link
		case refused(err):
			w.confirmed(ctx, lt, addr, lived)
			return nil
		default:
			w.notices.WithLabelValues(string(noticeUnconfirmed)).Inc()
			w.log.WithError(err).WithFields(logrus.Fields{"leader": lt.name, "addr": addr}).
				Info("link to the leader ended, death not confirmed; failover left to the lease TTL")
			return nil
		}
	}
}

// bothRefused reports whether a dial to the leader's Confirm address is
// refused as well (see DeathWatchConfig.Confirm).
func (w *DeathWatch) bothRefused(ctx context.Context, lt *leaderTerm) bool {
	if w.cfg.Confirm == nil {
		return false
	}
	lctx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	addr, err := w.cfg.Confirm(lctx, lt.name)
	cancel()
	if err != nil {
		return false
	}
	conn, err := w.dial(ctx, addr)
	if err == nil {
		conn.Close()
		return false
	}
	return refused(err) && ctx.Err() == nil
}

// refused reports whether err is a refused connection: the host answered
// and nothing listens on the port.
func refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// dial opens one connection to addr within DialTimeout.
func (w *DeathWatch) dial(ctx context.Context, addr string) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, w.cfg.DialTimeout)
	defer cancel()
	return w.cfg.Dial(dctx, "tcp", addr)
}

// hold reads conn until it ends or ctx is done, then closes it. Nothing is
// ever written: the leader's process sees a peer that connects and waits.
func (w *DeathWatch) hold(ctx context.Context, conn net.Conn) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	buf := make([]byte, 512)
	for got := 0; got <= linkReadCap; {
		n, err := conn.Read(buf)
		got += n
		if err != nil {
			return
		}
	}
}

// confirmed handles a refused dial to the leader lt: compare-and-revoke.
// ctx is Run's, not the term's: the watch of the key may have ended the
// term meanwhile, and the re-read decides then.
func (w *DeathWatch) confirmed(ctx context.Context, lt *leaderTerm, addr string, lived time.Duration) {
	// When the dead leader's member also led raft, etcd elects a new raft
	// leader first and a call may time out meanwhile: try again, a few
	// times, each bounded by OpTimeout.
	outcome, err := w.revokeIfSame(ctx, lt)
	for try := 1; err != nil && try < revokeTries && backoff.Sleep(ctx, backoff.SpreadOf(w.cfg.RetryInterval/5)); try++ {
		outcome, err = w.revokeIfSame(ctx, lt)
	}
	w.notices.WithLabelValues(string(outcome)).Inc()
	log := w.log.WithFields(logrus.Fields{"leader": lt.name, "addr": addr, "lease": fmt.Sprintf("%x", lt.lease),
		"epoch": lt.createRev, "link_lived": lived.Round(time.Millisecond), "outcome": outcome})
	switch {
	case err != nil:
		log.WithError(err).Warn("leader death notice: revoke failed; failover left to the lease TTL")
	case outcome == noticeRevoked && w.held != lt.key:
		log.Warn("leader death notice: its member's peer and client listeners both refused a connect before a link was open; revoked its election lease")
	case outcome == noticeRevoked:
		log.Warn("leader death notice: its link ended and a connect was refused; revoked its election lease")
	default:
		log.Info("leader death notice: its term had already ended")
	}
}

// revokeIfSame revokes lt's lease if the leader key still exists with lt's
// lease and create revision.
func (w *DeathWatch) revokeIfSame(ctx context.Context, lt *leaderTerm) (noticeOutcome, error) {
	gctx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	resp, err := w.cli.Get(gctx, lt.key)
	cancel()
	switch {
	case err != nil:
		return noticeFailed, fmt.Errorf("re-read leader key: %w", err)
	case len(resp.Kvs) == 0,
		clientv3.LeaseID(resp.Kvs[0].Lease) != lt.lease,
		resp.Kvs[0].CreateRevision != lt.createRev:
		return noticeGone, nil
	}
	rctx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	if _, err := w.cli.Revoke(rctx, lt.lease); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return noticeGone, nil
		}
		return noticeFailed, fmt.Errorf("revoke lease: %w", err)
	}
	return noticeRevoked, nil
}

// leader reads the current leader term, nil if none, and the revision of
// the read.
func (w *DeathWatch) leader(ctx context.Context) (*leaderTerm, int64, error) {
	gctx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	// The same rule as concurrency.Election.Leader: the key created first
	// under the prefix leads.
	resp, err := w.cli.Get(gctx, w.cfg.Prefix+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return nil, 0, fmt.Errorf("read leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, nil
	}
	kv := resp.Kvs[0]
	return &leaderTerm{key: string(kv.Key), name: string(kv.Value), lease: clientv3.LeaseID(kv.Lease),
		createRev: kv.CreateRevision}, resp.Header.Revision, nil
}

// awaitChange returns when the leader may have changed since rev: lt's key
// was deleted or replaced (or, with no leader, a key was created under the
// prefix), the watch broke, or ctx is done. A broken watch returns too, so
// that a replica cut off from etcd's quorum does not keep following a
// leader that is no longer one.
func (w *DeathWatch) awaitChange(ctx context.Context, lt *leaderTerm, rev int64) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	key, opts := w.cfg.Prefix+"/", []clientv3.OpOption{clientv3.WithRev(rev + 1), clientv3.WithPrefix()}
	if lt != nil {
		key, opts = lt.key, opts[:1]
	}
	for wr := range w.cli.Watch(wctx, key, opts...) {
		if wr.Err() != nil || wr.Canceled {
			return
		}
		for _, ev := range wr.Events {
			if lt == nil || ev.Type == clientv3.EventTypeDelete || ev.Kv.CreateRevision != lt.createRev {
				return
			}
		}
	}
}
