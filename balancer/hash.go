package balancer

import (
	"cmp"
	"math"
	"slices"
	"strconv"
)

const (
	// maxRing caps the number of points on a hash ring (12 MiB of points
	// and owners).
	maxRing = 1 << 20
	// pointsPer100 is the number of ring points per 100 units of weight, as
	// in ketama; more points spread keys more evenly but cost memory.
	pointsPer100 = 160
)

// buildRing places max(1, round(1.6·w)) points per backend with positive
// weight w (scaled down if the total exceeds maxRing) at hash64(ID+"#"+j) for
// j = 0, 1, ..., and returns the sorted positions with their owners. Points
// depend only on ID and weight, so the ring is the same in every process and
// in every order the backends are listed, and adding or removing a backend
// moves only the keys that land on its points. At the cap, adding a backend
// rescales everyone's point count; because a backend's points are always
// numbers 0..count-1, each merely loses or gains its last few points, and
// only the keys on those move.
func buildRing(ids []string, w []int64) (ring []uint64, owner []int32) {
	var idx []int32 // backends with positive weight
	var points []int64
	for i, x := range w {
		if x > 0 {
			idx = append(idx, int32(i))
			points = append(points, max(1, (x*pointsPer100+50)/100))
		}
	}
	fit(points, maxRing)
	var total int64
	for _, c := range points {
		total += c
	}
	type point struct {
		pos   uint64
		owner int32
	}
	pts := make([]point, 0, total)
	var buf []byte
	for j, i := range idx {
		buf = append(append(buf[:0], ids[i]...), '#')
		base := len(buf)
		for v := range points[j] {
			buf = strconv.AppendInt(buf[:base], v, 10)
			pts = append(pts, point{hash64(buf), i})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		if c := cmp.Compare(a.pos, b.pos); c != 0 {
			return c
		}
		// Colliding points are ordered by ID, not index, so the ring stays
		// independent of the order backends were listed in.
		return cmp.Compare(ids[a.owner], ids[b.owner])
	})
	ring = make([]uint64, len(pts))
	owner = make([]int32, len(pts))
	for j, pt := range pts {
		ring[j], owner[j] = pt.pos, pt.owner
	}
	return ring, owner
}

// ring is consistent hashing, bounded when the Picker's bound is set: ring
// points sorted by position, each owned by a backend.
//
// With Options.RingWeights, every backend of positive ring weight has its
// points, eligible or not, and walks step over the points of backends of
// weight 0. Skipping a backend's points sends its keys exactly where
// removing them would, so a change of eligibility (a health verdict, a
// drain, a load report) moves no other key and reuses the ring as it is.
type ring struct {
	points []uint64
	owner  []int32 // owner[j] is the backend at points[j]
	// built holds the weights the ring was built from, for reuse by a later
	// picker (Options.Previous).
	built []int64
	// walk and walkOwner are the points walks read: points itself, or,
	// when eligible backends own few of them, only theirs (see sparse).
	walk      []uint64
	walkOwner []int32
}

// sparseShare: when backends of weight 0 hold more than this share of the
// ring's weight, walks get a ring of the eligible points only, so that a
// walk stays short; filtering keeps every answer the same.
const sparseShare = 0.75

// newRing places the ring by o.RingWeights when given (static weights, so
// load changes move no keys) and by weights otherwise, reusing o.Previous's
// ring when built from the same IDs and weights; it sets p.bound.
func newRing(p *Picker, weights []int64, o Options) *ring {
	ringW := weights
	var placed, idle int64 // ring weight of all backends, of ineligible ones
	if o.RingWeights != nil {
		ringW = make([]int64, len(weights))
		for i, w := range weights {
			if rw := int64(o.RingWeights[i]); w > 0 || rw > 0 {
				ringW[i] = min(max(1, rw), maxWeight)
				placed += ringW[i]
				if w <= 0 {
					idle += ringW[i]
				}
			}
		}
	}
	r := &ring{built: ringW}
	if old, ok := prevChooser[*ring](p, o.Previous); ok && slices.Equal(old.built, ringW) {
		r.points, r.owner = old.points, old.owner
	} else {
		r.points, r.owner = buildRing(p.ids, ringW)
	}
	r.walk, r.walkOwner = r.points, r.owner
	if idle > 0 && float64(idle) > sparseShare*float64(placed) {
		r.walk, r.walkOwner = nil, nil
		for j, c := range r.owner {
			if weights[c] > 0 {
				r.walk = append(r.walk, r.points[j])
				r.walkOwner = append(r.walkOwner, c)
			}
		}
	}
	if o.HashLoadFactor > 0 && p.total() > 0 {
		p.bound = o.HashLoadFactor / float64(p.total())
	}
	return r
}

func (r *ring) first(p *Picker, key string) int {
	switch {
	case p.eligible == 0 || len(r.walk) == 0:
		return -1
	case p.bound == 0:
		n := len(r.walk)
		for j, start := 0, r.start(key); j < n; j++ {
			if c := r.walkOwner[(start+j)%n]; p.weight(int(c)) > 0 {
				return int(c)
			}
		}
		return -1
	}
	return r.bounded(p, key, nil)
}

func (r *ring) choose(p *Picker, key string, t *taken, dst []int, end int) []int {
	if p.bound > 0 {
		// The first choice respects the bound; alternatives are the next
		// backends clockwise, as without one.
		dst = p.take(t, dst, r.bounded(p, key, t))
	}
	// Every eligible backend has at least one point, so the walk finds all
	// remaining ones within one turn of the ring.
	n := len(r.walk)
	for j, start := 0, r.start(key); j < n && len(dst) < end; j++ {
		if c := r.walkOwner[(start+j)%n]; !t.has(c) && p.weight(int(c)) > 0 {
			dst = p.take(t, dst, int(c))
		}
	}
	return dst
}

// bounded walks the ring clockwise from key's position to the first
// eligible backend not in t (t may be nil) whose load is below its bound.
// If every remaining backend is full, which the bound's definition rules
// out unless concurrent picks race past it, it returns the key's first
// remaining backend, as unbounded hashing would.
func (r *ring) bounded(p *Picker, key string, t *taken) int {
	n := len(r.walk)
	total := p.base + p.picked.Load()
	limit := p.bound * float64(total+1)
	first := -1
	for j, start := 0, r.start(key); j < n; j++ {
		c := r.walkOwner[(start+j)%n]
		if t != nil && t.has(c) {
			continue
		}
		i := int(c)
		w := p.weight(i)
		if w == 0 {
			continue
		}
		if first < 0 {
			first = i
		}
		// Capacity is ceil(limit × weight). The relative epsilon keeps a
		// product that should be an exact integer from rounding up past it.
		if x := limit * float64(w); float64(p.load(i)) < math.Ceil(x-x*1e-9) {
			return i
		}
	}
	return first
}

// start returns the index of the first ring point at or after the key's
// position, wrapping to 0 past the last point. The ring must not be empty.
func (r *ring) start(key string) int {
	j, _ := slices.BinarySearch(r.walk, hash64(key))
	if j == len(r.walk) {
		return 0
	}
	return j
}

// hash64 is 64-bit FNV-1a followed by murmur3's fmix64 finalizer. It is
// fixed and unseeded (unlike hash/maphash) because ring positions must agree
// across processes and machines; the finalizer fixes FNV's weak avalanche on
// keys that differ only in their last bytes, such as IP addresses. It is
// written out over the bytes so hashing a string key does not allocate.
func hash64[T string | []byte](s T) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime64
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
