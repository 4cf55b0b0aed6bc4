// Package prober is the leader's health checker. It probes every registered
// tcp-server with a TCP connect, applies rise/fall hysteresis, and writes
// health records to etcd through the leader's fenced writer: only on
// transitions and on a slow refresh, batched into transactions, never one
// write per probe.
//
// A server with a status URL is also pulled for its status document (see
// Status) after each successful connect; a failed pull counts as a failed
// probe. The load it reports is smoothed (EWMA), run through overload
// hysteresis, and written into the same health record, again only when it
// changed meaningfully (5 points of load, 5% of conns, a state change) or
// every LoadRefresh.
//
// A failed probe is a verdict on the server only when the failure came from
// the network or the server: errors that describe the prober's own host
// (see classify.go) leave the server as it was. A round that would take
// more than Config.SuspectShare of the up servers down at once waits for
// other replicas to confirm (see judge, OpinionHandler and Directory), and
// a leader that keeps failing its own checks returns ErrSelfFault so that
// its caller steps down.
//
// A prober runs only while its replica leads: Run receives the leadership
// context and returns when it is cancelled. A new leader starts from the
// health records already in etcd, so a failover neither marks every server
// down nor resurrects a dead one.
package prober

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/election"
	"github.com/tcpdispatch/tcpdispatch/internal/logging"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// Config configures a Prober.
type Config struct {
	// Interval is the time between two probes of one server. Default 1s.
	Interval time.Duration
	// Timeout bounds one probe (TCP connect). Default 500ms; must be below
	// Interval.
	Timeout time.Duration
	// Rise is how many consecutive successes bring a down server up.
	// Default 2.
	Rise int
	// Fall is how many consecutive failures take an up server down.
	// Default 2.
	Fall int
	// Concurrency bounds the probes in flight at once. Default 64.
	Concurrency int
	// RefreshInterval is how often every record is rewritten even without a
	// transition, so its checked_at shows the leader is alive. Default 30s.
	RefreshInterval time.Duration
	// BatchSize is the number of writes per transaction, at most
	// election.MaxTxnOps (what a fenced transaction can carry under etcd's
	// default --max-txn-ops). Default 100.
	BatchSize int
	// OpTimeout bounds each etcd transaction. Default 2s.
	OpTimeout time.Duration
	// LoadRefresh is how often a load report is rewritten even without a
	// meaningful change, so replicas can tell a steady server from a
	// leader that stopped pulling. Default 10s; below Interval it means
	// every round.
	LoadRefresh time.Duration
	// ReportTTL is how long replicas use a load report after its pull
	// (written into the record as report_expires). Default 30s; zero
	// means 3 × LoadRefresh (30s with the default LoadRefresh); must
	// exceed LoadRefresh.
	ReportTTL time.Duration
	// LoadSmoothing is the EWMA weight of a new load sample, in (0, 1];
	// 1 disables smoothing. Default 0.5 (a change is half felt after one
	// interval, 94% after four).
	LoadSmoothing float64
	// SuspectShare: a round whose failures would take more than this share
	// of the up servers down at once (and at least SuspectMin of them)
	// makes the leader suspect, and those down-verdicts wait for a second
	// opinion from other replicas (see judge). In (0, 1]; 1 turns the
	// check off. Default 0.5.
	SuspectShare float64
	// SuspectMin is the fewest down-verdicts of one round that can make it
	// suspect. Default 2.
	SuspectMin int
	// SelfFaultRounds is how many consecutive rounds the leader may fail
	// its own checks (most probes failing on its own host, or other
	// replicas reaching servers it cannot, or nobody confirming a suspect
	// round) before Run returns ErrSelfFault. Default 3.
	SelfFaultRounds int
	// SelfFaultBackoff is how long a leader that gave up for ErrSelfFault
	// stays out of the election (applied by the caller). Default 10s: long
	// enough for another replica to take over and probe, short enough that
	// the replica is a candidate again before another fault needs it.
	SelfFaultBackoff time.Duration
	// OpinionTimeout bounds one request for a second opinion. Zero (the
	// default) means Timeout + 500ms; else it must exceed Timeout.
	OpinionTimeout time.Duration
	// StarvationSlack is how late a probe's timeout, or a round, may fire
	// before the prober counts itself starved of CPU: a timeout later than
	// Timeout + StarvationSlack is the prober's fault, not the server's.
	// Zero (the default) means Timeout / 2.
	StarvationSlack time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Targets is the policy every probe and status pull dials under: a
	// connection to an address outside it (a host name resolving there)
	// fails. The zero value is the default policy.
	Targets store.TargetPolicy
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Interval:        time.Second,
		Timeout:         500 * time.Millisecond,
		Rise:            2,
		Fall:            2,
		Concurrency:     64,
		RefreshInterval: 30 * time.Second,
		BatchSize:       100,
		OpTimeout:       2 * time.Second,
		LoadRefresh:     10 * time.Second,
		ReportTTL:       30 * time.Second,
		LoadSmoothing:   0.5,
		Now:             time.Now,

		SuspectShare:     0.5,
		SuspectMin:       2,
		SelfFaultRounds:  3,
		SelfFaultBackoff: 10 * time.Second,
	}
}

