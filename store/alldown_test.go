package store

import (
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

func downJSON(t testing.TB, addr string, checked time.Time) string {
	return healthJSON(t, Health{Addr: addr, Healthy: false, CheckedAt: checked, Epoch: 3, Reason: "refused"})
}

// degraded returns the ids of the servers served as degraded.
func degraded(s *Snapshot) []string {
	var out []string
	for _, srv := range s.Servers {
		if srv.Degraded {
			if !srv.Eligible || srv.EffectiveWeight <= 0 {
				panic("degraded server not eligible: " + srv.ID)
			}
			out = append(out, srv.ID)
		}
	}
	return out
}

func TestAllDown(t *testing.T) {
	base := []op{
		put("servers/a/addr", "10.0.0.1:1"), put("health/a", downJSON(t, "10.0.0.1:1", at)),
		put("servers/b/addr", "10.0.0.2:1"), put("servers/b/weight", "50"), // no verdict yet
		put("servers/c/addr", "10.0.0.3:1"), put("servers/c/drain", "true"), put("health/c", downJSON(t, "10.0.0.3:1", at)),
		putBad("servers/d/addr", "nowhere"), // no valid addr: never served
	}
	tests := []struct {
		name    string
		ops     []op
		allDown bool
		served  []string
	}{
		{"default serve: every undrained server with an addr", nil, true, []string{"a", "b"}},
		{"explicit serve", []op{put("config/all-down", " Serve ")}, true, []string{"a", "b"}},
		{"fail", []op{put("config/all-down", "fail")}, false, nil},
		{"bad value keeps serve", []op{putBad("config/all-down", "maybe")}, true, []string{"a", "b"}},
		{"all drained: the drained ones too", []op{put("servers/a/weight", "0"), put("servers/b/drain", "true")}, true, []string{"a", "b", "c"}},
		{"one eligible: no fallback", []op{put("health/b", healthJSON(t, Health{Addr: "10.0.0.2:1", Healthy: true}))}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestModel(t)
			apply(t, m, slices.Concat(base, tt.ops))
			s := buildAt(t, m, at)
			if s.AllDown != tt.allDown || !slices.Equal(degraded(s), tt.served) {
				t.Fatalf("AllDown = %v, degraded %q; want %v, %q", s.AllDown, degraded(s), tt.allDown, tt.served)
			}
			if s.AllDown && s.Eligible() != 0 {
				t.Errorf("Eligible() = %d while all down; want 0", s.Eligible())
			}
			var got []string
			for _, srv := range s.PickN("k", nil, 4, nil) {
				got = append(got, srv.ID)
			}
			slices.Sort(got)
			if tt.allDown && !slices.Equal(got, tt.served) {
				t.Errorf("PickN = %q; want every degraded server %q", got, tt.served)
			}
			if !tt.allDown && tt.served == nil && strings.Contains(tt.name, "fail") && len(got) != 0 {
				t.Errorf("PickN under fail = %q; want none", got)
			}
		})
	}
}

