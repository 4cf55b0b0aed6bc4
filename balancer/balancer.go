// Package balancer chooses one backend out of a fixed, weighted set.
//
// A Picker is built once per configuration snapshot, off the request path,
// and then shared by every request goroutine: Pick and PickN take no locks
// and make no allocations. Five strategies are offered:
//
//   - WRR: nginx's smooth weighted round robin, precomputed as a schedule so
//     a pick is one atomic add and one slice read. Where that schedule would
//     be costly to build (large fleets, load-adjusted weights), slot k is
//     instead the backend owning the golden-ratio point k of the total
//     weight: as smooth, O(log n) per pick, and nothing to build.
//   - Random: weighted random, O(log n) per pick.
//   - Hash: consistent hashing (a ketama-like ring) on a caller-supplied key.
//     Ring positions depend only on backend IDs, weights and the key, so every
//     dispatcher replica maps a key to the same backend. With
//     Options.RingWeights, backends of weight 0 keep their points and picks
//     step over them, so eligibility changes reuse the ring. With a load factor
//     (Options.HashLoadFactor) it is consistent hashing with bounded loads
//     (Mirrokni, Thorup, Zadimoghaddam 2017): a key whose backend is full
//     walks on to the next backend with room.
//   - P2C: the power of two choices: two backends drawn by weight, the less
//     loaded one wins. O(log n) per pick.
//   - LeastLoad: the least loaded backend of all, relative to its weight.
//     O(n) per pick.
//
// Load, for P2C, LeastLoad and bounded Hash, is a backend's reported
// connection count (Load.Conns, fixed per Picker) plus the clients handed to
// it since that report (Load.Assigned, a shared atomic Counter that every
// pick increments). Counting assignments keeps a stale report from herding
// every new client onto the one backend that looked emptiest.
//
// Weights are relative; only their ratios matter. To bound memory and build
// time, WRR schedules and hash rings are capped at 1<<20 entries; beyond that
// weights are scaled down (see New), which costs some precision.
//
// Callers that just failed to reach a backend pass its ID in exclude; the
// picker then returns the best remaining choice under the same strategy.
package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
)

// Strategy names a balancing algorithm, as written by operators in the etcd
// key config/strategy. Use ParseStrategy to turn operator input into one.
type Strategy string

// The strategies understood by ParseStrategy and New.
const (
	// WRR is smooth weighted round robin, the default. Successive picks
	// interleave backends in proportion to their weights.
	WRR Strategy = "wrr"
	// Random picks a backend at random with probability proportional to
	// its weight.
	Random Strategy = "random"
	// Hash maps a key (the client IP or the ?key= value) to a backend with
	// a consistent hash ring, so a key sticks to its backend while that
	// backend stays in the set. With Options.HashLoadFactor > 0, a backend
	// whose load reached its bound passes its keys on clockwise.
	Hash Strategy = "hash"
	// P2C draws two backends at random by weight and picks the one with
	// the lower load per unit of weight.
	P2C Strategy = "p2c"
	// LeastLoad picks the backend with the lowest load per unit of weight.
	LeastLoad Strategy = "least-load"
)

// strategies lists every Strategy, in the order validNames names them. Each
// has its own file (wrr.go, random.go, hash.go, p2c.go, leastload.go) with a
// chooser that newChooser returns.
var strategies = []Strategy{WRR, Random, Hash, P2C, LeastLoad}

// validNames is listed in errors about unknown strategies.
const validNames = "wrr, random, hash, p2c, least-load"

// maxWeight bounds Backend.Weight so that sums over any realistic number of
// backends cannot overflow int64.
const maxWeight = 1<<31 - 1

var (
	// ErrUnknownStrategy is wrapped by ParseStrategy and New when the
	// strategy is not one of wrr, random, hash, p2c or least-load.
	ErrUnknownStrategy = errors.New("unknown strategy")
	// ErrDuplicateID is wrapped by New when two backends share an ID.
	ErrDuplicateID = errors.New("duplicate backend ID")
	// ErrWeightTooLarge is wrapped by New when a weight exceeds 1<<31-1.
	ErrWeightTooLarge = errors.New("backend weight too large")
)

