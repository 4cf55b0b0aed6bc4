package prober

import (
	"math"
	"net/url"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tcpdispatch/tcpdispatch/store"
)

// Rebalancing (issue 13, docs/BALANCING.md). Connect-time balancing leaves a
// recovered or added server with only new clients while everyone who moved
// away stays where they are. When config/rebalance is on, the leader
// computes each server's fair share of the fleet's connections from the
// reports it pulls and asks the servers above share × (1 + tolerance) to
// shed the excess, paced, through the same status pull (?shed=N). Servers
// write nothing; a server that does not know the parameter ignores it.

// RebalanceBlock says why the leader does not rebalance this round.
type RebalanceBlock string

// Reasons rebalancing is held back; empty means not blocked.
const (
	BlockNone        RebalanceBlock = ""
	BlockOff         RebalanceBlock = "off"
	BlockPanic       RebalanceBlock = "panic"
	BlockAllDown     RebalanceBlock = "all-down"
	BlockMassRemoval RebalanceBlock = "mass-removal"
	BlockSlowStart   RebalanceBlock = "slow-start"
	BlockStale       RebalanceBlock = "stale-report"
)

// RebalanceServer is one server as the target computation sees it.
type RebalanceServer struct {
	ID string
	// Conns is the server's reported connections.
	Conns int64
	// Weight is its share weight: the static weight (the load factor of
	// the effective weight is left out, as load is what is balanced). A
	// server of weight 0 takes no share and sheds everything above 0 ×
	// (1 + tolerance); but drained servers are not passed in at all.
	Weight int
	// Stale is set when the leader holds no current report of it.
	Stale bool
	// SlowStart is set while it ramps up after coming up.
	SlowStart bool
}

// RebalanceFleet is the input of ComputeRebalance: the servers that hold
// or may receive clients (up, undrained), and the fleet-wide state.
type RebalanceFleet struct {
	Servers []RebalanceServer
	// Panic, AllDown and MassRemoval are the fleet modes that stop
	// rebalancing (see store.Snapshot).
	Panic, AllDown, MassRemoval bool
}

// RebalanceTarget is one server's fair share and excess.
type RebalanceTarget struct {
	ID string
	// Share is the server's fair share of the fleet's connections.
	Share float64
	// Excess is how many connections it holds above Share × (1 +
	// tolerance), 0 when none.
	Excess int64
}

// RebalancePlan is the result of ComputeRebalance.
type RebalancePlan struct {
	// Blocked, when not empty, says why nothing may move this round;
	// Targets is then empty.
	Blocked RebalanceBlock
	// Total is the fleet's connections.
	Total int64
	// Targets lists every server of the fleet, in input order.
	Targets []RebalanceTarget
}

// ComputeRebalance computes each server's fair share of the fleet's
// connections (proportional to weight) and its excess over share × (1 +
// tolerance). It is pure: the leader calls it every probe round with what
// it pulled, and paces the result with a rebalancePacer.
//
// Nothing moves (Blocked is set) in panic or all-down mode, while a
// mass-removal guard holds or just fired, when any server's report is
// stale (the total would be wrong), or while any server is in slow start
// (it would be the one receiving, and its weight is still ramping).
func ComputeRebalance(f RebalanceFleet, tolerance float64) RebalancePlan {
	var totalW int
	var total int64
	slow, stale := false, false
	for _, s := range f.Servers {
		totalW += max(s.Weight, 0)
		total += max(s.Conns, 0)
		slow = slow || s.SlowStart
		stale = stale || s.Stale
	}
	switch {
	case f.Panic:
		return RebalancePlan{Blocked: BlockPanic}
	case f.AllDown || totalW == 0:
		return RebalancePlan{Blocked: BlockAllDown}
	case f.MassRemoval:
		return RebalancePlan{Blocked: BlockMassRemoval}
	case stale:
		return RebalancePlan{Blocked: BlockStale}
	case slow:
		return RebalancePlan{Blocked: BlockSlowStart}
	}
	plan := RebalancePlan{Total: total, Targets: make([]RebalanceTarget, len(f.Servers))}
	for i, s := range f.Servers {
		share := float64(total) * float64(max(s.Weight, 0)) / float64(totalW)
		t := RebalanceTarget{ID: s.ID, Share: share}
		if limit := share * (1 + tolerance); float64(s.Conns) > limit {
			t.Excess = s.Conns - int64(math.Floor(limit))
		}
		plan.Targets[i] = t
	}
	return plan
}

