package store

import (
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

func TestBuildSnapshotDrainReason(t *testing.T) {
	keys, _ := keyspace.New(keyspace.DefaultPrefix)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	note, err := keyspace.DrainNote{Reason: "kernel upgrade", By: "ops@host1", At: at}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	kv := func(k, v string) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: []byte(k), Value: []byte(v), CreateRevision: 1}
	}
	snap, err := BuildSnapshot(keys, []*mvccpb.KeyValue{
		kv(keys.ServerField("a", keyspace.FieldAddr), "127.0.0.1:1"),
		kv(keys.ServerField("a", keyspace.FieldDrain), "true"),
		kv(keys.ServerField("a", keyspace.FieldDrainReason), note),
		kv(keys.ServerField("b", keyspace.FieldAddr), "127.0.0.1:2"),
		kv(keys.ServerField("b", keyspace.FieldDrainReason), "plain text"),
		kv(keys.ServerField("c", keyspace.FieldAddr), "127.0.0.1:3"),
		kv(keys.ServerField("c", keyspace.FieldWeight), "abc"),
		kv(keys.Config("slow_start"), "1s"),
	}, 7, at)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := snap.Lookup("a"), snap.Lookup("b"), snap.Lookup("c")
	if a == nil || !a.Draining || a.DrainReason == nil || *a.DrainReason != (keyspace.DrainNote{Reason: "kernel upgrade", By: "ops@host1", At: at}) {
		t.Errorf("a: %+v", a)
	}
	if b == nil || b.DrainReason == nil || b.DrainReason.Reason != "plain text" || len(b.Errors) != 0 {
		t.Errorf("b: plain-text reason must be shown and not be an error: %+v", b)
	}
	if c == nil || len(c.Errors) != 1 || c.Weight != keyspace.DefaultWeight {
		t.Errorf("c: bad weight must be an error on the default: %+v", c)
	}
	if snap.Revision != 7 || len(snap.Problems) != 1 {
		t.Errorf("revision %d problems %q", snap.Revision, snap.Problems)
	}
	keys2, _ := keyspace.New("/x")
	for _, c := range []struct {
		key, value string
		ok         bool
	}{
		{keys2.ServerField("a", keyspace.FieldWeight), "300", true},
		{keys2.ServerField("a", keyspace.FieldWeight), "3000000", false},
		{keys2.ServerField("a b", keyspace.FieldAddr), "127.0.0.1:1", false},
		{keys2.ServerField("a", keyspace.FieldDrainReason), "anything", true},
		{keys2.Config("slow-start"), "10s", true},
		{keys2.Config("slow_start"), "10s", false},
		{keys2.Strategy(), "nope", false},
		{keys2.Election() + "/1234", "d1", true},
	} {
		if err := CheckKey(keys2, c.key, []byte(c.value)); (err == nil) != c.ok {
			t.Errorf("Check(%s=%s): %v, want ok=%v", c.key, c.value, err, c.ok)
		}
	}
	for _, bad := range []keyspace.DrainNote{{Reason: "a\nb"}, {Reason: string(make([]byte, keyspace.MaxDrainReason+1))}} {
		if _, err := bad.Encode(); err == nil {
			t.Errorf("Encode(%q) accepted", bad.Reason)
		}
	}
}
