package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// listed returns the snapshot of a fresh model listed from etcd, as a
// replica started now would build it.
func listed(t *testing.T, w *Watcher) *Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	m := newModel(w.keys)
	if err := w.list(ctx, m); err != nil {
		t.Fatalf("list: %v", err)
	}
	return mustBuild(t, m)
}

// TestResolveFromHistory writes valid values, then invalid ones over them,
// and checks that a replica that watched it all and one started afterwards
// decide the same, on the last valid values.
func TestResolveFromHistory(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	k, _ := keyspace.New(testPrefix)
	up := func(addr string) string { return healthJSON(t, Health{Addr: addr, Healthy: true}) }
	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldAddr), "127.0.0.1:1001")
	etcdtest.Put(t, cli, k.Health("a"), up("127.0.0.1:1001"))
	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "40")
	etcdtest.Put(t, cli, k.ServerField("b", keyspace.FieldAddr), "127.0.0.1:1002")
	etcdtest.Put(t, cli, k.Health("b"), up("127.0.0.1:1002"))
	etcdtest.Put(t, cli, k.Strategy(), "hash")
	etcdtest.Put(t, cli, k.Config(ConfigSlowStart), "0")

	watching := newTestWatcher(t, cli, Config{ResolveInterval: 100 * time.Millisecond}, nil)
	runWatcher(t, watching)

	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "3OO")
	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "x") // two in a row
	etcdtest.Put(t, cli, k.ServerField("b", keyspace.FieldAddr), "127.0.0.1")
	etcdtest.Put(t, cli, k.Strategy(), "hsah")
	// Created invalid: no valid value in this key's life.
	rev := etcdtest.Put(t, cli, k.ServerField("c", keyspace.FieldAddr), "nowhere")

	want := srvWant{addr: "127.0.0.1:1001", weight: 40, state: "up", eligible: true, errs: []string{`weight "x"`}}
	fresh := listed(t, watching)
	checkServer(t, fresh, "a", want)
	checkServer(t, fresh, "b", srvWant{addr: "127.0.0.1:1002", weight: keyspace.DefaultWeight, state: "up", eligible: true,
		errs: []string{`addr "127.0.0.1"`}})
	checkServer(t, fresh, "c", srvWant{addr: "", weight: keyspace.DefaultWeight, state: "unknown", errs: []string{`addr "nowhere"`}})
	if fresh.Strategy != balancer.Hash {
		t.Errorf("strategy = %s; want hash, the last valid value", fresh.Strategy)
	}
	if e := fresh.Lookup("a").Errors[0]; !strings.Contains(e, `last valid value "40"`) {
		t.Errorf("a's error = %q; want the resolution named", e)
	}
	if e := fresh.Lookup("c").Errors[0]; !strings.Contains(e, noteCreated) {
		t.Errorf("c's error = %q; want %q", e, noteCreated)
	}
	s := waitRev(t, watching, rev)
	if got, want := digest(s), digest(fresh); got != want {
		t.Fatalf("the watching replica differs from a fresh one:\n got: %s\nwant: %s", got, want)
	}
}

// TestResolveLookbackBound checks that more than MaxLookback invalid values
// in a row count as absent, on a watching replica as on a fresh one.
func TestResolveLookbackBound(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	k, _ := keyspace.New(testPrefix)
	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldAddr), "127.0.0.1:1001")
	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "40")
	watching := newTestWatcher(t, cli, Config{}, nil)
	runWatcher(t, watching)
	var rev int64
	for i := range MaxLookback {
		rev = etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "bad"+itoa(int64(i)))
	}
	if s := waitRev(t, watching, rev); s.Lookup("a").Weight != 40 {
		t.Fatalf("weight after %d invalid values = %d; want 40", MaxLookback, s.Lookup("a").Weight)
	}
	rev = etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "one-too-many")
	fresh := listed(t, watching)
	s := waitRev(t, watching, rev)
	for name, s := range map[string]*Snapshot{"watching": s, "fresh": fresh} {
		if w := s.Lookup("a").Weight; w != keyspace.DefaultWeight {
			t.Errorf("%s: weight after %d invalid values = %d; want the default %d", name, MaxLookback+1, w, keyspace.DefaultWeight)
		}
	}
}

// TestResolveAfterCompaction checks the documented compacted case: once
// etcd compacts the history that held the last valid value, a replica that
// had resolved it converges on what a fresh replica decides (as if absent).
func TestResolveAfterCompaction(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	k, _ := keyspace.New(testPrefix)
	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldAddr), "127.0.0.1:1001")
	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "40")
	etcdtest.Put(t, cli, k.Strategy(), "hash")
	watching := newTestWatcher(t, cli, Config{ResolveInterval: 100 * time.Millisecond}, nil)
	runWatcher(t, watching)
	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "3OO")
	rev := etcdtest.Put(t, cli, k.Strategy(), "hsah")
	if s := waitRev(t, watching, rev); s.Lookup("a").Weight != 40 || s.Strategy != balancer.Hash {
		t.Fatalf("before compaction: weight %d strategy %s; want 40, hash", s.Lookup("a").Weight, s.Strategy)
	}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := cli.Compact(ctx, rev); err != nil {
		t.Fatalf("compact: %v", err)
	}
	fresh := listed(t, watching)
	if a := fresh.Lookup("a"); a.Weight != keyspace.DefaultWeight || fresh.Strategy != balancer.WRR {
		t.Errorf("fresh after compaction: weight %d strategy %s; want the defaults %d, wrr", a.Weight, fresh.Strategy, keyspace.DefaultWeight)
	}
	var got string
	etcdtest.WaitFor(t, 10*time.Second, "the watching replica to converge", func() bool {
		got = digest(watching.Snapshot())
		return got == digest(fresh)
	})
}