// Validate checks c's cross-field rules.
func (c Config) Validate() error {
	switch {
	case c.Interval <= 0 || c.Timeout <= 0:
		return errors.New("prober: interval and timeout must be positive")
	case c.Timeout >= c.Interval:
		return fmt.Errorf("prober: timeout (%v) must be below interval (%v)", c.Timeout, c.Interval)
	case c.Rise < 1 || c.Fall < 1:
		return errors.New("prober: rise and fall must be at least 1")
	case c.Concurrency < 1 || c.BatchSize < 1 || c.BatchSize > election.MaxTxnOps:
		return fmt.Errorf("prober: concurrency must be >= 1 and batch size in 1..%d", election.MaxTxnOps)
	case c.RefreshInterval < c.Interval:
		return errors.New("prober: refresh interval must be at least the probe interval")
	case c.OpTimeout <= 0:
		return errors.New("prober: op timeout must be positive")
	case c.LoadRefresh <= 0:
		return errors.New("prober: load refresh must be positive")
	case c.ReportTTL <= c.LoadRefresh:
		return fmt.Errorf("prober: report TTL (%v) must exceed the load refresh (%v)", c.ReportTTL, c.LoadRefresh)
	case !(c.LoadSmoothing > 0 && c.LoadSmoothing <= 1):
		return errors.New("prober: load smoothing must be in (0, 1]")
	case !(c.SuspectShare > 0 && c.SuspectShare <= 1):
		return errors.New("prober: suspect share must be in (0, 1]")
	case c.SuspectMin < 1 || c.SelfFaultRounds < 1:
		return errors.New("prober: suspect min and self-fault rounds must be at least 1")
	case c.SelfFaultBackoff <= 0 || c.StarvationSlack < 0:
		return errors.New("prober: self-fault backoff must be positive and starvation slack not negative")
	case c.OpinionTimeout != 0 && c.OpinionTimeout <= c.Timeout:
		return fmt.Errorf("prober: opinion timeout (%v) must exceed the probe timeout (%v)", c.OpinionTimeout, c.Timeout)
	}
	return nil
}

