// Package election elects one leader among dispatcher replicas that share
// etcd, and fences every write of that leader to its term.
//
// A replica runs [Election.Run]. Each time it wins, Run calls the lead
// function with a context that is cancelled as soon as the replica notices
// that leadership is lost, and a [Leadership] whose [Leadership.Txn] commits
// a write only if the leader key of that term still exists.
//
// # Model
//
// Leadership is an etcd key, Prefix+"/"+<lease ID in hex>, attached to a
// session lease of Config.TTL and created by
// go.etcd.io/etcd/client/v3/concurrency. The replica whose key has the
// lowest create revision leads. That create revision is the term's epoch,
// the fencing token: it increases from one term to the next, across
// replicas.
//
// # Guaranteed
//
//   - A write made through Leadership.Txn commits only while the term's
//     leader key exists with create revision Epoch. Once the key is gone
//     (resigned, deleted, or its lease expired or was revoked) no write of
//     that term can land, however late it reaches etcd. This holds even when
//     the process is paused or partitioned, because etcd checks the fence.
//   - The lead context is cancelled when the replica observes the loss: its
//     session ends (lease expired or revoked), no keep-alive of the lease was
//     acknowledged for TTL, the leader key is deleted or replaced (a broken
//     watch of the key resumes from its last revision, so a deletion in the
//     gap is still seen), a fenced Txn fails its fence compare, or Run's ctx
//     is cancelled. context.Cause of the lead context wraps [ErrNotLeader] for a
//     detected loss.
//   - A term ended with [Leadership.StepDown] resigns its key once the lead
//     function returns, and Run does not campaign again before the back-off
//     has passed.
//   - Every goroutine Run starts has exited when Run returns. (The etcd
//     client keeps its own connection, lease and watch goroutines; the ones
//     serving a term exit as the term's context is cancelled.)
//
// # Not guaranteed
//
//   - Mutual exclusion of belief. The old leader learns of its loss from a
//     watch event or from its keep-alives going unacknowledged; until then it
//     still believes it leads. Around a lease expiry two replicas may both
//     believe they lead for up to about one TTL: a partitioned leader gives
//     up TTL after its last acknowledged renewal, which is roughly when etcd
//     expires the lease and a successor can win, but clock rate differences,
//     network delay and scheduling (a paused process notices nothing) add to
//     that. Work that must not overlap has to go through Leadership.Txn, or
//     be idempotent.
//   - Reads. Nothing fences what a deposed leader reads or does outside etcd
//     (such as probing tcp-servers); only its etcd writes are fenced.
//   - Failover faster than TTL, except by [DeathWatch]: a replica that
//     does not lead may revoke the leader's lease when the leader's process
//     is confirmed dead (its link ended and a connect was refused, or,
//     before any link was open, both of its member's listeners refused). That
//     ends the term like an expiry would, and is safe for the same reason:
//     the fence, not the lease, guards every write.
//   - Promptness against a dead etcd in one case. If a wait in
//     concurrency.Election.Campaign is interrupted (ctx cancelled, or the
//     session expired) while etcd is unreachable, Campaign's own cleanup, a
//     Resign on the client's context rather than ours, blocks until etcd is
//     reachable again or the client is closed, and Run cannot return before
//     it does. Every other etcd call is bounded by Config.OpTimeout.
package election

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tcpdispatch/tcpdispatch/internal/backoff"
	"github.com/tcpdispatch/tcpdispatch/internal/logging"
)

// ErrNotLeader is returned by Leadership.Txn when the fence compare failed:
// the leader key no longer exists with the term's create revision, so the
// term is over. The term's context is cancelled before ErrNotLeader is
// returned. Reasons passed to the term context's cancellation (see
// context.Cause) wrap ErrNotLeader when leadership was lost.
var ErrNotLeader = errors.New("election: not the leader")

// MaxTxnOps is the most ops one Leadership.Txn can carry under etcd's
// default --max-txn-ops (128) when some of them are one-op nested
// transactions (a guarded delete). etcd checks every nesting level against
// the limit left by the levels above it: the fence's outer transaction takes
// one, the caller's n ops n, and a nested op's own op one more, so
// 1 + n + 1 <= 128.
const MaxTxnOps = 126

