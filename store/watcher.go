package store

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/tcpdispatch/tcpdispatch/internal/backoff"
	"github.com/tcpdispatch/tcpdispatch/internal/logging"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// Config configures a Watcher.
type Config struct {
	// Prefix is the etcd key prefix of the layout (see keyspace.Layout).
	Prefix string
	// ProgressInterval is how often the watcher asks etcd to confirm that the
	// local copy is current (a watch progress request). It bounds the
	// snapshot age reported while etcd is healthy. Default 500ms.
	ProgressInterval time.Duration
	// StaleAfter is the snapshot age past which etcd is reported unreachable.
	// Default 3s; must exceed ProgressInterval.
	StaleAfter time.Duration
	// OpTimeout bounds each list (range) request. Default 5s.
	OpTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential pause between
	// failed attempts to list or watch. Defaults 100ms and 3s.
	MinBackoff, MaxBackoff time.Duration
	// ResolveTimeout bounds one pass of reading etcd's history to resolve
	// invalid operator values (see resolve.go); what is left is retried.
	// Default 2s.
	ResolveTimeout time.Duration
	// ResolveInterval is how often invalid values are resolved again, so
	// that a compaction of their history, or a resolution that failed,
	// converges on every replica. Default 5s.
	ResolveInterval time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Targets restricts the addresses an addr or status-url may name; a
	// value outside it is rejected like any invalid value. The zero value
	// is the default policy.
	Targets TargetPolicy
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Prefix:           keyspace.DefaultPrefix,
		ProgressInterval: 500 * time.Millisecond,
		StaleAfter:       3 * time.Second,
		OpTimeout:        5 * time.Second,
		MinBackoff:       100 * time.Millisecond,
		MaxBackoff:       3 * time.Second,
		ResolveTimeout:   2 * time.Second,
		ResolveInterval:  5 * time.Second,
		Now:              time.Now,
	}
}

// Validate checks the cross-field rules of c.
func (c Config) Validate() error {
	switch {
	case c.ProgressInterval <= 0:
		return errors.New("store: ProgressInterval must be positive")
	case c.StaleAfter <= c.ProgressInterval:
		return fmt.Errorf("store: StaleAfter (%v) must exceed ProgressInterval (%v)", c.StaleAfter, c.ProgressInterval)
	case c.OpTimeout <= 0:
		return errors.New("store: OpTimeout must be positive")
	case c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff:
		return errors.New("store: need 0 < MinBackoff <= MaxBackoff")
	case c.ResolveTimeout <= 0 || c.ResolveInterval <= 0:
		return errors.New("store: ResolveTimeout and ResolveInterval must be positive")
	}
	_, err := keyspace.New(c.Prefix)
	return err
}

// Sync says how current the local copy is known to be.
type Sync struct {
	// Revision is the etcd revision up to which every change under the
	// prefix has been applied.
	Revision int64
	// At is when etcd last confirmed that (by an event or a progress
	// notification); zero before the first list.
	At time.Time
	// Restored is true while the snapshot is one saved by an earlier run
	// and etcd has not confirmed anything to this one yet.
	Restored bool
}

// Watcher keeps an immutable Snapshot of the key space current: it lists the
// prefix at a revision, watches from the next one, resumes a broken watch
// from the last applied revision, and lists again when that revision was
// compacted. While etcd is unreachable the last snapshot stays in place.
type Watcher struct {
	cfg     Config
	keys    keyspace.Layout
	cli     *clientv3.Client
	log     *logrus.Entry
	metrics *metrics

	snap      atomic.Pointer[Snapshot]
	sync      atomic.Pointer[Sync]
	changed   chan struct{} // closed and replaced on every new snapshot
	confirmed chan struct{} // closed and replaced on every confirmation (Sync)
	mu        sync.Mutex    // guards changed and confirmed

	// loggedElection is the election problems last logged (watcher
	// goroutine only).
	loggedElection string

	// beat is the leader's newest heartbeat, shared by every snapshot
	// this watcher publishes: a heartbeat moves verdict ages on without
	// a rebuild (see verdict.go).
	beat atomic.Pointer[Heartbeat]
	// alarms is tcpdispatch_etcd_alarms (see alarms.go).
	alarms *prometheus.GaugeVec
}

