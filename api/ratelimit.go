package api

import (
	"math"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate-limiter table shape.
const (
	limiterShards = 32
	// evictSample is how many entries an eviction looks at to pick the
	// least recently seen: approximate LRU without a list to maintain.
	evictSample = 8
	// defaultRateTableSize bounds the table: with an entry costing about
	// 200 bytes, some 13 MiB.
	defaultRateTableSize = 1 << 16
)

// limiterTable holds one token bucket per client address, in a table of
// bounded size: a flood of distinct addresses evicts the least recently
// seen entries (from a sample) rather than growing memory. An evicted
// address starts again with a full bucket, so under such a flood the
// limit is approximate; the evictions are counted.
type limiterTable struct {
	limit  rate.Limit
	burst  int
	perMax int // entries per shard
	now    func() time.Time
	m      *securityMetrics
	shards [limiterShards]limiterShard
}

type limiterShard struct {
	mu      sync.Mutex
	entries map[netip.Addr]*limiterEntry
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiterTable(perSec float64, burst, size int, now func() time.Time, m *securityMetrics) *limiterTable {
	if burst <= 0 {
		burst = max(1, int(math.Ceil(perSec)))
	}
	if size <= 0 {
		size = defaultRateTableSize
	}
	t := &limiterTable{limit: rate.Limit(perSec), burst: burst, perMax: max(1, size/limiterShards), now: now, m: m}
	for i := range t.shards {
		t.shards[i].entries = make(map[netip.Addr]*limiterEntry)
	}
	return t
}

// allow takes a token for ip's bucket. When there is none, it returns
// false and how long until there is. An address that does not parse
// shares one bucket with every other such address. Only a new address
// allocates.
func (t *limiterTable) allow(ip string) (time.Duration, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		a = netip.Addr{}
	}
	a = a.Unmap()
	if a.Is6() {
		// One host commonly holds a whole /64.
		a = netip.PrefixFrom(a.WithZone(""), 64).Masked().Addr()
	}
	now := t.now()
	sh := &t.shards[shardOf(a)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entries[a]
	if e == nil {
		if len(sh.entries) >= t.perMax {
			t.evict(sh)
		} else {
			t.m.rateAddresses.Inc()
		}
		e = &limiterEntry{lim: rate.NewLimiter(t.limit, t.burst)}
		sh.entries[a] = e
	}
	e.seen = now
	if e.lim.AllowN(now, 1) {
		return 0, true
	}
	missing := 1 - e.lim.TokensAt(now)
	return time.Duration(missing / float64(t.limit) * float64(time.Second)), false
}

// evict removes the least recently seen of a sample of sh's entries.
// Called with sh.mu held.
func (t *limiterTable) evict(sh *limiterShard) {
	var (
		oldest netip.Addr
		when   time.Time
		n      int
	)
	for a, e := range sh.entries {
		if n == 0 || e.seen.Before(when) {
			oldest, when = a, e.seen
		}
		if n++; n == evictSample {
			break
		}
	}
	delete(sh.entries, oldest)
	t.m.rateEvictions.Inc()
}

// size returns how many addresses the table holds.
func (t *limiterTable) size() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.entries)
		sh.mu.Unlock()
	}
	return n
}

// shardOf spreads addresses over the shards (FNV-1a of the 16 bytes).
func shardOf(a netip.Addr) int {
	b := a.As16()
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return int(h % limiterShards)
}