// withDefaults returns c with each zero field replaced by its DefaultConfig
// value, or, for the fields documented as derived (ReportTTL,
// OpinionTimeout, StarvationSlack), by the value derived from the others.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.Interval = cmp.Or(c.Interval, d.Interval)
	c.Timeout = cmp.Or(c.Timeout, d.Timeout)
	c.Rise = cmp.Or(c.Rise, d.Rise)
	c.Fall = cmp.Or(c.Fall, d.Fall)
	c.Concurrency = cmp.Or(c.Concurrency, d.Concurrency)
	c.RefreshInterval = cmp.Or(c.RefreshInterval, d.RefreshInterval)
	c.BatchSize = cmp.Or(c.BatchSize, d.BatchSize)
	c.OpTimeout = cmp.Or(c.OpTimeout, d.OpTimeout)
	c.LoadRefresh = cmp.Or(c.LoadRefresh, d.LoadRefresh)
	c.ReportTTL = cmp.Or(c.ReportTTL, 3*c.LoadRefresh)
	c.LoadSmoothing = cmp.Or(c.LoadSmoothing, d.LoadSmoothing)
	if c.Now == nil {
		c.Now = d.Now
	}
	c.SuspectShare = cmp.Or(c.SuspectShare, d.SuspectShare)
	c.SuspectMin = cmp.Or(c.SuspectMin, d.SuspectMin)
	c.SelfFaultRounds = cmp.Or(c.SelfFaultRounds, d.SelfFaultRounds)
	c.SelfFaultBackoff = cmp.Or(c.SelfFaultBackoff, d.SelfFaultBackoff)
	c.OpinionTimeout = cmp.Or(c.OpinionTimeout, c.Timeout+500*time.Millisecond)
	c.StarvationSlack = cmp.Or(c.StarvationSlack, c.Timeout/2)
	return c
}

// RoundBound is how long one round over n servers takes at most when every
// probe times out: ⌈n / Concurrency⌉ × Timeout.
func (c Config) RoundBound(n int) time.Duration {
	if n <= 0 || c.Concurrency < 1 {
		return 0
	}
	return time.Duration((n+c.Concurrency-1)/c.Concurrency) * c.Timeout
}

// CheckFleet reports an error when a round over n servers can outlast
// Interval (see RoundBound): then, while many servers time out, each is
// probed less often than Interval and failures are detected late. It is a
// warning for the operator, not a reason to stop: the fleet size is only
// known at run time and changes.
func (c Config) CheckFleet(n int) error {
	b := c.RoundBound(n)
	if b <= c.Interval {
		return nil
	}
	err := fmt.Errorf("prober: %d servers at probe-concurrency %d and probe-timeout %v take up to %v a round, more than probe-interval %v",
		n, c.Concurrency, c.Timeout, b, c.Interval)
	if waves := int(c.Interval / c.Timeout); waves >= 1 {
		err = fmt.Errorf("%w; raise probe-concurrency to at least %d", err, (n+waves-1)/waves)
	}
	return err
}

// Snapshots is where the prober learns the registered servers and the
// health already recorded. *store.Watcher implements it.
type Snapshots interface {
	Snapshot() *store.Snapshot
}

// Writer commits fenced writes. *election.Leadership implements it; Txn must
// return election.ErrNotLeader when the fence fails.
type Writer interface {
	Txn(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (*clientv3.TxnResponse, error)
	Epoch() int64
	Name() string
}

var _ Writer = (*election.Leadership)(nil)

// Prober probes tcp-servers while its replica leads.
type Prober struct {
	cfg    Config
	keys   keyspace.Layout
	snaps  Snapshots
	log    *logrus.Entry
	dialer net.Dialer
	http   *http.Client
	// peerHTTP asks other replicas for second opinions.
	peerHTTP *http.Client
	metrics  *metrics

	rbMetrics *rebalanceMetrics
	class     classifier
	peers     Peers // nil: no second opinions

	// lastPeers is the last non-empty peer list, seen at lastPeersAt; only
	// Run's goroutine uses them (see listPeers).
	lastPeers   []Peer
	lastPeersAt time.Time
}

// UsePeers makes a suspect round ask peers for a second opinion (see
// judge). Call it before Run.
func (p *Prober) UsePeers(peers Peers) { p.peers = peers }

// New returns a prober of the servers in snaps; keys is the etcd layout the
// health records are written to. Zero fields of cfg take their defaults.
func New(cfg Config, keys keyspace.Layout, snaps Snapshots, log *logrus.Entry, reg prometheus.Registerer) (*Prober, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = logging.OrDiscard(log)
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	rbm, err := newRebalanceMetrics(reg)
	if err != nil {
		return nil, err
	}
	// No keep-alives: a pull per server per interval is cheap, and idle
	// connections would outlive the leadership term that opened them.
	dialer := net.Dialer{Timeout: cfg.Timeout, Control: cfg.Targets.Control}
	hc := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
			DialContext: dialer.DialContext, MaxResponseHeaderBytes: 16 << 10},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	// Other replicas are not targets: the target policy, which bounds
	// what operator-written addrs may reach, does not apply to them.
	peerDialer := net.Dialer{Timeout: cfg.Timeout}
	peerHTTP := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
			DialContext: peerDialer.DialContext, MaxResponseHeaderBytes: 16 << 10},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Prober{cfg: cfg, keys: keys, snaps: snaps, log: log, metrics: m, rbMetrics: rbm, dialer: dialer, http: hc, peerHTTP: peerHTTP,
		class: classifier{timeout: cfg.Timeout, slack: cfg.StarvationSlack}}, nil
}