// TestVerdictAge checks that the oldest verdict served is reported, that
// verdicts of servers not served do not count, and that an old verdict
// keeps its server served (static stability: no leader, nothing expires).
func TestVerdictAge(t *testing.T) {
	m := newTestModel(t)
	up := func(addr string, checked time.Time) string {
		return healthJSON(t, Health{Addr: addr, Healthy: true, CheckedAt: checked, Epoch: 7})
	}
	apply(t, m, []op{
		put("servers/a/addr", "10.0.0.1:1"), put("health/a", up("10.0.0.1:1", at.Add(-time.Hour))),
		put("servers/b/addr", "10.0.0.2:1"), put("health/b", up("10.0.0.2:1", at.Add(-time.Second))),
		put("servers/c/addr", "10.0.0.3:1"), put("health/c", downJSON(t, "10.0.0.3:1", at.Add(-2*time.Hour))),
	})
	s := buildAt(t, m, at)
	if a := s.Lookup("a"); !a.Eligible || a.VerdictEpoch != 7 || !a.CheckedAt.Equal(at.Add(-time.Hour)) {
		t.Errorf("a = eligible %v epoch %d checked %v; want eligible on an hour-old verdict of epoch 7", a.Eligible, a.VerdictEpoch, a.CheckedAt)
	}
	if got := s.OldestVerdictAge(at.Add(time.Minute)); got != time.Hour+time.Minute {
		t.Errorf("OldestVerdictAge = %v; want 1h1m (a's; c is not served)", got)
	}
	if got := s.OldestVerdictAge(at.Add(-2 * time.Hour)); got != 0 {
		t.Errorf("OldestVerdictAge with the leader's clock ahead = %v; want 0", got)
	}
	apply(t, m, []op{del("health/a"), del("health/b")})
	s = buildAt(t, m, at)
	// Only c is left with a verdict, served degraded.
	if !s.AllDown || s.OldestVerdictAge(at) != 2*time.Hour {
		t.Errorf("all down %v, age %v; want true, c's 2h", s.AllDown, s.OldestVerdictAge(at))
	}
}

func TestElectionProblems(t *testing.T) {
	tests := []struct {
		name string
		ops  []op
		want []string // substrings, one per problem
	}{
		{"campaign keys", []op{putRev("election/1a", "r1", 5), putRev("election/2b", "r2", 6)}, nil},
		{"no lease in front", []op{{key: testPrefix + "election/manual", value: "x", rev: 2}, putRev("election/1a", "r1", 5)},
			[]string{"election/manual: election key without a lease"}},
		{"no lease behind: reported too", []op{putRev("election/1a", "r1", 5), {key: testPrefix + "election/zz", value: "", rev: 9}},
			[]string{"election/zz: election key without a lease"}},
		{"foreign key with a lease in front", nil, []string{"election/owner: election key not written by a replica"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestModel(t)
			apply(t, m, tt.ops)
			if tt.ops == nil {
				m.putAt(testPrefix+"election/owner", []byte("someone"), version{create: 3, mod: 3, lease: 0x77})
			}
			s := buildAt(t, m, at)
			if len(s.Problems) != len(tt.want) {
				t.Fatalf("problems = %q; want %d", s.Problems, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(s.Problems[i], w) {
					t.Errorf("problem %d = %q; want %q", i, s.Problems[i], w)
				}
			}
		})
	}
}

// TestAllDownMetrics checks the watcher's all-down gauge and verdict-age
// gauge on a real etcd, and that the age grows with the watcher's clock.
func TestAllDownMetrics(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	k, _ := keyspace.New(testPrefix)
	checked := time.Now().Add(-time.Minute)
	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldAddr), "127.0.0.1:1001")
	rev := etcdtest.Put(t, cli, k.Health("a"), downJSON(t, "127.0.0.1:1001", checked))
	reg := prometheus.NewRegistry()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	w := newTestWatcher(t, cli, Config{Now: func() time.Time { return time.Unix(0, clock.Load()) }}, reg)
	runWatcher(t, w)
	waitRev(t, w, rev)
	if v := testutil.ToFloat64(w.metrics.allDown); v != 1 {
		t.Errorf("tcpdispatch_all_down = %v; want 1", v)
	}
	age := testutil.ToFloat64(w.metrics.verdictAge)
	clock.Add(int64(10 * time.Second))
	if later := testutil.ToFloat64(w.metrics.verdictAge); age < 59 || later-age < 9.9 || later-age > 10.1 {
		t.Errorf("verdict age %v, 10s later %v; want >= 1m, then 10s more", age, later)
	}
	rev = etcdtest.Put(t, cli, k.Health("a"), healthJSON(t, Health{Addr: "127.0.0.1:1001", Healthy: true, CheckedAt: checked}))
	waitRev(t, w, rev)
	if v := testutil.ToFloat64(w.metrics.allDown); v != 0 {
		t.Errorf("tcpdispatch_all_down after recovery = %v; want 0", v)
	}
}
