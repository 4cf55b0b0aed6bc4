package prober

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/store"
)

func TestComputeRebalance(t *testing.T) {
	srv := func(id string, conns int64, weight int) RebalanceServer {
		return RebalanceServer{ID: id, Conns: conns, Weight: weight}
	}
	tests := []struct {
		name    string
		fleet   RebalanceFleet
		tol     float64
		blocked RebalanceBlock
		share   []float64
		excess  []int64
	}{
		{"balanced: no excess", RebalanceFleet{Servers: []RebalanceServer{srv("a", 100, 100), srv("b", 100, 100)}}, 0.1, "",
			[]float64{100, 100}, []int64{0, 0}},
		{"recovered server: survivors shed above share×1.1",
			RebalanceFleet{Servers: []RebalanceServer{srv("a", 2500, 100), srv("b", 2500, 100), srv("c", 2500, 100), srv("d", 2500, 100), srv("e", 0, 100)}},
			0.1, "", []float64{2000, 2000, 2000, 2000, 2000}, []int64{300, 300, 300, 300, 0}},
		{"within tolerance: nothing", RebalanceFleet{Servers: []RebalanceServer{srv("a", 109, 100), srv("b", 91, 100)}}, 0.1, "",
			[]float64{100, 100}, []int64{0, 0}},
		{"tolerance 0: down to share", RebalanceFleet{Servers: []RebalanceServer{srv("a", 109, 100), srv("b", 91, 100)}}, 0, "",
			[]float64{100, 100}, []int64{9, 0}},
		{"weights: 1:3 shares", RebalanceFleet{Servers: []RebalanceServer{srv("a", 400, 100), srv("b", 400, 300)}}, 0.1, "",
			[]float64{200, 600}, []int64{180, 0}},
		{"weight 0 takes no share", RebalanceFleet{Servers: []RebalanceServer{srv("a", 10, 0), srv("b", 90, 100)}}, 0.1, "",
			[]float64{0, 100}, []int64{10, 0}},
		{"stale report blocks", RebalanceFleet{Servers: []RebalanceServer{srv("a", 300, 100), {ID: "b", Weight: 100, Stale: true}}}, 0.1, BlockStale, nil, nil},
		{"slow start blocks", RebalanceFleet{Servers: []RebalanceServer{srv("a", 300, 100), {ID: "b", Weight: 100, SlowStart: true}}}, 0.1, BlockSlowStart, nil, nil},
		{"panic blocks", RebalanceFleet{Panic: true, Servers: []RebalanceServer{srv("a", 300, 100), srv("b", 0, 100)}}, 0.1, BlockPanic, nil, nil},
		{"mass removal blocks", RebalanceFleet{MassRemoval: true, Servers: []RebalanceServer{srv("a", 300, 100), srv("b", 0, 100)}}, 0.1, BlockMassRemoval, nil, nil},
		{"all down blocks", RebalanceFleet{AllDown: true}, 0.1, BlockAllDown, nil, nil},
		{"no server blocks", RebalanceFleet{}, 0.1, BlockAllDown, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ComputeRebalance(tt.fleet, tt.tol)
			if p.Blocked != tt.blocked {
				t.Fatalf("blocked %q; want %q", p.Blocked, tt.blocked)
			}
			if tt.blocked != "" {
				if len(p.Targets) != 0 {
					t.Fatalf("blocked plan has targets %+v", p.Targets)
				}
				return
			}
			for i, tg := range p.Targets {
				if tg.ID != tt.fleet.Servers[i].ID || tg.Share != tt.share[i] || tg.Excess != tt.excess[i] {
					t.Errorf("target %d = %+v; want share %v excess %d", i, tg, tt.share[i], tt.excess[i])
				}
			}
		})
	}
}

