package store

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
)

// up returns a servable entry as refresh derives it from the keys.
func up(id string, weight int, since time.Time) Server {
	return Server{ID: id, Addr: "10.0.0.1:1", Weight: weight, Healthy: true, State: "up", Since: since, SlowStart: 1, Report: "none"}
}

// weighEntries runs weigh on servers and sets each one's decision on it,
// as a build does on its entries.
func weighEntries(servers []Server, bal Balancing, now time.Time, prev guardState) (weighed, guardState) {
	ptrs := make([]*Server, len(servers))
	for i := range servers {
		ptrs[i] = &servers[i]
	}
	f := flatOf(ptrs)
	w, next := weigh(f.ids, f.in, f.out, bal, now, prev)
	for i := range f.out {
		f.out[i].apply(&servers[i])
	}
	return w, next
}

// TestWeigh exercises the weight policy as a pure function: plain entries
// in, weights out, no etcd and no model.
func TestWeigh(t *testing.T) {
	now := time.Unix(100000, 0)
	old := now.Add(-time.Hour)
	bal := DefaultBalancing()
	fresh := func(s Server, load float64, overloaded bool) Server {
		s.Report, s.Load, s.Overloaded = "fresh", load, overloaded
		return s
	}
	down := func(s Server) Server { s.Healthy, s.State = false, "down"; return s }
	tests := []struct {
		name    string
		bal     func(*Balancing)
		servers []Server
		want    []int // effective weights
		panic   bool
		allDown bool
	}{
		{"static", nil, []Server{up("a", 100, old), up("b", 300, old)}, []int{100, 300}, false, false},
		{"slow start at a quarter", nil, []Server{up("a", 100, old), up("b", 200, now.Add(-bal.SlowStart/4))}, []int{100, 50}, false, false},
		{"slow start waits for an established server", nil, []Server{up("a", 100, now), up("b", 200, now)}, []int{100, 200}, false, false},
		{"load halves", nil, []Server{fresh(up("a", 100, old), 0.5, false), up("b", 100, old)}, []int{50, 100}, false, false},
		{"overloaded out", nil, []Server{fresh(up("a", 100, old), 0.95, true), up("b", 100, old), up("c", 100, old)}, []int{0, 100, 100}, false, false},
		{"panic spreads over all", nil, []Server{fresh(up("a", 100, old), 0.95, true), fresh(up("b", 100, old), 0.95, true), up("c", 100, old)},
			[]int{100, 100, 100}, true, false},
		{"all down served degraded", nil, []Server{down(up("a", 100, old)), down(up("b", 0, old))}, []int{100, 0}, false, true},
		{"all down fails", func(b *Balancing) { b.AllDown = AllDownFail }, []Server{down(up("a", 100, old))}, []int{0}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := DefaultBalancing()
			if tt.bal != nil {
				tt.bal(&b)
			}
			got, _ := weighEntries(tt.servers, b, now, guardState{})
			for i, srv := range tt.servers {
				if srv.EffectiveWeight != tt.want[i] || srv.Eligible != (tt.want[i] > 0) {
					t.Errorf("%s: effective %d eligible %v, want %d", srv.ID, srv.EffectiveWeight, srv.Eligible, tt.want[i])
				}
			}
			if got.panic != tt.panic || got.allDown != tt.allDown {
				t.Errorf("panic %v all-down %v, want %v %v", got.panic, got.allDown, tt.panic, tt.allDown)
			}
		})
	}
}

// TestWeighGuard runs the mass-removal guard through weigh's returned
// state, as successive builds do.
func TestWeighGuard(t *testing.T) {
	now := time.Unix(100000, 0)
	old := now.Add(-time.Hour)
	bal := DefaultBalancing()
	bal.MassRemoval, bal.PanicThreshold = MassRemovalHold, 0
	fleet := func(downs ...string) []Server {
		var out []Server
		for _, id := range []string{"a", "b", "c", "d"} {
			s := up(id, 100, old)
			if strings.Contains(strings.Join(downs, ","), id) {
				s.Healthy, s.State = false, "down"
			}
			out = append(out, s)
		}
		return out
	}
	_, g := weighEntries(fleet(), bal, now, guardState{})
	s := fleet("b", "c", "d")
	w, g := weighEntries(s, bal, now, g)
	if !strings.Contains(w.massRemoval, "3 of 4") || !s[2].Held || s[2].EffectiveWeight != 100 {
		t.Fatalf("removal %q, c held %v weight %d", w.massRemoval, s[2].Held, s[2].EffectiveWeight)
	}
	s = fleet("b", "c", "d")
	if w, _ = weighEntries(s, bal, now, g); w.massRemoval != "" || !s[3].Held {
		t.Fatalf("hold in force: removal %q (want none), d held %v", w.massRemoval, s[3].Held)
	}
	s = fleet("d")
	if _, g = weighEntries(s, bal, now, g); s[3].Held || g.hold != nil {
		t.Fatalf("after recovery: d held %v, hold %v", s[3].Held, g.hold)
	}
}

// TestIncrementalBuildMatchesFresh applies random changes to one model,
// building after each batch as the watcher does, and checks every snapshot
// against a model that lists the same keys from scratch: the entries kept
// from earlier builds must never differ from what a replica that just
// started derives (same etcd state, same answers).
func TestIncrementalBuildMatchesFresh(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { incrementalMatchesFresh(t, seed) })
	}
}