// ParseStrategy parses an operator-supplied strategy name. Surrounding
// space and case are ignored, and "" means WRR. Any other value returns an
// error wrapping ErrUnknownStrategy that lists the valid names.
func ParseStrategy(s string) (Strategy, error) {
	st := Strategy(strings.ToLower(strings.TrimSpace(s)))
	if st == "" {
		return WRR, nil
	}
	if slices.Contains(strategies, st) {
		return st, nil
	}
	return "", fmt.Errorf("parse strategy %q: %w (valid: %s)", s, ErrUnknownStrategy, validNames)
}

// Backend is one server a Picker may choose.
type Backend struct {
	// ID identifies the backend; it must be unique within one Picker. Hash
	// places ring points by ID, so keep IDs stable across restarts.
	ID string
	// Weight is the backend's relative share of traffic (dimensionless,
	// 1..10000 in practice, at most 1<<31-1). Backends with Weight <= 0 are
	// never picked.
	Weight int
}

// Counter counts the clients handed to one backend. It is shared by the
// Pickers of successive snapshots, so a count survives a rebuild, and is
// padded to a cache line of its own because every pick of that backend
// writes it.
type Counter struct {
	n atomic.Int64
	_ [56]byte
}

// Load returns the count.
func (c *Counter) Load() int64 { return c.n.Load() }

// Add adds d to the count.
func (c *Counter) Add(d int64) { c.n.Add(d) }

// Load is what a Picker knows of one backend's occupancy.
type Load struct {
	// Conns is the backend's last reported connection count; 0 when
	// unknown.
	Conns int64
	// Assigned, when not nil, is incremented by every pick that returns
	// the backend as first choice, and its value is added to Conns by P2C,
	// LeastLoad and bounded Hash. The owner resets it (by passing a fresh
	// Counter to the next Picker) when a new report arrives. nil disables
	// that accounting for the backend.
	Assigned *Counter
	// Capacity, when > 0, replaces Weight as the divisor of the load score
	// of P2C and LeastLoad. Callers whose Weight already falls with the
	// reported load pass a weight without that factor here, so that load is
	// not counted twice.
	Capacity int
}

// Options are the rarely needed knobs of NewWith.
type Options struct {
	// Loads, when not nil, must have one entry per backend, in the same
	// order. When nil, the Picker counts its own assignments in counters
	// of its own (as if every Load were {0, new(Counter)}).
	Loads []Load
	// HashLoadFactor is the bound c of consistent hashing with bounded
	// loads: no backend is given a client while its load is at least
	// ceil(c × (total load + 1) × weight/total weight). It must be 0 (no
	// bound: plain consistent hashing) or > 1. Only Hash uses it.
	HashLoadFactor float64
	// RingWeights, when not nil, must have one entry per backend: Hash
	// places ring points by these weights instead of Weight, which then
	// only decides eligibility (> 0) and each backend's share of the load
	// bound. Callers pass static weights here and load-adjusted ones as
	// Weight, so that load changes move no keys on the ring. Entries <= 0
	// of eligible backends count as 1. A backend of Weight 0 with a
	// positive entry keeps its points, and picks step over them: its keys
	// go where removing it would send them, and when only eligibility
	// changes, Previous's ring is reused instead of placed again.
	RingWeights []int
	// Previous, when not nil, is a picker built earlier (typically for the
	// snapshot this one replaces). Its ID index is shared when the IDs are
	// the same, in the same order, and its WRR schedule or hash ring, the
	// costly parts (a 10,000-backend ring takes ~160ms), is reused when
	// built from the same IDs and weights; nothing else is shared.
	Previous *Picker
}

// ErrBadOptions is wrapped by NewWith when Options are inconsistent.
var ErrBadOptions = errors.New("bad picker options")

// Picker chooses backends from the fixed set given to New.
//
// A Picker is immutable after New, apart from the WRR position counter and
// the assignment counters, which are atomic; all methods are safe for
// concurrent use without locks. A Picker must not be copied.
//
// The Picker holds what every strategy shares: IDs, weights, loads and the
// weighted sampling used for exclusions and alternatives. The strategy's own
// tables and choice live in its chooser.
type Picker struct {
	strategy Strategy
	s        chooser
	ids      []string
	index    map[string]int32 // ID -> position in ids
	// prefix[i] is the total positive weight of backends [0, i), so
	// len(prefix) == len(ids)+1 and backend i owns [prefix[i], prefix[i+1]).
	prefix   []int64
	eligible int // backends with positive weight

	conns    []int64    // reported connections per backend
	counters []*Counter // assignments per backend; entries may be nil
	invW     []float64  // 1/weight, 0 for weight <= 0
	// bound is HashLoadFactor/total weight, 0 when hashing is unbounded.
	bound float64
	// base is the total load (conns + assigned) when the Picker was built;
	// picked counts the picks since, so base+picked is the current total.
	base int64

	// next and picked are written by picks. The padding keeps them off the
	// cache line holding the read-only fields above, which every pick also
	// reads.
	_      [64]byte
	next   atomic.Uint64 // WRR's schedule position
	picked atomic.Int64
	_      [48]byte
}

