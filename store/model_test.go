package store

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

const testPrefix = "/p/"

// op is one change applied to a model: a put of value (del false) or a
// delete of key. rev is the put's create revision (election keys use it).
type op struct {
	key   string
	value string
	del   bool
	rev   int64
	// bad says the put must be rejected by validation.
	bad bool
}

func put(key, value string) op           { return op{key: testPrefix + key, value: value} }
func putBad(key, value string) op        { return op{key: testPrefix + key, value: value, bad: true} }
func del(key string) op                  { return op{key: testPrefix + key, del: true} }
func putRev(key, v string, rev int64) op { return op{key: testPrefix + key, value: v, rev: rev} }

func healthJSON(t testing.TB, h Health) string {
	t.Helper()
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func newTestModel(t testing.TB) *model {
	t.Helper()
	k, err := keyspace.New(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return newModel(k)
}

// apply applies ops to m and fails if a put's rejection differs from op.bad.
func apply(t testing.TB, m *model, ops []op) {
	t.Helper()
	for _, o := range ops {
		if o.del {
			m.del(o.key)
			continue
		}
		v := version{create: o.rev, mod: o.rev}
		if name, ok := strings.CutPrefix(o.key, testPrefix+"election/"); ok {
			// As a campaign writes it: named by its lease in hex.
			v.lease, _ = strconv.ParseInt(name, 16, 64)
		}
		r := m.putAt(o.key, []byte(o.value), v)
		if (r != nil) != o.bad {
			t.Fatalf("put(%q, %q) rejected = %v; want rejected = %v", o.key, o.value, r, o.bad)
		}
		if r != nil && (r.key != o.key || r.err == nil) {
			t.Fatalf("put(%q, %q) = %+v; want the key and an error", o.key, o.value, r)
		}
	}
}

func mustBuild(t testing.TB, m *model) *Snapshot {
	t.Helper()
	s, err := m.build(time.Unix(1000, 0))
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	return s
}

// srvWant is what a test expects of one server in a snapshot.
type srvWant struct {
	addr     string
	weight   int
	state    string
	eligible bool
	// errs are substrings that must each appear in one of Errors, in order;
	// nil means Errors must be empty.
	errs []string
}

func checkServer(t testing.TB, s *Snapshot, id string, w srvWant) {
	t.Helper()
	srv := s.Lookup(id)
	if srv == nil {
		t.Fatalf("server %q not in snapshot (servers: %v)", id, ids(s))
	}
	// eligible means eligible on its own: a server served only by the
	// all-down fallback (Degraded) does not count.
	if eligible := srv.Eligible && !srv.Degraded; srv.Addr != w.addr || srv.Weight != w.weight || string(srv.State) != w.state || eligible != w.eligible {
		t.Errorf("server %q = addr %q weight %d state %q eligible %v; want addr %q weight %d state %q eligible %v",
			id, srv.Addr, srv.Weight, srv.State, eligible, w.addr, w.weight, w.state, w.eligible)
	}
	if srv.Healthy != (w.state == "up") {
		t.Errorf("server %q Healthy = %v with state %q", id, srv.Healthy, w.state)
	}
	if len(srv.Errors) != len(w.errs) {
		t.Fatalf("server %q errors = %q; want %d matching %q", id, srv.Errors, len(w.errs), w.errs)
	}
	for i, sub := range w.errs {
		if !strings.Contains(srv.Errors[i], sub) {
			t.Errorf("server %q error %d = %q; want it to contain %q", id, i, srv.Errors[i], sub)
		}
	}
	if srv.Eligible {
		if string(srv.AnswerText()) != w.addr {
			t.Errorf("server %q AnswerText = %q; want %q", id, srv.AnswerText(), w.addr)
		}
		var ans struct{ ID, Addr string }
		if err := json.Unmarshal(srv.Answer(), &ans); err != nil || ans.ID != id || ans.Addr != w.addr {
			t.Errorf("server %q Answer = %s (%v); want id %q addr %q", id, srv.Answer(), err, id, w.addr)
		}
	} else if srv.Answer() != nil {
		t.Errorf("server %q is not eligible but has an answer %s", id, srv.Answer())
	}
}

func ids(s *Snapshot) []string {
	var out []string
	for _, srv := range s.Servers {
		out = append(out, srv.ID)
	}
	return out
}

func TestModelBuild(t *testing.T) {
	up := func(addr string) string {
		return healthJSON(t, Health{Addr: addr, Healthy: true, Since: time.Unix(10, 0)})
	}
	down := func(addr, reason string) string {
		return healthJSON(t, Health{Addr: addr, Healthy: false, Since: time.Unix(20, 0), Reason: reason})
	}
	tests := []struct {
		name    string
		ops     []op
		servers map[string]srvWant
	}{
		{
			name:    "default weight",
			ops:     []op{put("servers/a/addr", "10.0.0.1:1"), put("health/a", up("10.0.0.1:1"))},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "up", eligible: true}},
		},
		{
			name:    "no health record: listed, unknown, not eligible",
			ops:     []op{put("servers/a/addr", "10.0.0.1:1")},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "unknown"}},
		},
		{
			name:    "down is not eligible and keeps its reason",
			ops:     []op{put("servers/a/addr", "10.0.0.1:1"), put("health/a", down("10.0.0.1:1", "refused"))},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "down"}},
		},
		{
			name: "weight 0 is listed but not eligible",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), put("servers/a/weight", "0"),
				put("health/a", up("10.0.0.1:1"))},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: 0, state: "up"}},
		},
		{
			name: "bad weight after a good one keeps the good one",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), put("servers/a/weight", "7"),
				putBad("servers/a/weight", "abc"), put("health/a", up("10.0.0.1:1"))},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: 7, state: "up", eligible: true,
				errs: []string{`weight "abc"`}}},
		},
		{
			name: "good weight after a bad one clears the error",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), putBad("servers/a/weight", "-1"),
				put("servers/a/weight", "5"), put("health/a", up("10.0.0.1:1"))},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: 5, state: "up", eligible: true}},
		},
		{
			name: "bad weight with no good one before keeps the default",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), putBad("servers/a/weight", "10001"),
				put("health/a", up("10.0.0.1:1"))},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "up", eligible: true,
				errs: []string{"weight 10001"}}},
		},
		{
			name: "deleting a bad weight restores the default",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), putBad("servers/a/weight", "x"),
				del("servers/a/weight"), put("health/a", up("10.0.0.1:1"))},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "up", eligible: true}},
		},
		{
			name: "bad addr after a good one keeps the good one",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), put("health/a", up("10.0.0.1:1")),
				putBad("servers/a/addr", "10.0.0.1")},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "up", eligible: true,
				errs: []string{`addr "10.0.0.1"`}}},
		},
		{
			name:    "bad addr with no good one is listed with its error",
			ops:     []op{putBad("servers/a/addr", "nope"), put("health/a", up("nope"))},
			servers: map[string]srvWant{"a": {weight: keyspace.DefaultWeight, state: "unknown", errs: []string{`addr "nope"`}}},
		},
		{
			name: "only a weight key: listed with an error, not eligible",
			ops:  []op{put("servers/a/weight", "5")},
			servers: map[string]srvWant{"a": {weight: 5, state: "unknown",
				errs: []string{"addr: not registered (/p/servers/a/addr is missing)"}}},
		},
		{
			name: "unknown field alone lists the server as not registered",
			ops:  []op{put("servers/a/status-url", "http://x")},
			servers: map[string]srvWant{"a": {weight: keyspace.DefaultWeight, state: "unknown",
				errs: []string{"addr: not registered"}}},
		},
		{
			name: "unknown fields are tolerated, not reported",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), put("servers/a/note", "garbage%%"),
				put("health/a", up("10.0.0.1:1"))},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "up", eligible: true}},
		},
		{
			name:    "health for a different addr is ignored",
			ops:     []op{put("servers/a/addr", "10.0.0.2:1"), put("health/a", up("10.0.0.1:1"))},
			servers: map[string]srvWant{"a": {addr: "10.0.0.2:1", weight: keyspace.DefaultWeight, state: "unknown"}},
		},
		{
			name: "health goes stale when the addr changes",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), put("health/a", up("10.0.0.1:1")),
				put("servers/a/addr", "10.0.0.2:1")},
			servers: map[string]srvWant{"a": {addr: "10.0.0.2:1", weight: keyspace.DefaultWeight, state: "unknown"}},
		},
		{
			name: "garbage health keeps the last good record",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), put("health/a", up("10.0.0.1:1")),
				putBad("health/a", "{not json")},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "up", eligible: true,
				errs: []string{"health record"}}},
		},
		{
			name: "health without addr is rejected",
			ops:  []op{put("servers/a/addr", "10.0.0.1:1"), putBad("health/a", `{"healthy":true}`)},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "unknown",
				errs: []string{"health record without addr"}}},
		},
		{
			name: "health JSON null is rejected",
			ops:  []op{put("servers/a/addr", "10.0.0.1:1"), putBad("health/a", `null`)},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "unknown",
				errs: []string{"health record"}}},
		},
		{
			name:    "deleting health makes the state unknown",
			ops:     []op{put("servers/a/addr", "10.0.0.1:1"), put("health/a", up("10.0.0.1:1")), del("health/a")},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "unknown"}},
		},
		{
			name: "deleting every key removes the server",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), put("servers/a/weight", "3"), put("servers/a/x", "y"),
				del("servers/a/addr"), del("servers/a/weight"), del("servers/a/x"),
				put("servers/b/addr", "10.0.0.2:1")},
			servers: map[string]srvWant{"b": {addr: "10.0.0.2:1", weight: keyspace.DefaultWeight, state: "unknown"}},
		},
		{
			name: "deleting the addr keeps the server listed with an error",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), put("servers/a/weight", "3"),
				put("health/a", up("10.0.0.1:1")), del("servers/a/addr")},
			servers: map[string]srvWant{"a": {weight: 3, state: "unknown", errs: []string{"addr: not registered"}}},
		},
		{
			name: "keys outside the layout are ignored, misnamed operator keys rejected",
			ops: []op{put("servers/a/addr", "10.0.0.1:1"), putBad("servers/bad id/addr", "10.0.0.9:1"),
				put("misc", "x"), putBad("servers/a/addr/deep", "x"), putBad("config/slow_start", "5s"),
				del("servers/ghost/addr"), del("nothing")},
			servers: map[string]srvWant{"a": {addr: "10.0.0.1:1", weight: keyspace.DefaultWeight, state: "unknown"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestModel(t)
			apply(t, m, tt.ops)
			s := mustBuild(t, m)
			if len(s.Servers) != len(tt.servers) {
				t.Fatalf("servers = %v; want %d", ids(s), len(tt.servers))
			}
			eligible := 0
			for id, w := range tt.servers {
				checkServer(t, s, id, w)
				if w.eligible {
					eligible++
				}
			}
			if s.Eligible() != eligible {
				t.Errorf("Eligible() = %d; want %d", s.Eligible(), eligible)
			}
			if !slices.IsSortedFunc(s.Servers, func(a, b *Server) int { return strings.Compare(a.ID, b.ID) }) {
				t.Errorf("servers not sorted by id: %v", ids(s))
			}
		})
	}
}