func TestRebalancePacer(t *testing.T) {
	rate := store.RebalanceRate{ServerPerSecond: 0.01, FleetPerMinute: 0.05}
	t0 := time.Unix(5000, 0)
	t.Run("per server: 1% of conns per second, one second's burst", func(t *testing.T) {
		p := newRebalancePacer()
		// 2500 conns: 25 per second.
		if n := p.grant("a", 2500, 300, 1000, t0, rate); n != 25 {
			t.Fatalf("first grant %d; want a full second's 25", n)
		}
		if n := p.grant("a", 2500, 300, 1000, t0.Add(100*time.Millisecond), rate); n != 2 {
			t.Fatalf("grant after 100ms %d; want 2 (2.5 accrued)", n)
		}
		if n := p.grant("a", 2500, 300, 1000, t0.Add(time.Hour), rate); n != 25 {
			t.Fatalf("grant after an hour %d; want capped at 25", n)
		}
		// Never more than wanted.
		if n := p.grant("b", 2500, 3, 1000, t0, rate); n != 3 {
			t.Fatalf("grant of 3 wanted %d", n)
		}
		// A small server still moves one at a time.
		if n := p.grant("c", 10, 5, 1000, t0, rate); n != 1 {
			t.Fatalf("small server grant %d; want 1", n)
		}
	})
	t.Run("fleet: 5% per minute, sliding", func(t *testing.T) {
		p := newRebalancePacer()
		fast := store.RebalanceRate{ServerPerSecond: 1, FleetPerMinute: 0.05}
		total := int64(10000) // 500 per minute
		var moved int64
		for i := range 10 {
			now := t0.Add(time.Duration(i) * time.Second)
			budget := p.fleetBudget(now, total, fast)
			for _, id := range []string{"a", "b", "c", "d"} {
				n := p.grant(id, 2500, 2500, budget, now, fast)
				budget -= n
				moved += n
			}
		}
		if moved != 500 {
			t.Fatalf("moved %d within a minute; want the fleet's 500", moved)
		}
		if b := p.fleetBudget(t0.Add(59*time.Second), total, fast); b != 0 {
			t.Fatalf("budget %d before the minute passed; want 0", b)
		}
		if b := p.fleetBudget(t0.Add(60*time.Second), total, fast); b != 500 {
			t.Fatalf("budget %d a minute after the first grants; want 500", b)
		}
	})
}

func TestShedURL(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int64
		want string
	}{
		{"http://h:1/status", 0, "http://h:1/status"},
		{"http://h:1/status", 7, "http://h:1/status?shed=7"},
		{"http://h:1/status?x=1", 7, "http://h:1/status?shed=7&x=1"},
		{"http://h:1/status?shed=3", 7, "http://h:1/status?shed=7"},
	} {
		if got := shedURL(tt.in, tt.n); got != tt.want {
			t.Errorf("shedURL(%q, %d) = %q; want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

// shedServer is a status endpoint whose conns drop by the ?shed=N it is
// asked for, as a serverkit server's do; the shed clients reconnect to
// peer, as least-load would send them.
type shedServer struct {
	conns, total atomic.Int64
	peer         *shedServer
	mu           sync.Mutex
	asked        []int64
	srv          *httptest.Server
}

func newShedServer(t *testing.T, conns int64, peer *shedServer) *shedServer {
	s := &shedServer{peer: peer}
	s.conns.Store(conns)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("shed"); v != "" {
			n, _ := strconv.ParseInt(v, 10, 64)
			s.mu.Lock()
			s.asked = append(s.asked, n)
			s.mu.Unlock()
			n = min(n, s.conns.Load())
			s.conns.Add(-n)
			s.total.Add(n)
			if s.peer != nil {
				s.peer.conns.Add(n)
			}
		}
		fmt.Fprintf(w, `{"conns":%d,"max_conns":0,"load":0,"draining":false,"shed_total":%d}`, s.conns.Load(), s.total.Load())
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *shedServer) asks() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.asked...)
}

// TestProberRebalances runs a prober against etcd and two status
// endpoints, one holding 300 connections and one none: with rebalancing
// off nothing is asked; with it on, the full one is asked to shed, paced,
// until it is within tolerance of its share (150 × 1.1), never below it.
func TestProberRebalances(t *testing.T) {
	e := newEnv(t)
	empty := newShedServer(t, 0, nil)
	full := newShedServer(t, 300, empty)
	var rev int64
	for id, s := range map[string]*shedServer{"full": full, "empty": empty} {
		e.register(t, id, strings.TrimPrefix(s.srv.URL, "http://"))
		rev = etcdtest.Put(t, e.cli, e.keys.ServerField(id, keyspace.FieldStatusURL), s.srv.URL+"/status")
	}
	rev = max(rev, etcdtest.Put(t, e.cli, e.keys.Config(store.ConfigSlowStart), "0"))
	e.waitSnapshot(t, rev)

	p, _ := newTestProber(t, testConfig(), e.keys, e.w)
	wr := newFencedWriter(t, e.cli, "leader-1")
	runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })
	waitHealth(t, e.cli, e.keys, "full", "a report", func(h store.Health, ok bool) bool { return ok && h.HasReport() })
	waitRounds(t, p, 5)
	if asked := full.asks(); full.conns.Load() != 300 || len(asked) != 0 {
		t.Fatalf("rebalancing off: conns %d, asked %v; want nothing asked", full.conns.Load(), asked)
	}

	// 10%/s of 300 is 30 per second; 100%/m leaves the server limit in force.
	etcdtest.Put(t, e.cli, e.keys.Config(store.ConfigRebalanceRate), "10%/s,100%/m")
	etcdtest.Put(t, e.cli, e.keys.Config(store.ConfigRebalance), "on")
	etcdtest.WaitFor(t, 20*time.Second, "full to shed down to its share × 1.1", func() bool { return full.conns.Load() <= 165 })
	waitRounds(t, p, 5)
	// It may end a little below 165, as clients in transit are missing
	// from the total the leader divides, but never below its share.
	final := full.conns.Load()
	if final > 165 || final < 150 {
		t.Errorf("full holds %d after rebalancing; want within [share 150, share × 1.1 = 165]", final)
	}
	for _, n := range full.asks() {
		if n > 30 {
			t.Errorf("asked to shed %d at once; want at most 30 (one second at 10%%/s)", n)
		}
	}
	if asked := empty.asks(); len(asked) != 0 {
		t.Errorf("the server below its share was asked to shed %v", asked)
	}
	h := waitHealth(t, e.cli, e.keys, "full", "shed_total", func(h store.Health, ok bool) bool { return ok && h.ShedTotal == 300-final })
	if h.Conns != final {
		t.Errorf("record %+v; want conns %d", h, final)
	}
	if got := testutil.ToFloat64(p.rbMetrics.shed.WithLabelValues("full")); got != float64(300-final) {
		t.Errorf("tcpdispatch_rebalance_shed_total{server=full} = %v; want %d", got, 300-final)
	}
}