// chooser is one strategy's part of a Picker: its tables, built by
// newChooser, and its choice.
type chooser interface {
	// first returns the backend for key with nothing excluded, or -1 when
	// no backend is eligible. It counts no assignment.
	first(p *Picker, key string) int
	// choose appends backends not in t to dst, adding each to t, until
	// len(dst) == end; the caller has checked that enough eligible backends
	// remain outside t. It counts no assignment. Picker.choose calls it.
	choose(p *Picker, key string, t *taken, dst []int, end int) []int
}

// choose calls the chooser's choose on its concrete type: a *taken passed
// through an interface method escapes to the heap, and picks with
// exclusions must not allocate.
func (p *Picker) choose(key string, t *taken, dst []int, end int) []int {
	switch c := p.s.(type) {
	case *wrr:
		return c.choose(p, key, t, dst, end)
	case random:
		return c.choose(p, key, t, dst, end)
	case *ring:
		return c.choose(p, key, t, dst, end)
	case p2c:
		return c.choose(p, key, t, dst, end)
	case leastLoad:
		return c.choose(p, key, t, dst, end)
	}
	panic(fmt.Sprintf("balancer: no choose for %T", p.s))
}

// newChooser builds strategy s's chooser for p, whose shared fields are
// set. weights are the backends' positive weights (0 for ineligible ones).
// Every strategy is one case here; an unknown s returns nil.
func newChooser(s Strategy, p *Picker, weights []int64, o Options) chooser {
	switch s {
	case WRR:
		return newWRR(p, weights, o.Previous)
	case Random:
		return random{}
	case Hash:
		return newRing(p, weights, o)
	case P2C:
		return p2c{}
	case LeastLoad:
		return leastLoad{}
	}
	return nil
}

// New builds a Picker for strategy s over backends; it is NewWith with zero
// Options. The slice is copied; results of Pick and PickN are indices into
// it. Backends with Weight <= 0 are never picked, and an empty or all-zero
// set is allowed (every pick returns -1).
//
// New returns an error wrapping ErrUnknownStrategy if s is not one of the
// strategies above (New does not map "" to WRR; use ParseStrategy for
// operator input), ErrDuplicateID if two backends share an ID, or
// ErrWeightTooLarge.
//
// Cost: O(n) for Random, P2C and LeastLoad; for WRR, O(L·n) or O(L·log n)
// where L is the schedule length, sum(weights)/gcd(weights); for Hash,
// O(P·log P) where P is the ring size, 1.6 points per unit of weight/100. L
// and P are capped at 1<<20: above that, weights are scaled down
// proportionally with every positive weight kept at least 1. Each scaled
// weight is within one unit of the exact proportion, so only backends
// holding well under 1/2^20 of the total weight see their relative share
// noticeably distorted (tiny weights round up, never to zero). A smaller
// ring also spreads keys less evenly: a backend's share of keys varies by
// roughly 1/sqrt(its points). New is meant to run off the request path; it
// takes well under a second for 10,000 backends.
func New(s Strategy, backends []Backend) (*Picker, error) {
	return NewWith(s, backends, Options{})
}