func TestModelStrategy(t *testing.T) {
	tests := []struct {
		name     string
		ops      []op
		want     balancer.Strategy
		problems []string
	}{
		{name: "default wrr", want: balancer.WRR},
		{name: "set", ops: []op{put("config/strategy", "hash")}, want: balancer.Hash},
		{name: "case and space", ops: []op{put("config/strategy", " Random\n")}, want: balancer.Random},
		{name: "empty means wrr", ops: []op{put("config/strategy", "hash"), put("config/strategy", "")}, want: balancer.WRR},
		{
			name:     "garbage keeps the last good one",
			ops:      []op{put("config/strategy", "hash"), putBad("config/strategy", "round-robin")},
			want:     balancer.Hash,
			problems: []string{"/p/config/strategy: ", "round-robin"},
		},
		{
			name:     "garbage with none before uses wrr",
			ops:      []op{putBad("config/strategy", "fastest")},
			want:     balancer.WRR,
			problems: []string{"/p/config/strategy: ", "fastest"},
		},
		{
			name: "delete reverts to wrr and clears the problem",
			ops:  []op{put("config/strategy", "hash"), putBad("config/strategy", "x"), del("config/strategy")},
			want: balancer.WRR,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestModel(t)
			apply(t, m, tt.ops)
			s := mustBuild(t, m)
			if s.Strategy != tt.want {
				t.Errorf("Strategy = %q; want %q", s.Strategy, tt.want)
			}
			if tt.problems == nil {
				if len(s.Problems) != 0 {
					t.Errorf("Problems = %q; want none", s.Problems)
				}
				return
			}
			if len(s.Problems) != 1 {
				t.Fatalf("Problems = %q; want one", s.Problems)
			}
			for _, sub := range tt.problems {
				if !strings.Contains(s.Problems[0], sub) {
					t.Errorf("Problems[0] = %q; want it to contain %q", s.Problems[0], sub)
				}
			}
		})
	}
}