// withDefaults returns c with each zero field (an empty Prefix, a nil Now)
// replaced by its DefaultConfig value.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.Prefix = cmp.Or(c.Prefix, d.Prefix)
	c.ProgressInterval = cmp.Or(c.ProgressInterval, d.ProgressInterval)
	c.StaleAfter = cmp.Or(c.StaleAfter, d.StaleAfter)
	c.OpTimeout = cmp.Or(c.OpTimeout, d.OpTimeout)
	c.MinBackoff = cmp.Or(c.MinBackoff, d.MinBackoff)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, d.MaxBackoff)
	c.ResolveTimeout = cmp.Or(c.ResolveTimeout, d.ResolveTimeout)
	c.ResolveInterval = cmp.Or(c.ResolveInterval, d.ResolveInterval)
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// NewWatcher returns a watcher of cli under cfg.Prefix. Zero fields of cfg
// take their DefaultConfig values; the result must pass Config.Validate,
// else NewWatcher returns its error. Metrics are registered on reg when it
// is not nil.
func NewWatcher(cfg Config, cli *clientv3.Client, log *logrus.Entry, reg prometheus.Registerer) (*Watcher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	keys, _ := keyspace.New(cfg.Prefix)
	log = logging.OrDiscard(log)
	w := &Watcher{cfg: cfg, keys: keys, cli: cli, log: log, changed: make(chan struct{}), confirmed: make(chan struct{})}
	m, err := newMetrics(reg, func() float64 { return w.OldestVerdictAge().Seconds() })
	if err != nil {
		return nil, err
	}
	w.metrics = m
	if w.alarms, err = newAlarmMetric(reg); err != nil {
		return nil, err
	}
	w.sync.Store(&Sync{})
	return w, nil
}

// Keys returns the key layout the watcher reads.
func (w *Watcher) Keys() keyspace.Layout { return w.keys }

// Snapshot returns the current snapshot, or nil before the first list
// succeeded. It never blocks.
func (w *Watcher) Snapshot() *Snapshot { return w.snap.Load() }

// Sync returns how current the snapshot is known to be.
func (w *Watcher) Sync() Sync { return *w.sync.Load() }

// Age returns how long ago etcd last confirmed the snapshot is current, or
// -1 before the first list.
func (w *Watcher) Age() time.Duration {
	s := w.sync.Load()
	if s.At.IsZero() {
		return -1
	}
	return w.cfg.Now().Sub(s.At)
}

// OldestVerdictAge returns the age of the oldest health verdict among the
// servers the current snapshot may return (see Snapshot.OldestVerdictAge);
// 0 without a snapshot.
func (w *Watcher) OldestVerdictAge() time.Duration {
	s := w.snap.Load()
	if s == nil {
		return 0
	}
	return s.OldestVerdictAge(w.cfg.Now())
}

// Reachable reports whether etcd confirmed the snapshot to this process
// within StaleAfter.
func (w *Watcher) Reachable() bool {
	age := w.Age()
	return age >= 0 && age <= w.cfg.StaleAfter && !w.sync.Load().Restored
}

// WaitSynced blocks until the snapshot reflects every change up to rev and
// etcd confirmed it to this process (a snapshot restored from disk does not
// count), or until ctx is done, whose error it then returns. A new leader
// calls it with its Leadership.Revision so that it acts on every write of
// the terms before it.
func (w *Watcher) WaitSynced(ctx context.Context, rev int64) error {
	for {
		// Take the channels before the check, so that a change between
		// the two is not missed.
		w.mu.Lock()
		changed, confirmed := w.changed, w.confirmed
		w.mu.Unlock()
		if s := w.sync.Load(); !s.Restored && s.Revision >= rev && w.snap.Load() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-confirmed:
		}
	}
}