// NewWith is New with load information and options; see Options. It also
// returns an error wrapping ErrBadOptions if len(o.Loads) is neither 0 nor
// len(backends), or o.HashLoadFactor is neither 0 nor above 1.
func NewWith(s Strategy, backends []Backend, o Options) (*Picker, error) {
	if !slices.Contains(strategies, s) {
		return nil, fmt.Errorf("new picker: strategy %q: %w (valid: %s)", s, ErrUnknownStrategy, validNames)
	}
	if o.Loads != nil && len(o.Loads) != len(backends) {
		return nil, fmt.Errorf("new picker: %d loads for %d backends: %w", len(o.Loads), len(backends), ErrBadOptions)
	}
	if o.RingWeights != nil && len(o.RingWeights) != len(backends) {
		return nil, fmt.Errorf("new picker: %d ring weights for %d backends: %w", len(o.RingWeights), len(backends), ErrBadOptions)
	}
	if o.HashLoadFactor != 0 && !(o.HashLoadFactor > 1 && o.HashLoadFactor < 1e6) {
		return nil, fmt.Errorf("new picker: hash load factor %v: %w (want 0 or above 1)", o.HashLoadFactor, ErrBadOptions)
	}
	p := &Picker{
		strategy: s,
		prefix:   make([]int64, len(backends)+1),
		conns:    make([]int64, len(backends)),
		counters: make([]*Counter, len(backends)),
		invW:     make([]float64, len(backends)),
	}
	// The ID list and its index change only when backends join or leave;
	// a rebuild for changed weights or loads shares the previous ones.
	if prev := o.Previous; prev != nil && sameIDs(prev.ids, backends) {
		p.ids, p.index = prev.ids, prev.index
	} else {
		p.ids, p.index = make([]string, len(backends)), make(map[string]int32, len(backends))
		for i, b := range backends {
			if _, dup := p.index[b.ID]; dup {
				return nil, fmt.Errorf("new picker: backend %q: %w", b.ID, ErrDuplicateID)
			}
			p.ids[i] = b.ID
			p.index[b.ID] = int32(i)
		}
	}
	weights := make([]int64, len(backends))
	for i, b := range backends {
		if b.Weight > maxWeight {
			return nil, fmt.Errorf("new picker: backend %q weight %d: %w (max %d)", b.ID, b.Weight, ErrWeightTooLarge, maxWeight)
		}
		if b.Weight > 0 {
			weights[i] = int64(b.Weight)
			p.invW[i] = 1 / float64(b.Weight)
			p.eligible++
		}
		p.prefix[i+1] = p.prefix[i] + weights[i]
		if o.Loads == nil {
			p.counters[i] = new(Counter)
		} else {
			p.conns[i] = max(0, o.Loads[i].Conns)
			p.counters[i] = o.Loads[i].Assigned
			if c := o.Loads[i].Capacity; c > 0 && b.Weight > 0 {
				p.invW[i] = 1 / float64(c)
			}
		}
		if b.Weight > 0 {
			p.base += p.load(i)
		}
	}
	p.s = newChooser(s, p, weights, o)
	return p, nil
}

// sameIDs reports whether backends carry exactly ids, in order.
func sameIDs(ids []string, backends []Backend) bool {
	if len(ids) != len(backends) {
		return false
	}
	for i := range ids {
		if ids[i] != backends[i].ID {
			return false
		}
	}
	return true
}

// Strategy returns the strategy the Picker was built with.
func (p *Picker) Strategy() Strategy { return p.strategy }

// Len returns the number of backends given to New, including those with
// weight <= 0. Valid results of Pick are in [0, Len()).
func (p *Picker) Len() int { return len(p.ids) }

// Pick returns the index (into the backends given to New) of the chosen
// backend, or -1 if no backend with positive weight remains after exclusion,
// and counts one assignment to it.
//
// key is used only by Hash; callers pass the client IP or the ?key= value.
// Without a load bound, the same key yields the same backend for as long as
// that backend is in the set and not excluded; with one, also only while
// that backend is below its bound. Other strategies ignore key.
//
// exclude lists backend IDs the caller must not receive, typically those it
// just failed to reach; unknown IDs are ignored. WRR then claims further
// schedule slots (at most 16 more) until one holds an allowed backend, and
// otherwise falls back to a weighted random choice among the rest; Random
// and P2C draw among the remaining backends by weight; LeastLoad scans the
// rest; Hash walks clockwise to the next remaining backend.
//
// Pick is safe for concurrent use and does not allocate as long as
// len(exclude) <= 128. Cost: O(1) for WRR, O(log n) for Random, P2C and
// unbounded Hash (plus O(len(key)) hashing), O(n) for LeastLoad; bounded
// Hash adds a walk past full backends, short unless most are full; a
// non-empty exclude adds a map lookup and a small sorted insert per ID.
func (p *Picker) Pick(key string, exclude []string) int {
	i := -1
	if len(exclude) == 0 {
		i = p.s.first(p, key)
	} else {
		var one [1]int
		if got := p.PickN(key, exclude, 1, one[:0]); len(got) > 0 {
			return got[0] // PickN counted it
		}
	}
	if i >= 0 {
		p.assign(i)
	}
	return i
}