func TestModelLeader(t *testing.T) {
	tests := []struct {
		name      string
		ops       []op
		wantName  string
		wantEpoch int64
	}{
		{name: "none"},
		{name: "one", ops: []op{putRev("election/1a", "r1", 5)}, wantName: "r1", wantEpoch: 5},
		{
			name:     "lowest create revision leads",
			ops:      []op{putRev("election/2b", "r2", 9), putRev("election/1a", "r1", 7), putRev("election/3c", "r3", 12)},
			wantName: "r1", wantEpoch: 7,
		},
		{
			name:     "successor after the leader's key is deleted",
			ops:      []op{putRev("election/1a", "r1", 7), putRev("election/2b", "r2", 9), del("election/1a")},
			wantName: "r2", wantEpoch: 9,
		},
		{
			name: "all gone",
			ops:  []op{putRev("election/1a", "r1", 7), del("election/1a")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestModel(t)
			apply(t, m, tt.ops)
			s := mustBuild(t, m)
			if s.Leader != tt.wantName || s.LeaderEpoch != tt.wantEpoch {
				t.Fatalf("leader = %q epoch %d; want %q epoch %d", s.Leader, s.LeaderEpoch, tt.wantName, tt.wantEpoch)
			}
		})
	}
}

func TestModelOrphanHealth(t *testing.T) {
	m := newTestModel(t)
	h := healthJSON(t, Health{Addr: "10.0.0.1:1", Healthy: true})
	apply(t, m, []op{
		put("servers/a/addr", "10.0.0.1:1"), put("health/a", h),
		put("health/zz", h), put("health/gone", h),
		putBad("health/bad", "garbage"), // a rejected record is still an orphan to delete
	})
	s := mustBuild(t, m)
	want := []string{"bad", "gone", "zz"}
	if got := s.OrphanHealth(); !slices.Equal(got, want) {
		t.Fatalf("OrphanHealth() = %q; want %q", got, want)
	}
	if len(s.Servers) != 1 {
		t.Fatalf("servers = %v; want only a (orphans are not servers)", ids(s))
	}
}

