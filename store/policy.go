package store

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// The weight policy: what a replica serves, given what the keys and the
// leader's verdicts say. weigh is a pure function of its arguments (no
// etcd, no clock, no model), so every replica that holds the same etcd
// state at the same time computes the same weights, and the policy is
// tested on plain slices.

// Bounds on how often a snapshot is rebuilt without an etcd event while a
// server ramps up: often enough for a smooth ramp, rarely enough to cost
// nothing.
const (
	minRebuildStep = 100 * time.Millisecond
	maxRebuildStep = time.Second
)

// minLoadFactor is the smallest factor reported load takes a weight down to
// while the server is not overloaded.
const minLoadFactor = 0.05

// weighed is what weigh decides beyond the servers' own fields.
type weighed struct {
	// panic, massRemoval and allDown become the Snapshot fields of the
	// same names.
	panic       bool
	massRemoval string
	allDown     bool
	// rebuildAt is when the next slow-start step is due; zero when no
	// server ramps.
	rebuildAt time.Time
}

// decision is what the policy decides for one server: the Server fields
// SlowStart, EffectiveWeight, Eligible, Held and Degraded. weigh writes
// decisions apart from the entries it reads, so that a build changes (and
// copies) only the entries whose decision changed.
type decision struct {
	slowStart float64
	effective int
	eligible  bool
	held      bool
	degraded  bool
}

// matches reports whether srv carries d.
func (d *decision) matches(srv *Server) bool {
	return srv.SlowStart == d.slowStart && srv.EffectiveWeight == d.effective && srv.Eligible == d.eligible &&
		srv.Held == d.held && srv.Degraded == d.degraded
}

// apply sets d's fields on srv.
func (d *decision) apply(srv *Server) {
	srv.SlowStart, srv.EffectiveWeight, srv.Eligible, srv.Held, srv.Degraded = d.slowStart, d.effective, d.eligible, d.held, d.degraded
}

// policyIn is what the policy reads of one server: the Server fields it
// depends on, flat and without pointers, so that a build's passes over
// the fleet stream through one array instead of visiting every entry.
type policyIn struct {
	since     int64 // Since, Unix ns; 0 when zero
	checkedAt int64 // CheckedAt, Unix ns; 0 when zero
	epoch     int64 // VerdictEpoch
	load      float64
	conns     int64
	weight    int
	hasAddr   bool
	healthy   bool
	draining  bool
	fresh     bool // Report is fresh
	overload  bool // Overloaded
	down      bool // State is down
}

// inputsOf returns what the policy reads of srv.
func inputsOf(srv *Server) policyIn {
	return policyIn{since: unixNano(srv.Since), checkedAt: unixNano(srv.CheckedAt), epoch: srv.VerdictEpoch,
		load: srv.Load, conns: srv.Conns, weight: srv.Weight, hasAddr: srv.Addr != "", healthy: srv.Healthy,
		draining: srv.Draining, fresh: srv.Report == ReportFresh, overload: srv.Overloaded, down: srv.State == HealthDown}
}

// unixNano is t in Unix ns, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// servable reports whether the server may be served on its own verdict
// and keys: it has an addr, is healthy, of positive weight, not draining.
func (in *policyIn) servable() bool {
	return in.hasAddr && in.healthy && in.weight > 0 && !in.draining
}

// guardState is what the mass-removal guard remembers between builds.
// weigh never modifies one it is given; it returns the next.
type guardState struct {
	// last is the servers eligible on their own in the last build, with
	// their effective weights, sorted by id.
	last []idWeight
	// hold, while a hold is in force, is the eligible set from just before
	// the mass removal, with the effective weights held servers get.
	hold []idWeight
}

type idWeight struct {
	id     string
	weight int
}