// rebalancePacer enforces config/rebalance-rate across rounds: each server
// has a token bucket filling at ServerPerSecond × its conns per second,
// holding at most one second's worth (at least one connection), and the
// grants of the last minute over the whole fleet stay within FleetPerMinute
// × the fleet's connections. Its clock is the caller's.
type rebalancePacer struct {
	buckets map[string]*bucket
	grants  []grant // the last minute's grants, oldest first
}

type bucket struct {
	tokens float64
	at     time.Time
}

type grant struct {
	at time.Time
	n  int64
}

func newRebalancePacer() *rebalancePacer {
	return &rebalancePacer{buckets: make(map[string]*bucket)}
}

// fleetBudget returns how many connections may still move in the minute
// ending at now, for a fleet of total connections.
func (p *rebalancePacer) fleetBudget(now time.Time, total int64, rate store.RebalanceRate) int64 {
	cut := 0
	for cut < len(p.grants) && now.Sub(p.grants[cut].at) >= time.Minute {
		cut++
	}
	p.grants = p.grants[cut:]
	var moved int64
	for _, g := range p.grants {
		moved += g.n
	}
	return max(0, int64(math.Floor(rate.FleetPerMinute*float64(total)))-moved)
}

// grant returns how many of want connections server id (holding conns)
// may be asked to shed at now, at most budget, and takes them from its
// bucket and the fleet's minute.
func (p *rebalancePacer) grant(id string, conns, want, budget int64, now time.Time, rate store.RebalanceRate) int64 {
	perSec := rate.ServerPerSecond * float64(conns)
	capacity := max(1, perSec)
	b := p.buckets[id]
	if b == nil {
		b = &bucket{tokens: capacity, at: now}
		p.buckets[id] = b
	}
	if dt := now.Sub(b.at).Seconds(); dt > 0 {
		b.tokens = min(capacity, b.tokens+dt*perSec)
	}
	b.at = now
	n := min(want, budget, int64(math.Floor(b.tokens)))
	if n <= 0 {
		return 0
	}
	b.tokens -= float64(n)
	p.grants = append(p.grants, grant{at: now, n: n})
	return n
}

// forget drops the state of servers not in live.
func (p *rebalancePacer) forget(live map[string]bool) {
	for id := range p.buckets {
		if !live[id] {
			delete(p.buckets, id)
		}
	}
}

// rebalancer is the leader's rebalancing state for one term.
type rebalancer struct {
	pacer   *rebalancePacer
	blocked RebalanceBlock // last round's, to log changes only
	written map[string]int64
}

func newRebalancer() *rebalancer {
	return &rebalancer{pacer: newRebalancePacer(), blocked: BlockOff, written: make(map[string]int64)}
}