// target is one server to probe in a round.
type target struct {
	id, addr, statusURL string
	ok                  bool
	reason              string
	status              *Status // the pulled document; nil without one
	shed                int64   // connections to ask the server to shed (rebalancing)
	// local marks a failure on the prober's own host: not a verdict.
	local bool
	// skip keeps the result from moving the server's tracker (see judge).
	skip bool
}

// Run probes until ctx (the leadership context) is cancelled, writing
// through w. It returns nil on cancellation and election.ErrNotLeader when a
// write finds leadership lost; other etcd errors are logged and the
// unwritten records retried next round.
func (p *Prober) Run(ctx context.Context, w Writer) error {
	log := p.log.WithField("epoch", w.Epoch())
	trackers := make(map[string]*tracker)
	loads := make(map[string]*loadTracker)
	pending := make(map[string]store.Health) // records not yet written
	lastRefresh := p.cfg.Now()
	seeded, firstRound := false, true
	rb := newRebalancer()
	token, faults := "", 0

	// Jitter the first round so replicas that win in turn after a flapping
	// etcd do not probe in lockstep with a fixed phase.
	first := time.Duration(rand.Int64N(max(1, int64(p.cfg.Interval)/4)))
	timer := time.NewTimer(first)
	defer timer.Stop()
	due := time.Now().Add(first)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		// How late the round starts: scheduling lag of a starved process.
		lag := max(0, time.Since(due))
		p.metrics.lag.Observe(lag.Seconds())
		start := p.cfg.Now()
		snap := p.snaps.Snapshot()
		if snap == nil {
			timer.Reset(p.cfg.Interval)
			due = time.Now().Add(p.cfg.Interval)
			continue
		}
		if token == "" && p.peers != nil {
			var err error
			if token, err = p.writeToken(ctx, w); errors.Is(err, election.ErrNotLeader) {
				return err
			} else if err != nil && ctx.Err() == nil {
				log.WithError(err).Warn("write opinion token; retrying next round")
			}
		}
		if !seeded {
			p.seed(snap, trackers, loads)
			seeded = true
		}
		targets := p.targets(snap, trackers, loads, pending)
		p.planRebalance(rb, snap, targets, trackers, loads, start, p.rebalanceMaxAge(), log)
		p.probe(ctx, targets, lag)
		if ctx.Err() != nil {
			return nil
		}
		if fault := p.judge(ctx, targets, trackers, token); fault != "" {
			faults++
			p.metrics.selfFaultRounds.Inc()
			log.WithField("rounds", faults).Warn("this leader failed its own checks: " + fault)
			if faults >= p.cfg.SelfFaultRounds && p.hasPeers(ctx) {
				return fmt.Errorf("%w: %d rounds in a row, last: %s", ErrSelfFault, faults, fault)
			}
		} else {
			faults = 0
		}
		if ctx.Err() != nil {
			return nil
		}
		now := p.cfg.Now()
		// The first round of a term rewrites every record: readers then see
		// which epoch vouches for each verdict, and the term's first fenced
		// write proves the takeover without waiting for a transition.
		refresh := firstRound || now.Sub(lastRefresh) >= p.cfg.RefreshInterval
		for _, t := range targets {
			if t.skip {
				// Not a verdict: the record stays as it is, unrefreshed.
				continue
			}
			tr := trackers[t.id]
			changed := tr.observe(t.ok, t.reason, now, p.cfg.Rise, p.cfg.Fall)
			if changed {
				p.metrics.transitions.Inc()
				log.WithFields(logrus.Fields{"server": t.id, "addr": t.addr, "up": tr.status == statusUp, "reason": t.reason}).Info("server health changed")
			}
			lt := loads[t.id]
			lt.observe(t.status, now, p.cfg.LoadSmoothing, snap.Balancing.OverloadThreshold, snap.Balancing.OverloadRecover)
			if lt.overloaded != lt.wOverloaded && lt.has {
				log.WithFields(logrus.Fields{"server": t.id, "overloaded": lt.overloaded, "load": lt.last.Utilization()}).Info("server overload changed")
			}
			if changed || refresh || !recorded(snap, t.id, tr) || lt.dirty(now, p.cfg.LoadRefresh) || rb.dirty(&t) {
				h := store.Health{Addr: tr.addr, Healthy: tr.status == statusUp, Since: tr.since,
					CheckedAt: now, Reason: tr.reason, Epoch: w.Epoch(), Leader: w.Name()}
				lt.fill(&h, p.cfg.ReportTTL)
				rb.fill(&h, &t)
				// Marked written now: a failed flush keeps h pending and
				// retries it, and a newer change replaces it.
				lt.markWritten(h)
				pending[t.id] = h
			}
		}
		if refresh {
			lastRefresh = now
		}
		firstRound = false
		if err := p.flush(ctx, w, snap, pending); err != nil {
			if errors.Is(err, election.ErrNotLeader) {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
			log.WithError(err).Warn("write health records; retrying next round")
		}
		p.metrics.rounds.Inc()
		wait := max(0, p.cfg.Interval-p.cfg.Now().Sub(start))
		timer.Reset(wait)
		due = time.Now().Add(wait)
	}
}