// Reasons for a detected loss; each wraps ErrNotLeader.
var (
	errSessionDone = fmt.Errorf("%w: session lease expired or revoked", ErrNotLeader)
	errKeyDeleted  = fmt.Errorf("%w: leader key deleted", ErrNotLeader)
	errKeyReplaced = fmt.Errorf("%w: leader key replaced", ErrNotLeader)
	errLeaseStale  = fmt.Errorf("%w: no lease keep-alive acknowledged for TTL", ErrNotLeader)
	errFenceFailed = fmt.Errorf("%w: fenced txn compare failed", ErrNotLeader)
	// errTermEnded ends a term whose lead function returned on its own.
	errTermEnded = errors.New("election: lead function returned")
)

// Config configures an Election. Fields cannot change while Run runs.
type Config struct {
	// Name identifies this replica; it is written as the leader key's value.
	// Required.
	Name string
	// Prefix is the election's key prefix without a trailing slash, for
	// example "/tcpdispatch/election". Candidate keys are
	// Prefix+"/"+<lease ID in hex>. All replicas must use the same Prefix.
	// Required.
	Prefix string
	// TTL is the session lease's time to live. It bounds how long a crashed
	// or partitioned leader keeps the key, and so how long a failover takes.
	// etcd leases have whole-second TTLs: TTL is rounded up to whole seconds,
	// and etcd raises it to its own minimum (1.5 × its election timeout,
	// rounded up) if lower. Default 3s; at least 1s.
	TTL time.Duration
	// RetryInterval is the pause before the next attempt after a failed one
	// (lease grant, campaign or verification error) or after a term ends.
	// Each pause is jittered by ±20% so replicas do not retry in lockstep.
	// Default 500ms.
	RetryInterval time.Duration
	// OpTimeout bounds each single etcd call this package makes on its own:
	// lease grant, leadership verification, resign, revoke, and a
	// Leadership.Txn whose ctx has no deadline. Must be shorter than TTL, so
	// that a call that cannot complete is noticed while the lease may still
	// be alive. Default 2s.
	OpTimeout time.Duration
}

// DefaultConfig returns a Config with default timings. Name and Prefix are
// left empty and must be set.
func DefaultConfig() Config {
	return Config{
		TTL:           3 * time.Second,
		RetryInterval: 500 * time.Millisecond,
		OpTimeout:     2 * time.Second,
	}
}

// Validate reports the first rule c breaks, or nil: Name and Prefix are
// non-empty, Prefix has no trailing slash, TTL >= 1s, RetryInterval > 0,
// and 0 < OpTimeout < TTL.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("election: Name is empty")
	case c.Prefix == "":
		return errors.New("election: Prefix is empty")
	case strings.HasSuffix(c.Prefix, "/"):
		return fmt.Errorf("election: Prefix %q ends with a slash", c.Prefix)
	case c.TTL < time.Second:
		return fmt.Errorf("election: TTL %v is below 1s", c.TTL)
	case c.RetryInterval <= 0:
		return fmt.Errorf("election: RetryInterval %v is not positive", c.RetryInterval)
	case c.OpTimeout <= 0:
		return fmt.Errorf("election: OpTimeout %v is not positive", c.OpTimeout)
	case c.OpTimeout >= c.TTL:
		return fmt.Errorf("election: OpTimeout %v is not below TTL %v", c.OpTimeout, c.TTL)
	}
	return nil
}

// ttlSeconds is TTL rounded up to the whole seconds etcd grants.
func (c Config) ttlSeconds() int {
	return int((c.TTL + time.Second - 1) / time.Second)
}

// Election campaigns for leadership on behalf of one replica.
type Election struct {
	cfg     Config
	cli     *clientv3.Client
	log     *logrus.Entry
	leader  atomic.Bool
	running atomic.Bool
	// epoch is the epoch of the term last won; read with leader.
	epoch atomic.Int64
}

// withDefaults returns c with each zero timing replaced by its
// DefaultConfig value.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.TTL = cmp.Or(c.TTL, d.TTL)
	c.RetryInterval = cmp.Or(c.RetryInterval, d.RetryInterval)
	c.OpTimeout = cmp.Or(c.OpTimeout, d.OpTimeout)
	return c
}

