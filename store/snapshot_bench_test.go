package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/store"
)

func benchSnapshot(b *testing.B, n int, strategy balancer.Strategy) *store.Snapshot {
	servers := make([]store.Server, n)
	for i := range servers {
		servers[i] = store.Server{ID: fmt.Sprintf("tcp%05d", i), Addr: fmt.Sprintf("10.0.%d.%d:9000", i/250, i%250),
			Weight: 100 + i%7*50, Healthy: true, State: "up", Eligible: true}
	}
	s, err := store.NewSnapshot(1, strategy, servers, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkSnapshotPick measures one pick from a snapshot as get-tcp-ip
// makes it, including the answer lookup: the target is 0 allocs/op.
func BenchmarkSnapshotPick(b *testing.B) {
	for _, st := range []balancer.Strategy{balancer.WRR, balancer.Random, balancer.Hash} {
		for _, n := range []int{10, 10000} {
			b.Run(fmt.Sprintf("%s/%d", st, n), func(b *testing.B) {
				s := benchSnapshot(b, n, st)
				exclude := []string{}
				b.ReportAllocs()
				for b.Loop() {
					if srv := s.Pick("192.0.2.7", exclude); srv == nil || len(srv.Answer()) == 0 {
						b.Fatal("no pick")
					}
				}
			})
		}
	}
}
