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

// weigh applies the balancing policy bal at now to servers, which are
// sorted by id and carry what the keys and verdicts say (Addr, Weight,
// Healthy, State, Since, Draining, and the load of a fresh Report). It sets
// each server's SlowStart, EffectiveWeight and Eligible, then Held (mass-
// removal guard, policy hold) and Degraded (all-down, policy serve):
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
//   - mass removal: see guard;
//   - all down: see serveAllDown.
//
// prev is the guard's state after the previous build; weigh returns the
// next one.
func weigh(servers []Server, bal Balancing, now time.Time, prev guardState) (weighed, guardState) {
	var out weighed
	servable := func(srv *Server) bool {
		return srv.Addr != "" && srv.Healthy && srv.Weight > 0 && !srv.Draining
	}
	established := false // some servable server is past its slow-start window
	for i := range servers {
		if srv := &servers[i]; servable(srv) && (bal.SlowStart == 0 || srv.Since.IsZero() || now.Sub(srv.Since) >= bal.SlowStart) {
			established = true
			break
		}
	}
	// Effective weights: static × load factor × slow start.
	step := min(max(bal.SlowStart/20, minRebuildStep), maxRebuildStep)
	eligible, healthy := 0, 0
	for i := range servers {
		srv := &servers[i]
		srv.SlowStart, srv.EffectiveWeight, srv.Eligible, srv.Held, srv.Degraded = 1, 0, false, false, false
		if !servable(srv) {
			continue
		}
		healthy++
		if established && bal.SlowStart > 0 && !srv.Since.IsZero() {
			if age := now.Sub(srv.Since); age < bal.SlowStart {
				srv.SlowStart = max(MinRampShare, float64(max(age, 0))/float64(bal.SlowStart))
				out.rebuildAt = earliest(out.rebuildAt, now.Add(step))
			}
		}
		lf := 1.0
		if srv.Report == "fresh" {
			lf = max(minLoadFactor, 1-srv.Load)
			if srv.Overloaded {
				lf = 0
			}
		}
		srv.EffectiveWeight = scaleWeight(srv.Weight, lf*srv.SlowStart)
		if srv.EffectiveWeight > 0 {
			srv.Eligible = true
			eligible++
		}
	}
	// Panic mode: rather than crushing the few servers that have room,
	// spread over every healthy, undrained one on its static weight.
	if healthy > 0 && float64(eligible) < bal.PanicThreshold*float64(healthy) {
		out.panic = true
		for i := range servers {
			if srv := &servers[i]; servable(srv) {
				srv.EffectiveWeight = scaleWeight(srv.Weight, srv.SlowStart)
				srv.Eligible = true
			}
		}
	}
	var next guardState
	out.massRemoval, next = guard(servers, bal, prev)
	if bal.AllDown == AllDownServe {
		out.allDown = serveAllDown(servers)
	}
	return out, next
}

// guard compares the eligible servers with those of the last build (prev).
// When one update takes more than half of them out, it returns why (the
// watcher logs and counts it: once per event) and, under policy hold,
// keeps serving the ones the leader marked down for as long as more than
// half of that earlier set stays out; then the verdicts apply. A hold in
// force is not a new event: it is neither reported nor counted again.
func guard(servers []Server, bal Balancing, prev guardState) (string, guardState) {
	// removedFrom counts the members of base that are not eligible now (or
	// gone) and lists the indices of those still registered. Both lists
	// are sorted by id: one merge walk.
	removedFrom := func(base []idWeight) (out []int, n int) {
		i := 0
		for _, b := range base {
			// Ids usually match at once (the same string, so == is cheap);
			// ordering compares only when servers left or joined.
			for i < len(servers) && servers[i].ID != b.id && servers[i].ID < b.id {
				i++
			}
			switch {
			case i == len(servers) || servers[i].ID != b.id:
				n++
			case !servers[i].Eligible:
				out = append(out, i)
				n++
			}
		}
		return out, n
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
	next.last = eligibleSet(servers, prev.last)
	for _, i := range hold {
		srv := &servers[i]
		// Only the leader's down verdicts are held; operator intent (drain,
		// weight 0, a changed addr) is not second-guessed.
		if srv.State == "down" && !srv.Draining && srv.Weight > 0 {
			j, _ := slices.BinarySearchFunc(next.hold, srv.ID, func(e idWeight, id string) int { return strings.Compare(e.id, id) })
			srv.Eligible, srv.Held, srv.EffectiveWeight = true, true, next.hold[j].weight
		}
	}
	return msg, next
}

// eligibleSet returns the eligible servers with their effective weights,
// sorted by id: prev itself when it is the same set, so that a build that
// changed no eligibility allocates nothing here.
func eligibleSet(servers []Server, prev []idWeight) []idWeight {
	j := 0
	for i := range servers {
		srv := &servers[i]
		if !srv.Eligible {
			continue
		}
		if j >= len(prev) || prev[j].id != srv.ID || prev[j].weight != srv.EffectiveWeight {
			j = -1
			break
		}
		j++
	}
	if j == len(prev) {
		return prev
	}
	out := make([]idWeight, 0, len(servers))
	for i := range servers {
		if srv := &servers[i]; srv.Eligible {
			out = append(out, idWeight{srv.ID, srv.EffectiveWeight})
		}
	}
	return out
}

// scaleWeight returns w × f rounded, at least 1 when w × f > 0.
func scaleWeight(w int, f float64) int {
	if w <= 0 || !(f > 0) {
		return 0
	}
	return max(1, int(math.Round(float64(w)*min(f, 1))))
}