// weigh applies the balancing policy bal at now to the servers of ids
// (sorted) with inputs in (what the keys and verdicts say, and the load of
// a fresh report), and writes each server's decision to out[i]; the three
// slices have the same length:
//
//   - a server is servable when it has an addr, is healthy, of positive
//     weight and not draining;
//   - slow start: while some servable server is past its window, a server
//     up for less than bal.SlowStart gets a share of its weight growing
//     from MinRampShare to 1;
//   - load: a fresh report scales the weight by 1 − load (at least
//     minLoadFactor), or to 0 when overloaded;
//   - panic: when fewer than bal.PanicThreshold of the servable servers
//     keep a positive weight, every servable one is served on its static
//     weight × slow start;
//   - mass removal: see guard (held);
//   - all down: see serveAllDown (degraded).
//
// prev is the guard's state after the previous build; weigh returns the
// next one. Cost: a few passes over flat arrays, no allocation unless
// eligibility changed.
func weigh(ids []string, in []policyIn, out []decision, bal Balancing, now time.Time, prev guardState) (weighed, guardState) {
	var w weighed
	nowNs := now.UnixNano()
	slow := int64(bal.SlowStart)
	established := false // some servable server is past its slow-start window
	for i := range in {
		if x := &in[i]; x.servable() && (slow == 0 || x.since == 0 || nowNs-x.since >= slow) {
			established = true
			break
		}
	}
	// Effective weights: static × load factor × slow start.
	step := min(max(bal.SlowStart/20, minRebuildStep), maxRebuildStep)
	eligible, healthy := 0, 0
	for i := range in {
		x, d := &in[i], &out[i]
		*d = decision{slowStart: 1}
		if !x.servable() {
			continue
		}
		healthy++
		if established && slow > 0 && x.since != 0 {
			if age := nowNs - x.since; age < slow {
				d.slowStart = max(MinRampShare, float64(max(age, 0))/float64(slow))
				w.rebuildAt = earliest(w.rebuildAt, now.Add(step))
			}
		}
		lf := 1.0
		if x.fresh {
			lf = max(minLoadFactor, 1-x.load)
			if x.overload {
				lf = 0
			}
		}
		d.effective = scaleWeight(x.weight, lf*d.slowStart)
		if d.effective > 0 {
			d.eligible = true
			eligible++
		}
	}
	// Panic mode: rather than crushing the few servers that have room,
	// spread over every healthy, undrained one on its static weight.
	if healthy > 0 && float64(eligible) < bal.PanicThreshold*float64(healthy) {
		w.panic = true
		for i := range in {
			if in[i].servable() {
				out[i].effective = scaleWeight(in[i].weight, out[i].slowStart)
				out[i].eligible = true
			}
		}
	}
	var next guardState
	w.massRemoval, next = guard(ids, in, out, bal, prev)
	if bal.AllDown == AllDownServe {
		w.allDown = serveAllDown(in, out)
	}
	return w, next
}

// guard compares the eligible servers (out) with those of the last build
// (prev). When one update takes more than half of them out, it returns why
// (the watcher logs and counts it: once per event) and, under policy hold,
// keeps serving the ones the leader marked down for as long as more than
// half of that earlier set stays out; then the verdicts apply. A hold in
// force is not a new event: it is neither reported nor counted again.
func guard(ids []string, in []policyIn, out []decision, bal Balancing, prev guardState) (string, guardState) {
	// removedFrom counts the members of base that are not eligible now (or
	// gone) and lists the indices of those still registered. Both lists
	// are sorted by id: one merge walk.
	removedFrom := func(base []idWeight) (removed []int, n int) {
		i := 0
		for _, b := range base {
			// Ids usually match at once (the same string, so == is cheap);
			// ordering compares only when servers left or joined.
			for i < len(ids) && ids[i] != b.id && ids[i] < b.id {
				i++
			}
			switch {
			case i == len(ids) || ids[i] != b.id:
				n++
			case !out[i].eligible:
				removed = append(removed, i)
				n++
			}
		}
		return removed, n
	}
	next := guardState{hold: prev.hold}
	if bal.MassRemoval != MassRemovalHold {
		next.hold = nil
	}
	var msg string
	var hold []int
	if next.hold != nil {
		removed, n := removedFrom(next.hold)
		if 2*n > len(next.hold) {
			hold = removed
		} else {
			next.hold = nil // enough came back: the verdicts apply
		}
	} else if len(prev.last) >= 2 {
		removed, n := removedFrom(prev.last)
		if 2*n > len(prev.last) {
			msg = fmt.Sprintf("%d of %d eligible servers removed by one update (policy %s)", n, len(prev.last), bal.MassRemoval)
			if bal.MassRemoval == MassRemovalHold {
				next.hold, hold = prev.last, removed
			}
		}
	}
	next.last = eligibleSet(ids, out, prev.last)
	for _, i := range hold {
		// Only the leader's down verdicts are held; operator intent (drain,
		// weight 0, a changed addr) is not second-guessed.
		if x := &in[i]; x.down && !x.draining && x.weight > 0 {
			j, _ := slices.BinarySearchFunc(next.hold, ids[i], func(e idWeight, id string) int { return strings.Compare(e.id, id) })
			out[i].eligible, out[i].held, out[i].effective = true, true, next.hold[j].weight
		}
	}
	return msg, next
}

// eligibleSet returns the eligible servers with their effective weights,
// sorted by id: prev itself when it is the same set, so that a build that
// changed no eligibility allocates nothing here.
func eligibleSet(ids []string, out []decision, prev []idWeight) []idWeight {
	j := 0
	for i, id := range ids {
		if !out[i].eligible {
			continue
		}
		if j >= len(prev) || prev[j].id != id || prev[j].weight != out[i].effective {
			j = -1
			break
		}
		j++
	}
	if j == len(prev) {
		return prev
	}
	set := make([]idWeight, 0, len(ids))
	for i, id := range ids {
		if out[i].eligible {
			set = append(set, idWeight{id, out[i].effective})
		}
	}
	return set
}

// scaleWeight returns w × f rounded, at least 1 when w × f > 0.
func scaleWeight(w int, f float64) int {
	if w <= 0 || !(f > 0) {
		return 0
	}
	return max(1, int(math.Round(float64(w)*min(f, 1))))
}