// TestPlanRebalance drives the leader's round planning from a snapshot and
// the prober's trackers: it asks the server above its share, paced, and
// nothing in the fleet states that hold rebalancing back.
func TestPlanRebalance(t *testing.T) {
	now := time.Unix(9000, 0)
	bal := store.DefaultBalancing()
	bal.Rebalance.Mode = store.RebalanceOn
	bal.Rebalance.Rate = store.RebalanceRate{ServerPerSecond: 0.1, FleetPerMinute: 1}
	servers := []store.Server{
		{ID: "a", Addr: "127.0.0.1:1", Weight: 100, Healthy: true, State: "up", Eligible: true, SlowStart: 1},
		{ID: "b", Addr: "127.0.0.1:2", Weight: 100, Healthy: true, State: "up", Eligible: true, SlowStart: 1},
	}
	conns := map[string]int64{"a": 300, "b": 0}
	tests := []struct {
		name    string
		mod     func(snap *store.Snapshot, loads map[string]*loadTracker)
		blocked RebalanceBlock
		shedA   int64
	}{
		{"a sheds its paced excess", nil, BlockNone, 30},
		{"off", func(s *store.Snapshot, _ map[string]*loadTracker) { s.Balancing.Rebalance.Mode = store.RebalanceOff }, BlockOff, 0},
		{"panic", func(s *store.Snapshot, _ map[string]*loadTracker) { s.Panic = true }, BlockPanic, 0},
		{"mass removal", func(s *store.Snapshot, _ map[string]*loadTracker) { s.MassRemoval = "3 of 4" }, BlockMassRemoval, 0},
		{"held server", func(s *store.Snapshot, _ map[string]*loadTracker) { s.Servers[1].Held = true }, BlockMassRemoval, 0},
		{"slow start of the receiver", func(s *store.Snapshot, _ map[string]*loadTracker) { s.Servers[1].SlowStart = 0.5 }, BlockSlowStart, 0},
		{"stale report", func(_ *store.Snapshot, l map[string]*loadTracker) { l["b"].pulledAt = now.Add(-time.Minute) }, BlockStale, 0},
		{"no report", func(_ *store.Snapshot, l map[string]*loadTracker) { l["b"].has = false }, BlockStale, 0},
		{"draining receiver is left out", func(s *store.Snapshot, l map[string]*loadTracker) { s.Servers[1].Draining = true }, BlockNone, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := store.NewSnapshotWith(1, "wrr", bal, servers, now)
			if err != nil {
				t.Fatal(err)
			}
			trackers := map[string]*tracker{}
			loads := map[string]*loadTracker{}
			var targets []target
			for _, s := range servers {
				trackers[s.ID] = &tracker{addr: s.Addr, status: statusUp}
				loads[s.ID] = &loadTracker{has: true, pulledAt: now.Add(-100 * time.Millisecond), last: Status{Conns: conns[s.ID]}}
				targets = append(targets, target{id: s.ID, addr: s.Addr})
			}
			if tt.mod != nil {
				tt.mod(snap, loads)
			}
			p, _ := newTestProber(t, testConfig(), keyspace.Layout{}, nil)
			rb := newRebalancer()
			rb.blocked = "" // log the first state
			p.planRebalance(rb, snap, targets, trackers, loads, now, time.Second, p.log)
			if rb.blocked != tt.blocked {
				t.Errorf("blocked %q; want %q", rb.blocked, tt.blocked)
			}
			if targets[0].shed != tt.shedA || targets[1].shed != 0 {
				t.Errorf("shed a=%d b=%d; want a=%d b=0", targets[0].shed, targets[1].shed, tt.shedA)
			}
		})
	}
}