// PickN appends to dst up to n distinct backend indices in order of
// preference and returns the extended slice. The first is chosen exactly as
// Pick would choose it, and counted as Pick counts it; the rest are
// alternatives a client may try next, not counted: for WRR the next distinct
// backends in the schedule, for Random and P2C weighted sampling without
// replacement, for LeastLoad the next least loaded, for Hash the next
// distinct backends clockwise on the ring (so the list is deterministic for
// a key while no bound applies). Fewer than n are appended when fewer
// eligible, non-excluded backends exist. key and exclude mean what they mean
// for Pick.
//
// PickN is safe for concurrent use. It does not allocate when cap(dst)-len(dst)
// >= n and len(exclude)+n <= 128. It is meant for small n: cost is
// O(n·(n+len(exclude)+log Len())) in general, though Hash may walk up to the
// whole ring when n approaches the number of backends, and LeastLoad scans
// all backends per entry.
func (p *Picker) PickN(key string, exclude []string, n int, dst []int) []int {
	if n <= 0 {
		return dst
	}
	var t taken
	p.exclude(&t, exclude)
	start := len(dst)
	// Knowing how many can still be found lets every chooser stop early
	// instead of searching for backends that do not exist.
	if end := start + min(n, p.eligible-len(t.list())); end > start {
		dst = p.choose(key, &t, dst, end)
	}
	if len(dst) > start {
		p.assign(dst[start])
	}
	return dst
}

// assign counts one client handed to backend i.
func (p *Picker) assign(i int) {
	if c := p.counters[i]; c != nil {
		c.Add(1)
	}
	if p.bound > 0 {
		p.picked.Add(1)
	}
}

// load returns backend i's current load: reported connections plus
// assignments counted since.
func (p *Picker) load(i int) int64 {
	l := p.conns[i]
	if c := p.counters[i]; c != nil {
		l += c.Load()
	}
	return l
}

// score is backend i's load per unit of weight; lower is better. The +1
// makes an empty backend's score depend on its weight, so a backend in slow
// start (small weight) fills only up to its share instead of taking every
// client while its load is 0.
func (p *Picker) score(i int) float64 {
	return float64(p.load(i)+1) * p.invW[i]
}

// take appends backend i to dst and adds it to t.
func (p *Picker) take(t *taken, dst []int, i int) []int {
	t.add(int32(i), p.weight(i))
	return append(dst, i)
}

// fill appends weighted samples of the backends not in t until len(dst) ==
// end: the alternatives of every strategy that has no order of its own.
func (p *Picker) fill(t *taken, dst []int, end int) []int {
	for len(dst) < end {
		dst = p.take(t, dst, p.sample(t))
	}
	return dst
}

func (p *Picker) total() int64 { return p.prefix[len(p.prefix)-1] }

func (p *Picker) weight(i int) int64 { return p.prefix[i+1] - p.prefix[i] }

// locate returns the backend owning weight unit r, 0 <= r < total. Zero-weight
// backends own empty ranges and are never returned.
func (p *Picker) locate(r int64) int {
	j, _ := slices.BinarySearch(p.prefix, r+1) // first j with prefix[j] > r
	return j - 1
}

// sample returns a backend not in t, chosen with probability proportional to
// weight, or -1 if none remains. Rather than rejecting excluded draws, it
// draws r from the remaining weight and maps it past the excluded ranges,
// which costs O(len(t)) instead of O(n) however much weight is excluded.
func (p *Picker) sample(t *taken) int {
	rest := p.total() - t.weight
	if rest <= 0 {
		return -1
	}
	r := rand.Int64N(rest)
	for _, x := range t.list() { // ascending, so ranges come in order
		if r < p.prefix[x] {
			break
		}
		r += p.weight(int(x))
	}
	return p.locate(r)
}

// draw returns a backend not in t (t may be nil) chosen by weight.
func (p *Picker) draw(t *taken) int {
	if t == nil {
		return p.locate(rand.Int64N(p.total()))
	}
	return p.sample(t)
}

// exclude adds the eligible backends named in ids to t. Unknown IDs and
// zero-weight backends are skipped: they can never be picked anyway, and
// keeping them out of t keeps its count of eligible members exact.
func (p *Picker) exclude(t *taken, ids []string) {
	for _, id := range ids {
		if i, ok := p.index[id]; ok {
			if w := p.weight(int(i)); w > 0 {
				t.add(i, w)
			}
		}
	}
}