// TestModelRelist covers a re-listing applied on top of a model: keys not
// listed again are dropped, keys listed with bad values keep their last good
// values and report the error.
func TestModelRelist(t *testing.T) {
	m := newTestModel(t)
	up := func(addr string) string { return healthJSON(t, Health{Addr: addr, Healthy: true}) }
	apply(t, m, []op{
		put("servers/a/addr", "10.0.0.1:1"), put("servers/a/weight", "7"), put("servers/a/note", "x"), put("health/a", up("10.0.0.1:1")),
		put("servers/b/addr", "10.0.0.2:1"), put("health/b", up("10.0.0.2:1")),
		put("servers/c/addr", "10.0.0.3:1"), put("servers/c/weight", "9"), put("health/c", up("10.0.0.3:1")),
		put("config/strategy", "hash"),
		putRev("election/1", "r1", 3), putRev("election/2", "r2", 4),
	})
	m.rev = 50

	m.beginRelist()
	apply(t, m, []op{
		// a: bad values for addr, weight and health; note no longer listed.
		putBad("servers/a/addr", "10.0.0.1"), putBad("servers/a/weight", "heavy"),
		putBad("health/a", "{"),
		// b: not listed at all (deleted while we were not watching).
		// c: weight not listed, addr and health unchanged.
		put("servers/c/addr", "10.0.0.3:1"), put("health/c", up("10.0.0.3:1")),
		// d: new.
		put("servers/d/addr", "10.0.0.4:1"),
		// strategy listed with garbage; first election key gone.
		putBad("config/strategy", "?"),
		putRev("election/2", "r2", 4),
	})
	m.endRelist()
	if m.relisting || m.seen != nil {
		t.Fatalf("endRelist left relisting=%v seen=%v", m.relisting, m.seen)
	}

	s := mustBuild(t, m)
	if got, want := ids(s), []string{"a", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("servers = %q; want %q", got, want)
	}
	checkServer(t, s, "a", srvWant{addr: "10.0.0.1:1", weight: 7, state: "up", eligible: true,
		errs: []string{`addr "10.0.0.1"`, `weight "heavy"`, "health record"}})
	if _, ok := m.servers["a"].unknown["note"]; ok {
		t.Errorf("unknown field a/note survived a re-list that did not list it")
	}
	checkServer(t, s, "c", srvWant{addr: "10.0.0.3:1", weight: keyspace.DefaultWeight, state: "up", eligible: true})
	checkServer(t, s, "d", srvWant{addr: "10.0.0.4:1", weight: keyspace.DefaultWeight, state: "unknown"})
	if _, ok := m.health["b"]; ok {
		t.Errorf("health/b survived a re-list that did not list it")
	}
	if s.Strategy != balancer.Hash || len(s.Problems) != 1 {
		t.Errorf("strategy = %q, problems %q; want hash kept with one problem", s.Strategy, s.Problems)
	}
	if s.Leader != "r2" || s.LeaderEpoch != 4 {
		t.Errorf("leader = %q/%d; want r2/4", s.Leader, s.LeaderEpoch)
	}
	if s.Revision != 50 {
		t.Errorf("Revision = %d; want 50", s.Revision)
	}
}

