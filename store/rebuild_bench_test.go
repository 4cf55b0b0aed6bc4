package store

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// fleetModel returns a model of n registered servers, each with a healthy
// verdict well past slow start, under strategy st; a third carry a fresh
// load report when reports is set. It is the replica's copy at the scale of
// issue 11.
func fleetModel(tb testing.TB, n int, st balancer.Strategy, reports bool, now time.Time) *model {
	tb.Helper()
	m := newTestModel(tb)
	m.put(testPrefix+"config/strategy", []byte(st), 1)
	for i := range n {
		id := fmt.Sprintf("tcp%05d", i)
		addr := fmt.Sprintf("127.%d.%d.%d:9000", i>>16&255, i>>8&255, i&255)
		m.put(m.keys.ServerField(id, keyspace.FieldAddr), []byte(addr), int64(2+i))
		m.put(m.keys.ServerField(id, keyspace.FieldWeight), []byte(fmt.Sprint(100+i%7*50)), int64(2+i))
		h := Health{Addr: addr, Healthy: true, Since: now.Add(-time.Hour), CheckedAt: now, Epoch: 1, Leader: "r1"}
		if reports && i%3 == 0 {
			h.Load, h.Conns, h.MaxConns = float64(i%50)/100, int64(i%50), 100
			h.ReportedAt, h.ReportExpires = now, now.Add(time.Hour)
		}
		b, err := json.Marshal(h)
		if err != nil {
			tb.Fatal(err)
		}
		if r := m.put(m.keys.Health(id), b, int64(2+i)); r != nil {
			tb.Fatal(r.err)
		}
	}
	return m
}

// flip puts a health record for server i: down when down is set, else up.
func flip(tb testing.TB, m *model, i int, down bool, now time.Time) {
	id := fmt.Sprintf("tcp%05d", i)
	addr := fmt.Sprintf("127.%d.%d.%d:9000", i>>16&255, i>>8&255, i&255)
	h := Health{Addr: addr, Healthy: !down, Since: now.Add(-time.Hour), CheckedAt: now, Epoch: 1, Leader: "r1"}
	if down {
		h.Reason = "connect: connection refused"
	}
	b, _ := json.Marshal(h)
	if r := m.put(m.keys.Health(id), b, 1); r != nil {
		tb.Fatal(r.err)
	}
}

// BenchmarkRebuild measures what one watch response costs a replica of
// 10,000 servers: apply k health changes, then build and publish the next
// snapshot. The target of issue 11 is cost in proportion to k, not n.
func BenchmarkRebuild(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	for _, st := range []balancer.Strategy{balancer.WRR, balancer.Hash, balancer.P2C} {
		for _, reports := range []bool{false, true} {
			for _, k := range []int{1, 100} {
				name := fmt.Sprintf("%s/n=10000/k=%d", st, k)
				if reports {
					name += "/reports"
				}
				b.Run(name, func(b *testing.B) {
					m := fleetModel(b, 10000, st, reports, now)
					if _, err := m.build(now); err != nil {
						b.Fatal(err)
					}
					b.ReportAllocs()
					round := 0
					for b.Loop() {
						round++
						for j := range k {
							flip(b, m, (j*97+round*7)%10000, round%2 == 1, now)
						}
						if _, err := m.build(now); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkMemoryPerServer reports the live heap a replica holds per
// registered server: its local copy plus the snapshot it serves (entries,
// answers, picker; for hash, a ring of up to 2^20 points, 12 MB).
func BenchmarkMemoryPerServer(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	const n = 10000
	for _, st := range []balancer.Strategy{balancer.WRR, balancer.Hash} {
		b.Run(fmt.Sprintf("%s/n=%d", st, n), func(b *testing.B) {
			var perServer float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.GC() // finish sweeping what the last round left
				runtime.ReadMemStats(&before)
				m := fleetModel(b, n, st, true, now)
				if _, err := m.build(now); err != nil {
					b.Fatal(err)
				}
				// A second build: the replica keeps only the newest.
				s, err := m.build(now.Add(time.Second))
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				runtime.GC()
				runtime.ReadMemStats(&after)
				perServer = float64(after.HeapAlloc-before.HeapAlloc) / n
				runtime.KeepAlive(m)
				runtime.KeepAlive(s)
			}
			b.ReportMetric(perServer, "B/server")
		})
	}
}