// seed initialises trackers from the records a previous leader wrote.
func (p *Prober) seed(snap *store.Snapshot, trackers map[string]*tracker, loads map[string]*loadTracker) {
	for _, s := range snap.Servers {
		if s.Report == store.ReportFresh {
			// What etcd holds, so an unchanged load is not rewritten at
			// once by every new leader.
			loads[s.ID] = &loadTracker{written: true, wLoad: s.Load, wConns: s.Conns, wOverloaded: s.Overloaded,
				wDraining: s.Draining && s.Weight > 0, wAt: s.ReportedAt, overloaded: s.Overloaded, ewma: s.Load, has: false}
		}
		if s.State == store.HealthUnknown {
			continue
		}
		st := statusDown
		if s.Healthy {
			st = statusUp
		}
		trackers[s.ID] = &tracker{addr: s.Addr, status: st, since: s.Since, reason: s.Reason}
	}
}

// recorded reports whether etcd already holds tr's verdict for id.
func recorded(snap *store.Snapshot, id string, tr *tracker) bool {
	s := snap.Lookup(id)
	return s != nil && s.State != store.HealthUnknown && s.Addr == tr.addr && s.Healthy == (tr.status == statusUp)
}

// targets lists the servers to probe and drops state of removed ones.
func (p *Prober) targets(snap *store.Snapshot, trackers map[string]*tracker, loads map[string]*loadTracker, pending map[string]store.Health) []target {
	out := make([]target, 0, len(snap.Servers))
	live := make(map[string]bool, len(snap.Servers))
	for _, s := range snap.Servers {
		if s.Addr == "" {
			continue
		}
		live[s.ID] = true
		tr := trackers[s.ID]
		if tr == nil || tr.addr != s.Addr {
			// A new address starts without a verdict: the old one's
			// says nothing about it.
			tr = &tracker{addr: s.Addr}
			trackers[s.ID] = tr
			delete(loads, s.ID)
		}
		if loads[s.ID] == nil {
			loads[s.ID] = &loadTracker{}
		}
		out = append(out, target{id: s.ID, addr: s.Addr, statusURL: s.StatusURL})
	}
	for id := range trackers {
		if !live[id] {
			delete(trackers, id)
		}
	}
	for id := range loads {
		if !live[id] {
			delete(loads, id)
		}
	}
	for id := range pending {
		if !live[id] {
			delete(pending, id)
		}
	}
	return out
}