// New returns an Election that campaigns with cli. Zero fields of cfg take
// their DefaultConfig values; the result must pass Config.Validate, else New
// returns its error. A nil log discards log output. New makes no etcd call.
func New(cfg Config, cli *clientv3.Client, log *logrus.Entry) (*Election, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cli == nil {
		return nil, errors.New("election: nil etcd client")
	}
	log = logging.OrDiscard(log)
	return &Election{cfg: cfg, cli: cli, log: log.WithField("name", cfg.Name)}, nil
}

// Run campaigns for leadership until ctx is cancelled, then returns nil. It
// returns an error only for misuse: a nil lead, or a second concurrent Run on
// the same Election.
//
// Each time it wins, Run calls lead(leaderCtx, l) and waits for it to return.
// leaderCtx is cancelled as soon as leadership is lost (see the package doc)
// or ctx is cancelled; lead should then stop promptly, because Run cannot
// start a new term or return before lead does. A lead error is logged, not
// fatal. When lead returns for any reason, Run resigns if leadership was not
// lost, revokes the term's lease, pauses about RetryInterval, and campaigns
// again unless ctx is done.
//
// Errors from etcd (unreachable, lease expired) are logged and retried after
// about RetryInterval, each attempt bounded by OpTimeout. On ctx cancellation
// Run resigns and revokes its lease before returning, so a successor takes
// over within milliseconds rather than a TTL. Every goroutine Run starts has
// exited when it returns.
func (e *Election) Run(ctx context.Context, lead func(ctx context.Context, l *Leadership) error) error {
	if lead == nil {
		return errors.New("election: nil lead function")
	}
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("election: Run is already running")
	}
	defer e.running.Store(false)
	for {
		stepDown, err := e.runOnce(ctx, lead)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			e.log.WithError(err).Warn("election attempt failed")
		}
		if stepDown > 0 {
			e.log.WithField("backoff", stepDown).Warn("stepped down; staying out of the election")
			if !backoff.Sleep(ctx, stepDown) {
				return nil
			}
			continue
		}
		if !e.pause(ctx) {
			return nil
		}
	}
}

// IsLeader reports whether this replica holds leadership: true from a
// verified campaign win until the loss is observed or the term ends. Safe
// for concurrent use.
func (e *Election) IsLeader() bool { return e.leader.Load() }

// LeaderEpoch returns the epoch of this replica's term while it leads, and
// 0 otherwise. Unlike the snapshot, which learns of a new term through the
// watch, it is current the moment leadership is won.
func (e *Election) LeaderEpoch() int64 {
	if !e.leader.Load() {
		return 0
	}
	return e.epoch.Load()
}

// runOnce creates a session, campaigns, and leads at most one term. A fresh
// session per term means a fresh leader key, so every term has a new epoch.
// It returns the back-off a term asked for with Leadership.StepDown.
func (e *Election) runOnce(ctx context.Context, lead func(context.Context, *Leadership) error) (time.Duration, error) {
	s, err := e.newSession(ctx)
	if err != nil {
		return 0, err
	}
	defer e.closeSession(ctx, s)
	el, rev, err := e.campaign(ctx, s)
	if err != nil {
		return 0, err
	}
	return e.leadTerm(ctx, s, el, rev, lead), nil
}

// newSession grants a lease with an OpTimeout-bounded call and keeps it alive
// in a session. The session's context does not inherit ctx's cancellation:
// on shutdown the lease must outlive ctx until closeSession revokes it.
func (e *Election) newSession(ctx context.Context) (*concurrency.Session, error) {
	gctx, cancel := context.WithTimeout(ctx, e.cfg.OpTimeout)
	resp, err := e.cli.Grant(gctx, int64(e.cfg.ttlSeconds()))
	cancel()
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", err)
	}
	// NewSession would grant the lease itself with the session context,
	// which would then either be unbounded or kill the keep-alive after
	// OpTimeout; hence WithLease.
	s, err := concurrency.NewSession(e.cli,
		concurrency.WithTTL(e.cfg.ttlSeconds()),
		concurrency.WithLease(resp.ID),
		concurrency.WithContext(context.WithoutCancel(ctx)))
	if err == nil && s == nil {
		err = errors.New("keep-alive unavailable") // NewSession returns (nil, nil) when KeepAlive does
	}
	if err != nil {
		e.revoke(ctx, resp.ID)
		return nil, fmt.Errorf("create session: %w", err)
	}
	return s, nil
}