// TestModelRelistEmpty checks that a listing of an empty prefix clears the
// model.
func TestModelRelistEmpty(t *testing.T) {
	m := newTestModel(t)
	apply(t, m, []op{
		put("servers/a/addr", "10.0.0.1:1"), put("servers/a/x", "y"), put("health/a", healthJSON(t, Health{Addr: "10.0.0.1:1"})),
		put("config/strategy", "random"), putRev("election/1", "r1", 3),
	})
	m.beginRelist()
	m.endRelist()
	s := mustBuild(t, m)
	if len(s.Servers) != 0 || s.Strategy != balancer.WRR || s.Leader != "" || len(s.OrphanHealth()) != 0 || len(s.Problems) != 0 {
		t.Fatalf("after an empty re-list: servers %v strategy %q leader %q orphans %v problems %v; want empty",
			ids(s), s.Strategy, s.Leader, s.OrphanHealth(), s.Problems)
	}
	if len(m.servers) != 0 || len(m.health) != 0 || len(m.election) != 0 || m.strategy.present {
		t.Fatalf("model not empty after an empty re-list: %+v", m)
	}
}

// TestSnapshotPick checks the picking helpers on a built snapshot.
func TestSnapshotPick(t *testing.T) {
	m := newTestModel(t)
	var ops []op
	for _, id := range []string{"a", "b", "c", "d"} {
		addr := "10.0.0." + string(rune('1'+id[0]-'a')) + ":80"
		ops = append(ops, put("servers/"+id+"/addr", addr), put("health/"+id, healthJSON(t, Health{Addr: addr, Healthy: id != "d"})))
	}
	apply(t, m, ops)
	s := mustBuild(t, m)
	if s.Eligible() != 3 {
		t.Fatalf("Eligible() = %d; want 3", s.Eligible())
	}
	seen := map[string]bool{}
	for range 30 {
		p := s.Pick("k", nil)
		if p == nil || p.ID == "d" {
			t.Fatalf("Pick = %v; want one of a, b, c", p)
		}
		seen[p.ID] = true
	}
	if len(seen) != 3 {
		t.Errorf("wrr picks over 30 calls = %v; want all of a, b, c", seen)
	}
	if p := s.Pick("k", []string{"a", "b", "c"}); p != nil {
		t.Errorf("Pick excluding every eligible server = %q; want nil", p.ID)
	}
	got := s.PickN("k", []string{"b"}, 5, nil)
	if len(got) != 2 || got[0].ID == got[1].ID || got[0].ID == "b" || got[1].ID == "b" {
		t.Errorf("PickN(exclude b, 5) = %v; want a and c", got)
	}
	if got := s.PickN("k", nil, 0, nil); len(got) != 0 {
		t.Errorf("PickN(n=0) = %v; want none", got)
	}
	if s.Lookup("nope") != nil {
		t.Errorf("Lookup of an unknown id is not nil")
	}

	empty := mustBuild(t, newTestModel(t))
	if empty.Pick("k", nil) != nil || len(empty.PickN("k", nil, 3, nil)) != 0 || empty.Eligible() != 0 {
		t.Errorf("an empty snapshot picked something")
	}
}