// plan sets the shed of each target for this round's pull from what the
// leader pulled so far. maxAge is how old a pull may be and still count. A
// target whose shed is already set holds an ask not delivered yet: it is
// left as it is.
func (p *Prober) planRebalance(rb *rebalancer, snap *store.Snapshot, targets []target, trackers map[string]*tracker,
	loads map[string]*loadTracker, now time.Time, maxAge time.Duration, log *logrus.Entry) {
	pol := snap.Balancing.Rebalance
	if !pol.On() {
		if rb.blocked != BlockOff {
			log.Info("rebalancing turned off")
		}
		rb.blocked = BlockOff
		return
	}
	fleet := RebalanceFleet{Panic: snap.Panic, MassRemoval: snap.MassRemoval != ""}
	index := make(map[string]int, len(targets))
	live := make(map[string]bool, len(targets))
	for i, t := range targets {
		live[t.id] = true
		s := snap.Lookup(t.id)
		if s != nil && s.Held {
			// Held servers are down in the leader's eyes: check first.
			fleet.MassRemoval = true
		}
		tr := trackers[t.id]
		if s == nil || tr == nil || tr.status != statusUp {
			continue
		}
		lt := loads[t.id]
		if s.Draining || s.Weight == 0 || lt != nil && lt.has && lt.last.Draining {
			continue // not a receiver, and Drain empties it anyway
		}
		stale := lt == nil || !lt.has || now.Sub(lt.pulledAt) > maxAge
		var conns int64
		if !stale {
			conns = lt.last.Conns
		}
		index[t.id] = i
		fleet.Servers = append(fleet.Servers, RebalanceServer{ID: t.id, Conns: conns, Weight: s.Weight,
			Stale: stale, SlowStart: s.SlowStart < 1})
	}
	rb.pacer.forget(live)
	for id := range rb.written {
		if !live[id] {
			delete(rb.written, id)
		}
	}
	fleet.AllDown = len(fleet.Servers) == 0
	plan := ComputeRebalance(fleet, pol.Tolerance)
	if plan.Blocked != rb.blocked {
		if plan.Blocked != BlockNone {
			log.WithField("reason", string(plan.Blocked)).Info("rebalancing held back")
		} else {
			log.WithField("tolerance", pol.Tolerance).WithField("rate", pol.Rate.String()).Info("rebalancing active")
		}
		rb.blocked = plan.Blocked
	}
	if plan.Blocked != BlockNone {
		p.rbMetrics.blocked.WithLabelValues(string(plan.Blocked)).Inc()
		return
	}
	budget := rb.pacer.fleetBudget(now, plan.Total, pol.Rate)
	for k, tg := range plan.Targets {
		if tg.Excess == 0 || targets[index[tg.ID]].shed > 0 {
			// Nothing to shed, or an ask not yet delivered (probes are
			// spread over the interval): it stands, nothing more.
			continue
		}
		n := rb.pacer.grant(tg.ID, fleet.Servers[k].Conns, tg.Excess, budget, now, pol.Rate)
		if n == 0 {
			continue
		}
		budget -= n
		targets[index[tg.ID]].shed = n
		p.rbMetrics.shed.WithLabelValues(tg.ID).Add(float64(n))
		log.WithFields(logrus.Fields{"server": tg.ID, "shed": n, "conns": fleet.Servers[k].Conns,
			"share": math.Round(tg.Share), "excess": tg.Excess, "fleet_conns": plan.Total}).Info("rebalance: asking server to shed")
	}
}

// dirty reports whether the health record of t must be rewritten for its
// rebalance target.
func (rb *rebalancer) dirty(t *target) bool {
	return rb.written[t.id] != t.shed
}

// fill copies the rebalance fields into h (of a pulled report).
func (rb *rebalancer) fill(h *store.Health, t *target) {
	// Only targets are kept: an absent entry reads as 0, and an entry for
	// every server written was 1.5 MB at 10,000.
	if t.shed != 0 {
		rb.written[t.id] = t.shed
	} else {
		delete(rb.written, t.id)
	}
	if !h.HasReport() {
		return
	}
	h.RebalanceTarget = t.shed
	if t.status != nil {
		h.ShedTotal = max(0, t.status.ShedTotal)
	}
}

// shedURL returns the status URL asking for n connections to be shed: the
// query parameter shed=N added to statusURL's own (docs/BALANCING.md). n
// of 0 leaves the URL as it is.
func shedURL(statusURL string, n int64) string {
	if n <= 0 {
		return statusURL
	}
	u, err := url.Parse(statusURL)
	if err != nil {
		return statusURL // validated when written; pullStatus reports it
	}
	q := u.Query()
	q.Set("shed", strconv.FormatInt(n, 10))
	u.RawQuery = q.Encode()
	return u.String()
}

// rebalanceMaxAge is how old the leader's last pull of a server may be for
// its conns to count: two rounds and a probe timeout. A server that missed
// more holds rebalancing back (stale report).
func (p *Prober) rebalanceMaxAge() time.Duration {
	return 2*p.cfg.Interval + p.cfg.Timeout
}