// closeSession stops the keep-alive and revokes the lease with its own
// OpTimeout (Session.Close would allow a whole TTL), deleting any key left.
func (e *Election) closeSession(ctx context.Context, s *concurrency.Session) {
	s.Orphan()
	e.revoke(ctx, s.Lease())
}

func (e *Election) revoke(ctx context.Context, id clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.OpTimeout)
	defer cancel()
	if _, err := e.cli.Revoke(rctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		// The lease expires on its own within TTL.
		e.log.WithError(err).WithField("lease", fmt.Sprintf("%x", id)).Warn("revoke lease")
	}
}

// campaign waits until s's key leads, then verifies it: Campaign can return
// after the session expired, and only a key that still exists with our lease
// and create revision is leadership. It also returns the revision of that
// verification: every write of an earlier term is at or below it.
func (e *Election) campaign(ctx context.Context, s *concurrency.Session) (*concurrency.Election, int64, error) {
	el := concurrency.NewElection(s, e.cfg.Prefix)
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.Ctx(), cancel) // a dead session cannot win
	err := el.Campaign(cctx, e.cfg.Name)
	stop()
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		if s.Ctx().Err() != nil {
			return nil, 0, fmt.Errorf("campaign: %w", errSessionDone)
		}
		return nil, 0, fmt.Errorf("campaign: %w", err)
	}
	gctx, gcancel := context.WithTimeout(ctx, e.cfg.OpTimeout)
	resp, err := e.cli.Get(gctx, el.Key())
	gcancel()
	switch {
	case err != nil:
		return nil, 0, fmt.Errorf("verify leadership: %w", err)
	case len(resp.Kvs) == 0:
		return nil, 0, fmt.Errorf("verify leadership: leader key %s is gone", el.Key())
	case clientv3.LeaseID(resp.Kvs[0].Lease) != s.Lease() || resp.Kvs[0].CreateRevision != el.Rev():
		return nil, 0, fmt.Errorf("verify leadership: leader key %s has lease %x, create revision %d; want %x, %d",
			el.Key(), resp.Kvs[0].Lease, resp.Kvs[0].CreateRevision, s.Lease(), el.Rev())
	}
	return el, resp.Header.Revision, nil
}

// leadTerm runs lead for one term and returns once lead and the loss
// watcher have returned and, unless leadership was lost, the key is resigned.
func (e *Election) leadTerm(ctx context.Context, s *concurrency.Session, el *concurrency.Election, rev int64, lead func(context.Context, *Leadership) error) time.Duration {
	leaderCtx, cancel := context.WithCancelCause(ctx)
	l := &Leadership{
		key: el.Key(), name: e.cfg.Name, epoch: el.Rev(), revision: rev,
		cli: e.cli, opTimeout: e.cfg.OpTimeout,
		log: e.log.WithField("epoch", el.Rev()), cancel: cancel,
	}
	e.epoch.Store(l.epoch)
	e.leader.Store(true)
	l.log.WithField("key", l.key).Info("became leader")

	// Each watcher returns only once the term's context is done, so either
	// may clear IsLeader: it turns false as soon as the term ends, not only
	// once lead has returned.
	var wg sync.WaitGroup
	wg.Go(func() {
		defer e.leader.Store(false)
		e.watchLease(leaderCtx, s, l)
	})
	wg.Go(func() {
		defer e.leader.Store(false)
		e.watchKey(leaderCtx, l)
	})
	err := lead(leaderCtx, l)
	cancelled := leaderCtx.Err() != nil
	l.end(errTermEnded, false)
	wg.Wait()
	if err != nil && !(cancelled && errors.Is(err, context.Canceled)) {
		l.log.WithError(err).Warn("lead function failed")
	}
	backoff := time.Duration(l.backoff.Load())
	if l.lost != nil {
		return backoff // the key is gone or not ours to trust; closeSession revokes what is left
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.OpTimeout)
	defer rcancel()
	if err := el.Resign(rctx); err != nil {
		l.log.WithError(err).Warn("resign leadership")
		return backoff
	}
	l.log.Info("resigned leadership")
	return backoff
}

