// Package prober is the leader's health checker. It probes every registered
// tcp-server with a TCP connect, once per interval at the server's own phase
// (probes are spread over the interval, so a server that times out delays
// nobody: see schedule.go), applies rise/fall hysteresis, and writes health
// records to etcd through the leader's fenced writer: only on transitions
// and at the start of its term, batched into transactions, never one write
// per probe. Once per interval it writes a heartbeat (store.Keys.Heartbeat)
// from which replicas derive how old the verdicts they serve are. After a
// successful probe it keeps one idle connection to the server open (see
// link.go): a process that dies with its host up closes it at once, a death
// notice that takes the server down within milliseconds.
//
// A server with a status URL is also pulled for its status document (see
// Status) after each successful connect, on a kept-alive connection; a
// failed pull counts as a failed probe. The load it reports is smoothed
// (EWMA), run through overload hysteresis, and written into the same health
// record only when it changed meaningfully (5 points of load, 5% of conns,
// a state change), batched once per interval.
//
// A failed probe is a verdict on the server only when the failure came from
// the network or the server: errors that describe the prober's own host
// (see classify.go) leave the server as it was. Results that would take
// more than Config.SuspectShare of the up servers down at once wait for
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
	// Concurrency is the fewest probes the prober keeps in flight at once;
	// the capacity grows with the fleet to Concurrency + 1.5 × servers ×
	// Timeout ÷ Interval (every server dead and timing out still fits,
	// with room for phases that bunch up), at most MaxInFlight. Default 64.
	Concurrency int
	// MaxInFlight bounds the probes in flight at once, hence the sockets
	// they hold (never below Concurrency); it is further capped at half
	// the process's open-file limit. A probe that finds no room is started late, and its timeout
	// then counts as the prober's own fault (see classify.go), not the
	// server's. Default 4096.
	MaxInFlight int
	// MaxLinks bounds the persistent connections the leader holds, one
	// per server (see link.go); it is further capped by the open-file
	// limit. Default 10000.
	MaxLinks int
	// DisableLinks turns persistent connections off: death is then
	// noticed by the regular probes only.
	DisableLinks bool
	// Recheck is how often a server that something else vouches for is
	// still connect-probed: an open persistent connection (link.go) or a
	// status document pulled on a kept-alive connection proves it up
	// every interval without a handshake, so its connect probe runs only
	// this often (what it adds: a listener closed while the process and
	// its connections live on). At most Interval means every interval.
	// Default 5s.
	Recheck time.Duration
	// RefreshInterval, when set, rewrites every record this often even
	// without a transition. Zero (the default) never does: the heartbeat
	// proves the records current (see HeartbeatInterval).
	RefreshInterval time.Duration
	// HeartbeatInterval is how often the leader writes its heartbeat key
	// (store.Keys.Heartbeat), from which replicas derive verdict ages and
	// keep load reports in use. Zero means Interval; negative turns the
	// heartbeat off (verdict ages then grow from each record's
	// checked_at).
	HeartbeatInterval time.Duration
	// BatchSize is the number of writes per transaction, at most
	// election.MaxTxnOps (what a fenced transaction can carry under etcd's
	// default --max-txn-ops). Default 100.
	BatchSize int
	// OpTimeout bounds each etcd transaction. Default 2s.
	OpTimeout time.Duration
	// LoadRefresh, when set, rewrites a load report this often even
	// without a meaningful change. Zero (the default) never does: the
	// leader's heartbeat keeps the reports of its epoch in use, and a
	// leader that stops pulling stops its heartbeat.
	LoadRefresh time.Duration
	// ReportTTL is how long replicas use a load report after its pull or
	// after the last heartbeat of the epoch that wrote it (the record
	// carries report_expires = pull + ReportTTL). Default 30s (3 ×
	// LoadRefresh when that is set); must exceed LoadRefresh.
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
		Interval:      time.Second,
		Timeout:       500 * time.Millisecond,
		Rise:          2,
		Fall:          2,
		Concurrency:   64,
		MaxInFlight:   4096,
		MaxLinks:      10000,
		Recheck:       5 * time.Second,
		BatchSize:     100,
		OpTimeout:     2 * time.Second,
		ReportTTL:     30 * time.Second,
		LoadSmoothing: 0.5,
		Now:           time.Now,

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
	case c.MaxLinks < 0:
		return errors.New("prober: max links must not be negative")
	case c.Recheck < 0:
		return errors.New("prober: recheck must not be negative")
	case c.MaxInFlight < 0:
		return errors.New("prober: max in flight must not be negative")
	case c.RefreshInterval != 0 && c.RefreshInterval < c.Interval:
		return errors.New("prober: refresh interval must be 0 (never) or at least the probe interval")
	case c.OpTimeout <= 0:
		return errors.New("prober: op timeout must be positive")
	case c.LoadRefresh < 0:
		return errors.New("prober: load refresh must not be negative")
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
	c.MaxInFlight = max(cmp.Or(c.MaxInFlight, d.MaxInFlight), c.Concurrency)
	c.MaxLinks = cmp.Or(c.MaxLinks, d.MaxLinks)
	c.Recheck = cmp.Or(c.Recheck, d.Recheck)
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, c.Interval)
	c.BatchSize = cmp.Or(c.BatchSize, d.BatchSize)
	c.OpTimeout = cmp.Or(c.OpTimeout, d.OpTimeout)
	// RefreshInterval and LoadRefresh: zero means off (writes on change
	// only), so they take no default.
	c.ReportTTL = cmp.Or(c.ReportTTL, max(d.ReportTTL, 3*c.LoadRefresh))
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