// Changed returns a channel that is closed when a snapshot newer than the
// current one is published.
func (w *Watcher) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// Publish installs a snapshot built elsewhere (for example one restored
// from disk) if the watcher has none yet. It reports whether it did.
func (w *Watcher) Publish(s *Snapshot) bool {
	if !w.snap.CompareAndSwap(nil, s) {
		return false
	}
	w.notify()
	return true
}

// Restore installs a snapshot saved earlier, confirmed current by etcd at
// confirmedAt, if the watcher has none yet: a replica restarted while etcd
// has no quorum then answers from it, and reports its true age. The first
// successful listing replaces it. It reports whether it installed s.
func (w *Watcher) Restore(s *Snapshot, confirmedAt time.Time) bool {
	if !w.snap.CompareAndSwap(nil, s) {
		return false
	}
	w.sync.Store(&Sync{Revision: s.Revision, At: confirmedAt, Restored: true})
	w.notify()
	return true
}

func (w *Watcher) notify() {
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// Run keeps the snapshot current until ctx is cancelled, then returns nil.
// Errors talking to etcd are logged and retried with backoff; they never end
// Run.
func (w *Watcher) Run(ctx context.Context) error {
	m := newModel(w.keys)
	m.targets = w.cfg.Targets
	needList := true
	retry := backoff.Exponential{Base: w.cfg.MinBackoff, Cap: w.cfg.MaxBackoff}
	for ctx.Err() == nil {
		if needList {
			if err := w.list(ctx, m); err != nil {
				if ctx.Err() == nil {
					w.log.WithError(err).Warn("list etcd prefix; serving the last snapshot")
				}
				retry.Wait(ctx)
				continue
			}
			needList = false
			retry.Reset()
		}
		relist, delivered, err := w.watch(ctx, m)
		needList = relist
		if ctx.Err() != nil {
			break
		}
		if delivered {
			// A watch that worked for a while breaks for a fresh
			// reason: retry it promptly.
			retry.Reset()
		}
		if err != nil {
			w.log.WithError(err).Warn("watch etcd prefix; resuming")
			retry.Wait(ctx)
		}
	}
	return nil
}

// list replaces the model with a full listing of the prefix.
func (w *Watcher) list(ctx context.Context, m *model) error {
	lctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), w.cfg.OpTimeout)
	defer cancel()
	resp, err := w.cli.Get(lctx, w.keys.Prefix(), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("get %s: %w", w.keys.Prefix(), err)
	}
	m.beginRelist()
	for _, kv := range resp.Kvs {
		w.report(m.putAt(string(kv.Key), kv.Value, version{create: kv.CreateRevision, mod: kv.ModRevision, lease: kv.Lease}))
	}
	m.endRelist()
	m.rev = resp.Header.Revision
	w.storeHeartbeat(m)
	w.metrics.lists.Inc()
	w.resolve(ctx, m, true)
	return w.publish(m, resp.Header.Revision)
}