func incrementalMatchesFresh(t *testing.T, seed uint64) {
	now := time.Unix(100000, 0)
	rng := rand.New(rand.NewPCG(seed, 2))
	kv := map[string]string{}
	m := newTestModel(t)
	m.put(testPrefix+"config/mass-removal", []byte("hold"), 1)
	kv["config/mass-removal"] = "hold"
	set := func(k, v string) {
		kv[k] = v
		m.put(testPrefix+k, []byte(v), 1)
	}
	unset := func(k string) {
		delete(kv, k)
		m.del(testPrefix + k)
	}
	addr := func(i int) string { return fmt.Sprintf("10.0.%d.%d:1", i/200, i%200) }
	health := func(i int, healthy bool, load float64) string {
		h := Health{Addr: addr(i), Healthy: healthy, Since: now.Add(-time.Duration(rng.IntN(60)) * time.Second), CheckedAt: now}
		if load > 0 {
			h.Load, h.Conns, h.ReportedAt, h.ReportExpires = load, int64(load*100), now, now.Add(time.Duration(rng.IntN(3))*time.Second)
		}
		b, _ := json.Marshal(h)
		return string(b)
	}
	strategies := []balancer.Strategy{balancer.WRR, balancer.Hash, balancer.P2C}
	const n = 60
	// Successive snapshots share entries: a build must never change one
	// that an earlier snapshot, still served, holds.
	var last *Snapshot
	var lastDigest string
	for round := range 200 {
		for range 1 + rng.IntN(8) {
			i := rng.IntN(n)
			id := fmt.Sprintf("s%02d", i)
			switch rng.IntN(10) {
			case 0, 1:
				set("servers/"+id+"/addr", addr(i))
			case 2:
				unset("servers/" + id + "/addr")
			case 3:
				set("servers/"+id+"/weight", fmt.Sprint(rng.IntN(4)*100))
			case 4:
				// Invalid values are left out: what stays in force then
				// depends on history, which the watcher resolves from etcd.
				set("servers/"+id+"/drain-reason", fmt.Sprint("round ", round))
			case 5:
				set("servers/"+id+"/drain", fmt.Sprint(rng.IntN(2) == 0))
			case 6:
				unset("health/" + id)
			case 7:
				set("config/strategy", string(strategies[rng.IntN(len(strategies))]))
			default:
				set("health/"+id, health(i, rng.IntN(3) > 0, float64(rng.IntN(4))/4))
			}
		}
		at := now.Add(time.Duration(round) * 100 * time.Millisecond)
		prevGuard := m.guard
		got, err := m.build(at)
		if err != nil {
			t.Fatal(err)
		}
		fresh := newTestModel(t)
		for k, v := range kv {
			fresh.put(testPrefix+k, []byte(v), 1)
		}
		// The guard remembers earlier builds; the fresh model must too.
		fresh.guard = prevGuard
		want, err := fresh.build(at)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := fullDigest(got), fullDigest(want); g != w {
			t.Fatalf("round %d: incremental build differs from a fresh one:\n got %s\nwant %s", round, g, w)
		}
		if last != nil && fullDigest(last) != lastDigest {
			t.Fatalf("round %d: the build changed the snapshot of round %d:\n now %s\n was %s", round, round-1, fullDigest(last), lastDigest)
		}
		last, lastDigest = got, fullDigest(got)
		for _, key := range []string{"10.1.2.3", "192.0.2.1", "k"} {
			a, b := got.Pick(key, nil), want.Pick(key, nil)
			if got.Strategy == balancer.Hash && (a == nil) != (b == nil) || a != nil && b != nil && got.Strategy == balancer.Hash && a.ID != b.ID {
				t.Fatalf("round %d: hash key %s: incremental %v, fresh %v", round, key, a, b)
			}
		}
	}
}

// fullDigest is every exported field of every server, with the answers.
func fullDigest(s *Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s panic=%v all-down=%v eligible=%d rebuild=%v problems=%q orphans=%q\n",
		s.Strategy, s.Panic, s.AllDown, s.Eligible(), s.RebuildAt.UnixNano(), s.Problems, s.OrphanHealth())
	for _, srv := range s.Servers {
		c := *srv
		c.counter, c.picks, c.answer, c.answerText, c.DrainReason = nil, nil, nil, nil, nil
		fmt.Fprintf(&b, "%+v answer=%s text=%s", c, srv.Answer(), srv.AnswerText())
		if srv.DrainReason != nil {
			fmt.Fprintf(&b, " drain-reason=%+v", *srv.DrainReason)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func TestAnswers(t *testing.T) {
	for _, addr := range []string{"10.0.0.1:9000", "[::1]:80", "h.example:1"} {
		body := encodeAnswer("tcp1", addr)
		a, text := answers(body, addr)
		if string(a) != string(body) || string(text) != addr || cap(text) != len(text) {
			t.Errorf("answers(%s) = %s, %q (cap %d)", body, a, text, cap(text))
		}
		for _, other := range []string{"", "0.0.0.1:9000", "x" + addr, addr[1:]} {
			if a, text := answers(body, other); a != nil || text != nil {
				t.Errorf("answers(%s, %q) = %s, %q; want nil: made for another addr", body, other, a, text)
			}
		}
	}
	if a, _ := answers(encodeAnswer("t", "a<b:1"), "a<b:1"); a != nil {
		t.Error("an escaped addr read back from the body")
	}
}
