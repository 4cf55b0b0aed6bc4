package balancer

import (
	"math/bits"
	"math/rand/v2"
	"slices"
)

const (
	// maxSchedule caps the WRR schedule length (4 MiB of int32).
	maxSchedule = 1 << 20
	// nginxBudget is the most L·n work spent on the exact nginx algorithm;
	// larger schedules use the O(L·log n) deadline heap instead.
	nginxBudget = 1 << 24
)

// buildSchedule returns one period of the smooth WRR sequence for weights w,
// as indices into w; backends with w[i] <= 0 never appear. Weights are
// reduced by their GCD and, if the period would exceed maxSchedule, scaled
// down to fit (see New for the precision this costs).
func buildSchedule(w []int64) []int32 {
	var idx []int32 // positions in w of the positive weights
	var ws []int64
	for i, x := range w {
		if x > 0 {
			idx = append(idx, int32(i))
			ws = append(ws, x)
		}
	}
	if len(ws) == 0 {
		return nil
	}
	reduce(ws)
	if fit(ws, maxSchedule) {
		reduce(ws)
	}
	var l int64
	for _, x := range ws {
		l += x
	}
	var seq []int32
	if l*int64(len(ws)) <= nginxBudget {
		seq = nginxSchedule(ws, l)
	} else {
		seq = deadlineSchedule(ws, l)
	}
	for i, c := range seq {
		seq[i] = idx[c]
	}
	return seq
}

