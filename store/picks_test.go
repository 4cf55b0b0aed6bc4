package store

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

func TestModelCandidates(t *testing.T) {
	m := newTestModel(t)
	apply(t, m, []op{putRev("election/2b", "r2", 9), putRev("election/1a", "r1", 7), putRev("election/3c", "r3", 12)})
	s := mustBuild(t, m)
	want := []Candidate{{"r1", 7}, {"r2", 9}, {"r3", 12}}
	if !slices.Equal(s.Candidates, want) {
		t.Fatalf("candidates %v, want %v (oldest, the leader, first)", s.Candidates, want)
	}
	apply(t, m, []op{del("election/1a")})
	if s := mustBuild(t, m); !slices.Equal(s.Candidates, want[1:]) || s.Leader != "r2" {
		t.Fatalf("after the leader left: candidates %v leader %q", s.Candidates, s.Leader)
	}
}

// TestPicksSurviveRebuild checks that a server's pick counter counts the
// answers of Pick and the first choice of PickN, and carries over to the
// next snapshot while the server stays registered.
func TestPicksSurviveRebuild(t *testing.T) {
	m := newTestModel(t)
	now := time.Unix(1000, 0)
	apply(t, m, []op{
		put("servers/a/addr", "10.0.0.1:1"), put("health/a", healthJSON(t, Health{Addr: "10.0.0.1:1", Healthy: true, Since: now.Add(-time.Hour)})),
		put("servers/b/addr", "10.0.0.2:1"),
	})
	s1 := mustBuild(t, m)
	for range 3 {
		if srv := s1.Pick("k", nil); srv == nil || srv.ID != "a" {
			t.Fatalf("pick: %v", srv)
		}
	}
	if got := s1.PickN("k", nil, 2, nil); len(got) != 1 || got[0].ID != "a" {
		t.Fatalf("PickN: %v", got)
	}
	if s1.Lookup("a").Picks() != 4 || s1.Lookup("b").Picks() != 0 {
		t.Fatalf("picks a=%d b=%d, want 4 and 0", s1.Lookup("a").Picks(), s1.Lookup("b").Picks())
	}
	apply(t, m, []op{put("servers/a/weight", "50")})
	s2 := mustBuild(t, m)
	s2.Pick("k", nil)
	if got := s2.Lookup("a").Picks(); got != 5 {
		t.Fatalf("after a rebuild a has %d picks, want 5 (4 carried over)", got)
	}
	if s1.Lookup("a").Picks() != 5 {
		t.Fatal("successive snapshots do not share the counter")
	}
	apply(t, m, []op{del("servers/a/addr"), del("servers/a/weight"), del("health/a")})
	apply(t, m, []op{put("servers/a/addr", "10.0.0.1:1")})
	if got := mustBuild(t, m).Lookup("a").Picks(); got != 0 {
		t.Fatalf("a re-registered server starts at %d picks, want 0", got)
	}
}

func TestWatcherCountsLeaderChanges(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	k, _ := keyspace.New(testPrefix)
	e := k.Election() + "/"
	etcdtest.Put(t, cli, e+"1a", "r1")
	reg := prometheus.NewRegistry()
	w := newTestWatcher(t, cli, Config{}, reg)
	runWatcher(t, w)
	waitRev(t, w, etcdtest.Put(t, cli, e+"2b", "r2"))
	if n := testutil.ToFloat64(w.metrics.leaderChanges); n != 0 {
		t.Fatalf("leadership changes %v with r1 leading throughout, want 0", n)
	}
	s := waitRev(t, w, etcdtest.Delete(t, cli, e+"1a"))
	if s.Leader != "r2" {
		t.Fatalf("leader %q, want r2", s.Leader)
	}
	if n := testutil.ToFloat64(w.metrics.leaderChanges); n != 1 {
		t.Fatalf("leadership changes %v after r1 left, want 1", n)
	}
}