// FuzzModelPut applies a put of arbitrary bytes under an arbitrary key
// suffix, then a delete, and requires that nothing panics and that every
// build succeeds.
func FuzzModelPut(f *testing.F) {
	f.Add("servers/a/addr", []byte("10.0.0.1:80"), int64(1))
	f.Add("servers/a/weight", []byte("-1"), int64(2))
	f.Add("servers/a/weight", []byte("10000"), int64(2))
	f.Add("config/strategy", []byte("hash"), int64(3))
	f.Add("config/strategy", []byte("\xff"), int64(3))
	f.Add("health/a", []byte(`{"addr":"10.0.0.1:80","healthy":true}`), int64(4))
	f.Add("health/a", []byte(`{"addr":5}`), int64(4))
	f.Add("election/abc", []byte("r1"), int64(0))
	f.Add("servers//addr", []byte(""), int64(-1))
	f.Add("servers/a/", []byte(nil), int64(9))
	f.Fuzz(func(t *testing.T, suffix string, value []byte, rev int64) {
		m := newTestModel(t)
		// A valid server first, so a put can also replace good state.
		h := healthJSON(t, Health{Addr: "10.0.0.1:80", Healthy: true})
		apply(t, m, []op{put("servers/a/addr", "10.0.0.1:80"), put("health/a", h), put("config/strategy", "hash")})
		key := testPrefix + suffix
		m.put(key, value, rev)
		s := mustBuild(t, m)
		for _, srv := range s.Servers {
			if srv.Eligible && !srv.Degraded && (srv.Addr == "" || srv.Weight <= 0 || !srv.Healthy) {
				t.Fatalf("ineligible server marked eligible: %+v", srv)
			}
		}
		if a := s.Lookup("a"); a == nil || !a.Eligible {
			// Only a put to a's own addr, health or weight may take it out.
			if !strings.HasPrefix(suffix, "servers/a/") && suffix != "health/a" {
				t.Fatalf("put %q=%q took server a out: %+v", suffix, value, a)
			}
		}
		m.beginRelist()
		m.put(key, value, rev)
		m.endRelist()
		mustBuild(t, m)
		m.del(key)
		mustBuild(t, m)
	})
}

// TestBuildSharesUnchangedEntries checks the cost model of build: after a
// change of one server's verdict, the next snapshot shares every other
// entry with the last one, and so does a build with no change at all.
func TestBuildSharesUnchangedEntries(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	for _, reports := range []bool{false, true} {
		m := fleetModel(t, 1000, balancer.WRR, reports, now)
		first, err := m.build(now)
		if err != nil {
			t.Fatal(err)
		}
		flip(t, m, 500, true, now)
		second, err := m.build(now)
		if err != nil {
			t.Fatal(err)
		}
		third, err := m.build(now)
		if err != nil {
			t.Fatal(err)
		}
		var changed, again []string
		for i := range second.Servers {
			if first.Servers[i] != second.Servers[i] {
				changed = append(changed, second.Servers[i].ID)
			}
			if second.Servers[i] != third.Servers[i] {
				again = append(again, third.Servers[i].ID)
			}
		}
		if len(changed) != 1 || changed[0] != "tcp00500" || second.Servers[500].Eligible {
			t.Errorf("reports %v: entries replaced by one verdict: %v (want [tcp00500], now not eligible)", reports, changed)
		}
		if len(again) != 0 {
			t.Errorf("reports %v: entries replaced by a build with no change: %v", reports, again)
		}
	}
}