// watchLease ends l as lost when s ends or the lease's keep-alives go
// unacknowledged for TTL; it returns when ctx (the term's context) is done.
func (e *Election) watchLease(ctx context.Context, s *concurrency.Session, l *Leadership) {
	// The session ends only when the client's lessor gives up on the lease:
	// TTL after the last keep-alive response, checked once a second, or
	// DialTimeout+1s if no response came yet. Tracking the responses here
	// ends the term within about TTL of the last renewal instead.
	kch, err := e.cli.KeepAlive(ctx, s.Lease())
	if err != nil {
		l.end(fmt.Errorf("%w: keep lease alive: %w", ErrNotLeader, err), true)
		return
	}
	ttl := time.Duration(e.cfg.ttlSeconds()) * time.Second
	stale := time.NewTimer(ttl)
	defer stale.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.Done():
			l.end(errSessionDone, true)
			return
		case _, ok := <-kch:
			if !ok {
				if ctx.Err() == nil {
					l.end(errSessionDone, true)
				}
				return
			}
			stale.Reset(ttl)
		case <-stale.C:
			l.end(errLeaseStale, true)
			return
		}
	}
}

// watchKey ends l as lost when the leader key is deleted or replaced; it
// returns when ctx (the term's context) is done. It is separate from
// watchLease because Watch blocks until its stream is open, which takes as
// long as etcd is unreachable.
//
// A broken watch is not a loss by itself: a raft leader election in etcd
// cancels every RequireLeader watch, and stepping down for it would make
// leadership flap whenever etcd changes its own leader. The watch resumes
// from the last revision seen, so a deletion in the gap is still observed;
// if that revision was compacted, a Get decides. While etcd stays
// unreachable, watchLease ends the term when the lease goes stale.
func (e *Election) watchKey(ctx context.Context, l *Leadership) {
	// From the epoch itself, not epoch+1: a watch starting past etcd's
	// revision holds back progress notifications for every watch sharing
	// its gRPC stream. The creation event has CreateRevision == epoch and
	// is not a loss.
	rev := l.epoch
	for ctx.Err() == nil {
		next, lost := e.watchKeyFrom(ctx, l, rev)
		if lost != nil {
			l.end(lost, true)
			return
		}
		rev = next
		if !e.pauseShort(ctx) {
			return
		}
	}
}

// watchKeyFrom watches the leader key from rev until the watch breaks. It
// returns the revision to resume from, or the reason leadership is lost.
func (e *Election) watchKeyFrom(ctx context.Context, l *Leadership, rev int64) (next int64, lost error) {
	// WithRequireLeader fails the watch if the member loses its raft leader,
	// instead of silently serving a stale view.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range e.cli.Watch(wctx, l.key, clientv3.WithRev(rev)) {
		if ctx.Err() != nil {
			return rev, nil
		}
		if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
			return e.verifyKey(ctx, l)
		}
		if err := wr.Err(); err != nil {
			e.log.WithError(err).Debug("leader key watch broke; resuming")
			return rev, nil
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return rev, errKeyDeleted
			}
			if ev.Kv.CreateRevision != l.epoch {
				return rev, errKeyReplaced
			}
			rev = ev.Kv.ModRevision
		}
	}
	return rev, nil
}

// verifyKey reads the leader key after its watch history was compacted.
func (e *Election) verifyKey(ctx context.Context, l *Leadership) (next int64, lost error) {
	gctx, cancel := context.WithTimeout(ctx, e.cfg.OpTimeout)
	defer cancel()
	resp, err := e.cli.Get(gctx, l.key)
	switch {
	case err != nil:
		// Unknown; the lease watcher ends the term if etcd stays away.
		return l.epoch, nil
	case len(resp.Kvs) == 0:
		return 0, errKeyDeleted
	case resp.Kvs[0].CreateRevision != l.epoch:
		return 0, errKeyReplaced
	}
	return resp.Header.Revision, nil
}