// probe runs one TCP connect per target, at most Concurrency at once, and
// fills in the results.
func (p *Prober) probe(ctx context.Context, targets []target, lag time.Duration) {
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(p.cfg.Concurrency, len(targets)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				t := &targets[i]
				t.ok, t.reason, t.local = p.check(ctx, t.addr, lag)
				if t.ok && t.statusURL != "" {
					start := time.Now()
					st, err := pullStatus(ctx, p.http, shedURL(t.statusURL, t.shed), p.cfg.Timeout)
					if err != nil {
						p.metrics.statusFailures.Inc()
						t.ok, t.reason = false, err.Error()
						t.local = p.class.isLocal(t.addr, err, time.Since(start), lag)
					} else {
						t.status = &st
					}
				}
			}
		}()
	}
	for i := range targets {
		select {
		case work <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
}

// check connects to addr once. local reports a failure that describes the
// prober's own host (see classifier); lag is how late the round started.
func (p *Prober) check(ctx context.Context, addr string, lag time.Duration) (ok bool, reason string, local bool) {
	start := time.Now()
	conn, err := p.dialer.DialContext(ctx, "tcp", addr)
	elapsed := time.Since(start)
	p.metrics.latency.Observe(elapsed.Seconds())
	if err != nil {
		if p.class.isLocal(addr, err, elapsed, lag) {
			p.metrics.localFailures.Inc()
			return false, "prober's own fault: " + err.Error(), true
		}
		p.metrics.failures.Inc()
		return false, err.Error(), false
	}
	conn.Close()
	return true, "", false
}

// hasPeers reports whether other replicas are registered that could lead
// instead; when unsure (etcd unreadable) it says yes.
func (p *Prober) hasPeers(ctx context.Context) bool {
	if p.peers == nil {
		return false
	}
	peers, err := p.listPeers(ctx)
	return err != nil || len(peers) > 0
}

// flush writes pending records and deletes records of servers that are no
// longer registered, in fenced transactions of at most BatchSize writes.
// Records that were written are removed from pending.
func (p *Prober) flush(ctx context.Context, w Writer, snap *store.Snapshot, pending map[string]store.Health) error {
	var ops []clientv3.Op
	var ids []string
	for id, h := range pending {
		b, err := json.Marshal(h)
		if err != nil {
			return fmt.Errorf("encode health of %s: %w", id, err)
		}
		ops = append(ops, clientv3.OpPut(p.keys.Health(id), string(b)))
		ids = append(ids, id)
	}
	for _, id := range snap.OrphanHealth() {
		// Only if the server is still unregistered when the write lands:
		// the snapshot may be behind a registration made meanwhile.
		unregistered := clientv3.Compare(clientv3.CreateRevision(p.keys.Server(id)), "=", 0).WithPrefix()
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{unregistered}, []clientv3.Op{clientv3.OpDelete(p.keys.Health(id))}, nil))
		ids = append(ids, "")
	}
	for len(ops) > 0 {
		n := min(len(ops), p.cfg.BatchSize)
		tctx, cancel := context.WithTimeout(ctx, p.cfg.OpTimeout)
		_, err := w.Txn(tctx, nil, ops[:n]...)
		cancel()
		if err != nil {
			return err
		}
		p.metrics.txns.Inc()
		p.metrics.writes.Add(float64(n))
		for _, id := range ids[:n] {
			if id != "" {
				delete(pending, id)
			}
		}
		ops, ids = ops[n:], ids[n:]
	}
	return nil
}