// statusIdleConns is the fewest kept-alive status connections the prober
// keeps (see link.go's linkReserve, which leaves room for them); it keeps
// one per server up to MaxLinks: with fewer than the servers that have a
// status URL every pull would dial again (at 2,000 such servers and 1,024
// idle connections, a fifth of the leader's CPU went to those dials).
const statusIdleConns = 1024

// statusBufSize is the read and write buffer of a status connection:
// requests and documents are small (at most tcpdispatch.MaxStatusBytes is
// read, in as many reads as it takes), and thousands are kept open.
const statusBufSize = 2 << 10

// Snapshots is where the prober learns the registered servers and the
// health already recorded. *store.Watcher implements it.
type Snapshots interface {
	Snapshot() *store.Snapshot
}

// changeNotifier is implemented by Snapshots that announce a new snapshot
// (*store.Watcher does): Changed returns a channel closed when one newer
// than the current one is published.
type changeNotifier interface {
	Changed() <-chan struct{}
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
	// linkDialer opens persistent connections, with TCP keepalive.
	linkDialer net.Dialer
	http       *statusClient
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
	// Status pulls keep their connection alive from one interval to the
	// next (one per server, a bounded pool): a request on an open
	// connection costs far less than a handshake. Run closes the idle
	// ones when the term ends.
	dialer := net.Dialer{Timeout: cfg.Timeout, Control: cfg.Targets.Control}
	hc := newStatusClient(&dialer, &http.Client{
		Transport: &http.Transport{Proxy: nil, MaxIdleConns: max(statusIdleConns, cfg.MaxLinks), MaxIdleConnsPerHost: 1,
			ReadBufferSize: statusBufSize, WriteBufferSize: statusBufSize,
			IdleConnTimeout: 2 * cfg.Interval, DialContext: dialer.DialContext, MaxResponseHeaderBytes: 16 << 10},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, max(statusIdleConns, cfg.MaxLinks), 2*cfg.Interval)
	// Other replicas are not targets: the target policy, which bounds
	// what operator-written addrs may reach, does not apply to them.
	peerDialer := net.Dialer{Timeout: cfg.Timeout}
	peerHTTP := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
			DialContext: peerDialer.DialContext, MaxResponseHeaderBytes: 16 << 10},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	// Links are idle: the kernel's keepalive probes them every interval
	// (whole seconds) and gives up after one unanswered, so a host that
	// went silent ends its link within about two intervals (link.go).
	ka := max(time.Second, cfg.Interval)
	linkDialer := net.Dialer{Timeout: cfg.Timeout, Control: cfg.Targets.Control,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: ka, Interval: ka, Count: 1}}
	return &Prober{cfg: cfg, keys: keys, snaps: snaps, log: log, metrics: m, rbMetrics: rbm, dialer: dialer, linkDialer: linkDialer, http: hc, peerHTTP: peerHTTP,
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
	// notice marks the probe made when the server closed its persistent
	// connection (see link.go): a refusal then takes it down at once.
	notice bool
	// refused is set when the connect was refused or reset: nothing
	// listens at addr.
	refused bool
	// exhausted is set when no socket could be opened: the prober's host
	// is out of descriptors.
	exhausted bool
	// confirmed marks a failing server that other replicas confirmed down
	// in a suspect batch (see judge): it goes down at once.
	confirmed bool
	// vouched marks a result no probe made: the server's persistent
	// connection is open (see Config.Recheck).
	vouched bool
	// noDial pulls the status document without a connect probe first:
	// the last pull worked (see Config.Recheck).
	noDial bool
	// linkLost marks the notice probe of a link that timed out (TCP
	// keepalive unanswered): that silence counts as one failure.
	linkLost bool
	// youngLink marks the notice probe of a link that ended within an
	// interval of opening: if the server still accepts, it is one that
	// closes idle connections (see entry.closesLinks).
	youngLink bool
	// timedOut is set when the probe failed by timing out (not local):
	// the server, or the path to it, went silent.
	timedOut bool
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

// probe runs one probe per target, at most Concurrency at once, and fills
// in the results. The opinion route uses it; Run schedules probeOne itself.
func (p *Prober) probe(ctx context.Context, targets []target, lag time.Duration) {
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(p.cfg.Concurrency, len(targets)) {
		wg.Go(func() {
			for i := range work {
				p.probeOne(ctx, &targets[i], lag)
			}
		})
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

// probeOne connects to t.addr and, when that works and t has a status URL,
// pulls its status document; it fills in t's result. lag is how late the
// probe started.
func (p *Prober) probeOne(ctx context.Context, t *target, lag time.Duration) {
	if !t.noDial || t.statusURL == "" {
		start := time.Now()
		conn, err := p.dialer.DialContext(ctx, "tcp", t.addr)
		if err == nil {
			closeProbeConn(conn)
		}
		p.dialed(t, err, time.Since(start), lag)
		if !t.ok || t.statusURL == "" {
			return
		}
	}
	p.pull(ctx, t, lag)
}

// closeProbeConn closes a connect probe's connection dialed by net.Dialer
// (a host name) with a reset, as closeReset does for the connector's.
func closeProbeConn(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}

// dialed fills in t's result from its connect probe's outcome: err after
// elapsed (nil: connected), lag how late the probe started.
func (p *Prober) dialed(t *target, err error, elapsed, lag time.Duration) {
	t.ok, t.reason, t.local = p.judgeDial(t.addr, err, elapsed, lag)
	t.refused = err != nil && !t.local && refused(err)
	t.timedOut = err != nil && !t.local && isTimeout(err)
	t.exhausted = outOfFiles(err)
}

// pull fetches t's status document after a connect probe that worked (or
// none, see target.noDial) and fills in t's result.
func (p *Prober) pull(ctx context.Context, t *target, lag time.Duration) {
	start := time.Now()
	st, err := pullStatus(ctx, p.http, shedURL(t.statusURL, t.shed), p.cfg.Timeout)
	if err != nil {
		p.metrics.statusFailures.Inc()
		t.ok, t.reason = false, err.Error()
		t.local = p.class.isLocal(t.addr, err, time.Since(start), lag)
		t.refused = !t.local && refused(err)
		t.timedOut = !t.local && isTimeout(err)
		t.exhausted = outOfFiles(err)
		return
	}
	t.status, t.ok = &st, true
}

// check connects to addr once. local reports a failure that describes the
// prober's own host (see classifier); lag is how late the probe started.
func (p *Prober) check(ctx context.Context, addr string, lag time.Duration) (ok bool, reason string, local bool) {
	start := time.Now()
	conn, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err == nil {
		closeProbeConn(conn)
	}
	return p.judgeDial(addr, err, time.Since(start), lag)
}

// judgeDial counts a connect probe of addr that ended with err after
// elapsed, and says what it means: ok, the failure's reason, and whether
// that failure is the prober's own (see classifier).
func (p *Prober) judgeDial(addr string, err error, elapsed, lag time.Duration) (ok bool, reason string, local bool) {
	p.metrics.latency.Observe(elapsed.Seconds())
	if err == nil {
		return true, "", false
	}
	if p.class.isLocal(addr, err, elapsed, lag) {
		p.metrics.localFailures.Inc()
		return false, "prober's own fault: " + err.Error(), true
	}
	p.metrics.failures.Inc()
	return false, err.Error(), false
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
	chunks, err := p.takeWrites(snap, pending, 0)
	if err != nil {
		return err
	}
	err = p.writeChunks(ctx, w, chunks)
	for _, c := range chunks {
		if c.err == nil {
			for _, id := range c.ids {
				if id != "" {
					delete(pending, id)
				}
			}
		}
	}
	return err
}

// writeChunk is one transaction of a flush: puts of pending records
// (ids[i], hs[i]) and deletions of orphaned ones (ids[i] == "").
type writeChunk struct {
	ops []clientv3.Op
	ids []string
	hs  []store.Health
	err error // the transaction's outcome
}

// takeWrites encodes the pending records and the orphans' deletions into
// transactions of at most BatchSize writes, at most maxTxns of them (0: as
// many as it takes). It does not change pending.
func (p *Prober) takeWrites(snap *store.Snapshot, pending map[string]store.Health, maxTxns int) ([]*writeChunk, error) {
	var ops []clientv3.Op
	var ids []string
	var hs []store.Health
	for id, h := range pending {
		if maxTxns > 0 && len(ops) >= maxTxns*p.cfg.BatchSize {
			break
		}
		b, err := json.Marshal(h)
		if err != nil {
			return nil, fmt.Errorf("encode health of %s: %w", id, err)
		}
		ops = append(ops, clientv3.OpPut(p.keys.Health(id), string(b)))
		ids = append(ids, id)
		hs = append(hs, h)
	}
	for _, id := range snap.OrphanHealth() {
		if maxTxns > 0 && len(ops) >= maxTxns*p.cfg.BatchSize {
			break
		}
		// Only if the server is still unregistered when the write lands:
		// the snapshot may be behind a registration made meanwhile.
		unregistered := clientv3.Compare(clientv3.CreateRevision(p.keys.Server(id)), "=", 0).WithPrefix()
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{unregistered}, []clientv3.Op{clientv3.OpDelete(p.keys.Health(id))}, nil))
		ids = append(ids, "")
		hs = append(hs, store.Health{})
	}
	var chunks []*writeChunk
	for len(ops) > 0 {
		n := min(len(ops), p.cfg.BatchSize)
		chunks = append(chunks, &writeChunk{ops: ops[:n], ids: ids[:n], hs: hs[:n]})
		ops, ids, hs = ops[n:], ids[n:], hs[n:]
	}
	return chunks, nil
}

// writeChunks commits the chunks, each in one fenced transaction, and
// records each one's outcome in it. It returns the first error,
// election.ErrNotLeader before any other.
func (p *Prober) writeChunks(ctx context.Context, w Writer, chunks []*writeChunk) error {
	// The transactions go to etcd flushParallel at a time: etcd commits
	// proposals that arrive together in one raft entry and one fsync, so
	// a term's first 10,000 records cost a few fsyncs, not a hundred.
	sem := make(chan struct{}, flushParallel)
	var wg sync.WaitGroup
	for _, c := range chunks {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			tctx, cancel := context.WithTimeout(ctx, p.cfg.OpTimeout)
			defer cancel()
			_, c.err = w.Txn(tctx, nil, c.ops...)
		})
	}
	wg.Wait()
	var first error
	for _, c := range chunks {
		if c.err != nil {
			if first == nil || errors.Is(c.err, election.ErrNotLeader) {
				// Leadership lost is what the caller must hear.
				first = c.err
			}
			continue
		}
		p.metrics.txns.Inc()
		p.metrics.writes.Add(float64(len(c.ops)))
	}
	return first
}

// flushParallel is how many write transactions are in flight at once.
const flushParallel = 8