// pauseShort waits about 100ms before a watch is resumed; it reports false
// if ctx ended first.
func (e *Election) pauseShort(ctx context.Context) bool {
	return backoff.Sleep(ctx, backoff.SpreadOf(100*time.Millisecond))
}

// pause waits a jittered RetryInterval; it reports false if ctx ended first.
func (e *Election) pause(ctx context.Context) bool {
	return backoff.Sleep(ctx, backoff.SpreadOf(e.cfg.RetryInterval))
}

// Leadership is one term of leadership. Its methods are safe for concurrent
// use and remain callable after the term ended (Txn then fails).
type Leadership struct {
	key       string
	name      string
	epoch     int64
	revision  int64
	cli       *clientv3.Client
	opTimeout time.Duration
	log       *logrus.Entry

	once    sync.Once
	cancel  context.CancelCauseFunc // cancels the term's context
	lost    error                   // why the term was lost; nil if it ended otherwise; written under once
	backoff atomic.Int64            // StepDown's back-off, in nanoseconds
}

// errSteppedDown ends a term given up with StepDown.
var errSteppedDown = errors.New("election: leader stepped down")

// StepDown ends the term on the leader's own initiative: the term's context
// is cancelled at once, the key is resigned once the lead function has
// returned (a successor can win within milliseconds), and Run stays out of
// the election for backoff before campaigning again. Use it when this
// replica cannot do the leader's work but another could. It does not block;
// only the first end of a term counts.
func (l *Leadership) StepDown(backoff time.Duration) {
	l.backoff.CompareAndSwap(0, int64(max(0, backoff)))
	l.end(errSteppedDown, false)
}

// Key returns the term's leader key, Prefix+"/"+<lease ID in hex>.
func (l *Leadership) Key() string { return l.key }

// Epoch returns the leader key's create revision, the term's fencing token.
// It is larger for every later term, whichever replica holds it.
func (l *Leadership) Epoch() int64 { return l.epoch }

// Name returns the leader's name, the leader key's value.
func (l *Leadership) Name() string { return l.name }

// Revision returns the etcd revision at which this term's leadership was
// verified. Every write of an earlier term is at or below it, so a leader
// that acts on state read at this revision or later sees all of them.
func (l *Leadership) Revision() int64 { return l.revision }

// Txn commits ops atomically if the leader key still exists with create
// revision Epoch and all of cmps hold. It blocks for one etcd round trip,
// bounded by ctx's deadline, or by OpTimeout if ctx has none.
//
// If the fence fails, Txn cancels the term's context and returns
// (nil, ErrNotLeader). If the fence holds but some of cmps fail, it returns
// a response with Succeeded false and a nil error, and leadership continues.
// If the fence and cmps hold, Succeeded is true and Responses holds the
// results of ops. Other errors come from etcd; the write may or may not have
// been applied, but never after the term's key is gone.
func (l *Leadership) Txn(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.opTimeout)
		defer cancel()
	}
	// The nested txn tells a failed fence (outer Succeeded false) from
	// failed caller compares (inner Succeeded false).
	fence := clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.epoch)
	resp, err := l.cli.Txn(ctx).If(fence).Then(clientv3.OpTxn(cmps, ops, nil)).Commit()
	if err != nil {
		return nil, fmt.Errorf("commit fenced txn: %w", err)
	}
	if !resp.Succeeded {
		l.end(errFenceFailed, true)
		return nil, ErrNotLeader
	}
	inner := (*clientv3.TxnResponse)(resp.Responses[0].GetResponseTxn())
	inner.Header = resp.Header
	return inner, nil
}

// end finishes the term, cancelling its context with reason; lost marks a
// detected loss, which is logged. Only the first call has an effect.
func (l *Leadership) end(reason error, lost bool) {
	l.once.Do(func() {
		if lost {
			l.lost = reason
			l.log.WithField("reason", reason.Error()).Info("lost leadership")
		}
		l.cancel(reason)
	})
}