// nginxSchedule is nginx's smooth weighted round robin run for one period of
// l = sum(ws) picks: every backend gains its weight, the one with the highest
// running total (the first on ties) is picked and loses l. For weights 5,1,1
// it yields 0 0 1 0 2 0 0. Cost O(l·len(ws)).
func nginxSchedule(ws []int64, l int64) []int32 {
	cur := make([]int64, len(ws))
	seq := make([]int32, l)
	for s := range seq {
		best := 0
		for i, x := range ws {
			cur[i] += x
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= l
		seq[s] = int32(best)
	}
	return seq
}

// deadlineSchedule produces a smooth schedule of one period l = sum(ws) in
// O(l·log n): backend i's k-th turn (k from 0) is due at (k+0.5)/ws[i], and
// turns are taken earliest deadline first, ties by index. Like nginx's
// sequence, every backend is spread evenly over the period, but the two
// orders differ in detail.
func deadlineSchedule(ws []int64, l int64) []int32 {
	n := len(ws)
	k := make([]int64, n) // turns taken so far
	// Deadlines are compared as (2k_a+1)/(2w_a) < (2k_b+1)/(2w_b), cross-
	// multiplied to stay exact in integers: k < w <= 2^20, so no overflow.
	before := func(a, b int32) bool {
		da, db := (2*k[a]+1)*ws[b], (2*k[b]+1)*ws[a]
		return da < db || da == db && a < b
	}
	h := make([]int32, n) // binary min-heap of backends by next deadline
	for i := range h {
		h[i] = int32(i)
	}
	down := func(i int) {
		for {
			c := 2*i + 1
			if c >= n {
				return
			}
			if c+1 < n && before(h[c+1], h[c]) {
				c++
			}
			if !before(h[c], h[i]) {
				return
			}
			h[i], h[c] = h[c], h[i]
			i = c
		}
	}
	for i := n/2 - 1; i >= 0; i-- {
		down(i)
	}
	seq := make([]int32, l)
	for s := range seq {
		top := h[0]
		seq[s] = top
		k[top]++
		down(0)
	}
	return seq
}

// reduce divides positive weights by their greatest common divisor, which
// shortens the schedule without changing any proportion.
func reduce(ws []int64) {
	var g int64
	for _, x := range ws {
		for x != 0 {
			g, x = x, g%x
		}
	}
	if g > 1 {
		for i := range ws {
			ws[i] /= g
		}
	}
}

// fit scales positive counts down proportionally so their sum is at most
// limit, keeping each at least 1 (so the sum can exceed limit only when
// len(v) > limit). It reports whether it changed anything. Each result is
// floor(v·budget/sum) with budget = limit-len(v), leaving room for the
// round-ups to 1; with v <= 2^33 and limit <= 2^20 the product fits in int64.
func fit(v []int64, limit int64) bool {
	var sum int64
	for _, x := range v {
		sum += x
	}
	if sum <= limit {
		return false
	}
	budget := max(limit-int64(len(v)), 0)
	for i, x := range v {
		v[i] = max(1, x*budget/sum)
	}
	return true
}

// Bounds on searching the WRR schedule for a backend that is not excluded:
// at most maxSkips extra slots claimed for a first choice, and maxWalk slots
// read per alternative in PickN. Needing more means the excluded backends
// hold most of the weight; a weighted random choice among the rest is then
// cheaper than more contended atomic adds or a longer scan.
const (
	maxSkips = 16
	maxWalk  = 64
)

// weylStep is 2^64 divided by the golden ratio: position k of a schedule
// without a table sits at frac(k·step/2^64) of the total weight. By the
// three-gap theorem these points stay evenly spread for any number of
// picks, so successive picks interleave backends in proportion to their
// weights, as a precomputed schedule does.
const weylStep = 0x9E3779B97F4A7C15

// wrr is smooth weighted round robin: a precomputed schedule of backend
// indices, one per slot, read at the Picker's atomic position. When the
// exact nginx schedule would cost more than nginxBudget to build (large
// fleets, or weights without a large common divisor, such as load-adjusted
// ones), seq is nil and slot k is the backend owning the golden-ratio point
// k of the total weight: no table, O(log n) per pick, and a rebuild for
// changed weights costs only the prefix sums every Picker has.
type wrr struct {
	seq []int32
	// built holds the weights seq was built from, for reuse by a later
	// picker (Options.Previous).
	built []int64
	// Without seq, buckets[b] is the backend owning the first weight unit
	// of the b-th of len(buckets) equal slices of the total weight: a slot
	// starts its search there instead of a binary search over all.
	buckets []int32
}

// newWRR builds the schedule for weights, or reuses prev's when prev is a
// WRR picker over the same IDs and weights.
func newWRR(p *Picker, weights []int64, prev *Picker) *wrr {
	s := &wrr{built: weights}
	switch old, ok := prevChooser[*wrr](p, prev); {
	case ok && slices.Equal(old.built, weights):
		s.seq = old.seq
	case exactAffordable(weights):
		s.seq = buildSchedule(weights)
	}
	if s.seq == nil && p.eligible > 0 {
		s.buckets = make([]int32, p.eligible)
		total, n := uint64(p.total()), uint64(len(s.buckets))
		i := 0
		for b := range s.buckets {
			hi, lo := bits.Mul64(uint64(b), total)
			u, _ := bits.Div64(hi, lo, n) // first unit of slice b: b·total/n
			for p.prefix[i+1] <= int64(u) {
				i++
			}
			s.buckets[b] = int32(i)
		}
	}
	if n := s.period(p); n > 0 {
		// A random start keeps replicas, and successive snapshots in one
		// replica, from all sending their next client to the same backend.
		p.next.Store(rand.Uint64N(n))
	}
	return s
}

// exactAffordable reports whether nginx's exact schedule for weights takes
// at most nginxBudget steps to build: period (sum of the weights over their
// common divisor) × backends.
func exactAffordable(weights []int64) bool {
	var g, sum, n int64
	for _, x := range weights {
		if x > 0 {
			for y := x; y != 0; {
				g, y = y, g%y
			}
			sum += x
			n++
		}
	}
	return n == 0 || sum/g <= nginxBudget/n
}

// period returns the number of distinct slots: the schedule's length, or
// for the golden-ratio sequence the total weight; 0 when nothing is
// eligible.
func (s *wrr) period(p *Picker) uint64 {
	if s.seq != nil || p.eligible == 0 {
		return uint64(len(s.seq))
	}
	return uint64(p.total())
}

// at returns the backend in slot pos; the caller has checked period > 0.
func (s *wrr) at(p *Picker, pos uint64) int32 {
	if s.seq != nil {
		return s.seq[pos%uint64(len(s.seq))]
	}
	x := pos * weylStep // the point, as a fraction of 2^64
	r, _ := bits.Mul64(x, uint64(p.total()))
	b, _ := bits.Mul64(x, uint64(len(s.buckets)))
	// Slice b starts at or before unit r, so the owner is at most a few
	// ranges (the slice's share of backends) further on.
	i := int(s.buckets[b])
	for uint64(p.prefix[i+1]) <= r {
		i++
	}
	return int32(i)
}

func (s *wrr) first(p *Picker, _ string) int {
	if s.period(p) == 0 {
		return -1
	}
	return int(s.at(p, p.tick()))
}

func (s *wrr) choose(p *Picker, _ string, t *taken, dst []int, end int) []int {
	l := s.period(p)
	// The first choice claims successive slots until one holds an allowed
	// backend. Skipped slots are used up rather than handed to whichever
	// backend follows them in the schedule, so requests that exclude a
	// backend see the others in their weight proportions.
	pos, i := p.tick(), -1
	for skips := 0; ; skips++ {
		if c := s.at(p, pos); !t.has(c) {
			i = int(c)
			break
		}
		if skips == maxSkips {
			i = p.sample(t)
			break
		}
		pos = p.tick()
	}
	dst = p.take(t, dst, i)
	// Alternatives are read from the schedule after the first choice
	// without claiming slots, so PickN advances the schedule by as much
	// as Pick does.
	step := uint64(1)
	for len(dst) < end {
		i = -1
		for limit := min(step+maxWalk, l); step < limit && i < 0; step++ {
			if c := s.at(p, pos+step); !t.has(c) {
				i = int(c)
			}
		}
		if i < 0 {
			i = p.sample(t)
		}
		dst = p.take(t, dst, i)
	}
	return dst
}

// tick claims the next WRR schedule slot.
func (p *Picker) tick() uint64 { return p.next.Add(1) - 1 }