// watch follows changes after m.rev until the watch breaks. It reports
// whether the model must be listed again (the revision was compacted) and
// whether etcd delivered anything before the break.
func (w *Watcher) watch(ctx context.Context, m *model) (relist, delivered bool, err error) {
	// RequireLeader makes a member cut off from its quorum cancel the watch
	// instead of leaving it silently stale. The stream tag gives this watch
	// a gRPC stream of its own: progress requests are answered per stream,
	// and other watches of the same client must not hold ours back.
	wctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx), "tcpdispatch-stream", "store"))
	defer cancel()
	// Watch from m.rev, not m.rev+1: etcd answers progress requests only
	// once its revision reaches every watch's start revision, so a watch
	// starting in the future would leave the copy's age growing on a quiet
	// cluster. The event at m.rev itself is dropped below.
	heartbeatKey := []byte(w.keys.Heartbeat())
	wch := w.cli.Watch(wctx, w.keys.Prefix(), clientv3.WithPrefix(), clientv3.WithRev(m.rev), clientv3.WithProgressNotify())

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(w.cfg.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				// Errors surface on the watch channel; nothing to do here.
				_ = w.cli.RequestProgress(wctx)
			}
		}
	}()
	defer wg.Wait()
	defer cancel()

	// Slow start and report expiry change effective weights without any
	// etcd event; rebuild fires when the current snapshot says they do.
	rebuild := time.NewTimer(time.Hour)
	defer rebuild.Stop()
	schedule := func() {
		rebuild.Stop()
		if s := w.snap.Load(); s != nil && !s.RebuildAt.IsZero() {
			rebuild.Reset(max(s.RebuildAt.Sub(w.cfg.Now()), 0))
		}
	}
	schedule()
	// Invalid values are resolved again now and then: a compaction may
	// have removed the history that resolved them (see resolve.go). etcd's
	// alarms are listed as often (see alarms.go).
	recheck := time.NewTicker(w.cfg.ResolveInterval)
	defer recheck.Stop()
	// A burst of watch responses (a leader writing many verdicts, one
	// transaction each) is published as one snapshot per publishGap:
	// events are applied as they come, and the build waits for the gap.
	// pending says applied events are not published yet; anything that
	// confirms a revision, or ends the watch, publishes them first.
	coalesce := time.NewTimer(time.Hour)
	coalesce.Stop()
	defer coalesce.Stop()
	pending := false
	var published time.Time
	gap := publishGap
	flush := func() error {
		if !pending {
			return nil
		}
		pending = false
		coalesce.Stop()
		w.resolve(ctx, m, false)
		began := time.Now()
		if err := w.publish(m, m.rev); err != nil {
			return err
		}
		gap = min(max(publishGap, 4*time.Since(began)), maxPublishGap)
		published = w.cfg.Now()
		schedule()
		return nil
	}
	defer func() {
		// Events applied but not published when the watch ends: publish
		// them, so the snapshot never lags a revision m has applied.
		if err := flush(); err != nil && ctx.Err() == nil {
			w.log.WithError(err).Warn("publish the events applied before the watch ended")
		}
	}()
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case <-coalesce.C:
			if err := flush(); err != nil {
				return false, delivered, err
			}
			continue
		case <-recheck.C:
			resolved, alarms := w.resolve(ctx, m, true), w.checkAlarms(ctx, m)
			if resolved || alarms {
				if err := w.publishQuiet(m); err != nil {
					return false, delivered, err
				}
				schedule()
			}
			continue
		case resp, ok = <-wch:
		case <-rebuild.C:
			if err := w.publishQuiet(m); err != nil {
				return false, delivered, err
			}
			schedule()
			continue
		}
		if !ok {
			break
		}
		if resp.CompactRevision != 0 {
			w.metrics.compactions.Inc()
			w.log.WithField("compact_revision", resp.CompactRevision).Warn("watch revision compacted; listing again")
			return true, delivered, nil
		}
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return true, delivered, nil
			}
			return false, delivered, err
		}
		delivered = true
		if resp.IsProgressNotify() {
			if err := flush(); err != nil {
				return false, delivered, err
			}
			w.confirm(resp.Header.Revision)
			continue
		}
		applied, servers := false, false // servers: an event other than the heartbeat
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision <= m.rev {
				w.metrics.staleEvents.Inc()
				continue
			}
			// The heartbeat alone changes no server: it is taken in
			// without a rebuild.
			servers = servers || !bytes.Equal(ev.Kv.Key, heartbeatKey)
			if ev.Type == mvccpb.DELETE {
				m.del(string(ev.Kv.Key))
			} else {
				w.report(m.putAt(string(ev.Kv.Key), ev.Kv.Value,
					version{create: ev.Kv.CreateRevision, mod: ev.Kv.ModRevision, lease: ev.Kv.Lease}))
			}
			applied = true
		}
		if !applied {
			continue
		}
		// Only the events' own revisions are known to be applied: a
		// response's header revision can run ahead of events still queued
		// for this watcher, so it is not used to advance m.rev.
		m.rev = resp.Events[len(resp.Events)-1].Kv.ModRevision
		w.storeHeartbeat(m)
		if !servers {
			// Nothing to rebuild: the snapshot is current at m.rev unless
			// a coalesced publish is still pending.
			if !pending {
				w.confirm(m.rev)
			}
			continue
		}
		if wait := gap - w.cfg.Now().Sub(published); wait > 0 {
			if !pending {
				coalesce.Reset(wait)
			}
			pending = true
			continue
		}
		pending = true
		if err := flush(); err != nil {
			return false, delivered, err
		}
	}
	if ctx.Err() != nil {
		return false, delivered, nil
	}
	return false, delivered, errors.New("watch channel closed")
}

// publishGap is the least time between two snapshots published for watch
// events. A lone change is published at once; during a burst a replica
// builds one snapshot per gap instead of one per transaction, and a change
// waits at most one gap. The gap is publishGap, or four times the last
// build's duration where that is longer (a large fleet on a slow or busy
// machine), up to maxPublishGap: builds then take at most about a quarter
// of a core however long the burst.
const (
	publishGap    = 20 * time.Millisecond
	maxPublishGap = 250 * time.Millisecond
)

// publish builds and installs a snapshot of m, known current at rev.
func (w *Watcher) publish(m *model, rev int64) error {
	if err := w.install(m); err != nil {
		return err
	}
	w.confirm(rev)
	w.notify()
	return nil
}

// publishQuiet rebuilds the snapshot of m for time-dependent weights; it
// confirms no revision, since etcd was not asked.
func (w *Watcher) publishQuiet(m *model) error {
	w.metrics.timedRebuilds.Inc()
	if err := w.install(m); err != nil {
		return err
	}
	w.notify()
	return nil
}

// storeHeartbeat makes m's heartbeat the one every published snapshot
// reports ages with.
func (w *Watcher) storeHeartbeat(m *model) {
	if cur := w.beat.Load(); cur == nil || *cur != m.heartbeat {
		hb := m.heartbeat
		w.beat.Store(&hb)
	}
}

// install builds and stores a snapshot of m; the caller notifies.
func (w *Watcher) install(m *model) error {
	s, err := m.build(w.cfg.Now())
	if err != nil {
		// A build error is a bug (balancer rejected valid input); keep
		// serving the previous snapshot.
		return fmt.Errorf("build snapshot at revision %d: %w", m.rev, err)
	}
	s.verdicts.live = &w.beat
	if s.MassRemoval != "" {
		w.metrics.massRemovals.Inc()
		w.log.WithFields(logrus.Fields{"revision": m.rev, "policy": s.Balancing.MassRemoval}).
			Error("MASS REMOVAL: " + s.MassRemoval + "; check the leader's probes and recent operator changes")
	}
	if p := strings.Join(s.electionProblems, "; "); p != w.loggedElection {
		w.loggedElection = p
		if p != "" {
			w.log.WithField("revision", m.rev).Error("ELECTION BLOCKED: " + p)
		}
	}
	w.metrics.builds.Inc()
	if prev := w.snap.Swap(s); prev != nil && prev.LeaderEpoch != s.LeaderEpoch {
		w.metrics.leaderChanges.Inc()
	}
	w.metrics.revision.Set(float64(m.rev))
	w.metrics.allDown.Set(0)
	if s.AllDown {
		w.metrics.allDown.Set(1)
	}
	w.metrics.servers.Set(float64(len(s.Servers)))
	w.metrics.eligible.Set(float64(s.Eligible()))
	w.metrics.panic.Set(0)
	if s.Panic {
		w.metrics.panic.Set(1)
	}
	return nil
}

// confirm records that every change up to rev has been applied. The
// revision of a restored snapshot is the file's word, not etcd's: the
// first confirmation replaces it rather than keeping the larger one.
func (w *Watcher) confirm(rev int64) {
	prev := w.sync.Load()
	if !prev.Restored {
		rev = max(prev.Revision, rev)
	}
	w.sync.Store(&Sync{Revision: rev, At: w.cfg.Now()})
	w.mu.Lock()
	close(w.confirmed)
	w.confirmed = make(chan struct{})
	w.mu.Unlock()
}

func (w *Watcher) report(r *rejected) {
	if r == nil {
		return
	}
	w.metrics.invalid.Inc()
	w.log.WithField("key", r.key).WithError(r.err).Warn("ignoring invalid value; resolving it to the last valid one in etcd's history")
}
