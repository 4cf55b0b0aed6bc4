package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
)

func TestSaveLoadSnapshot(t *testing.T) {
	now := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	servers := []Server{
		{ID: "b", Addr: "10.0.0.2:9000", Weight: 50, Healthy: true, State: "up", Eligible: true, Since: now},
		{ID: "a", Addr: "10.0.0.1:9000", Weight: 100, State: "down", Reason: "refused"},
	}
	s, err := NewSnapshot(42, balancer.Hash, servers, now)
	if err != nil {
		t.Fatal(err)
	}
	s.Leader, s.LeaderEpoch = "d1", 7
	path := filepath.Join(t.TempDir(), "snap.json")
	if err := SaveSnapshot(path, s, now.Add(-time.Second), now); err != nil {
		t.Fatal(err)
	}
	got, confirmed, err := LoadSnapshot(path, now)
	if err != nil {
		t.Fatal(err)
	}
	if !confirmed.Equal(now.Add(-time.Second)) || got.Revision != 42 || got.Strategy != balancer.Hash ||
		got.Leader != "d1" || got.LeaderEpoch != 7 || len(got.Servers) != 2 {
		t.Fatalf("loaded %+v confirmed %v", got, confirmed)
	}
	if p := got.Pick("k", nil); p == nil || p.ID != "b" || string(p.Answer()) != `{"id":"b","addr":"10.0.0.2:9000"}` {
		t.Errorf("pick from the loaded snapshot = %+v", p)
	}
	if a := got.Lookup("a"); a == nil || a.Eligible || a.Reason != "refused" {
		t.Errorf("server a = %+v", a)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	if _, _, err := LoadSnapshot(filepath.Join(t.TempDir(), "none"), now); !errors.Is(err, ErrNoSavedSnapshot) {
		t.Errorf("missing file: %v, want ErrNoSavedSnapshot", err)
	}
	for name, body := range map[string]string{
		"garbage":      "{not json",
		"version":      `{"version":9}`,
		"strategy":     `{"version":1,"strategy":"best"}`,
		"duplicate id": `{"version":1,"servers":[{"id":"a"},{"id":"a"}]}`,
	} {
		p := filepath.Join(t.TempDir(), "bad.json")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadSnapshot(p, now); err == nil {
			t.Errorf("%s: loaded without error", name)
		}
	}
}

// TestSaveLoadBalancing checks that a restored snapshot carries the
// balancing policy it was saved with (hash stays bounded after a restart
// without quorum), and that a file without one loads the defaults.
func TestSaveLoadBalancing(t *testing.T) {
	now := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	bal := DefaultBalancing()
	bal.HashLoadFactor, bal.SlowStart, bal.MassRemoval, bal.AllDown = 1.5, time.Minute, MassRemovalHold, AllDownFail
	s, err := NewSnapshotWith(42, balancer.Hash, bal, []Server{
		{ID: "a", Addr: "10.0.0.1:9000", Weight: 100, Healthy: true, State: "up", Eligible: true, CheckedAt: now.Add(-time.Minute)},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snap.json")
	if err := SaveSnapshot(path, s, now, now); err != nil {
		t.Fatal(err)
	}
	got, _, err := LoadSnapshot(path, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Balancing != bal {
		t.Errorf("loaded balancing %+v; want %+v", got.Balancing, bal)
	}
	if age := got.OldestVerdictAge(now); age != time.Minute {
		t.Errorf("loaded verdict age %v; want 1m", age)
	}
	old := filepath.Join(t.TempDir(), "old.json")
	if err := os.WriteFile(old, []byte(`{"version":1,"strategy":"hash","servers":[{"id":"a","addr":"10.0.0.1:1","weight":1,"eligible":true}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _, err := LoadSnapshot(old, now); err != nil || got.Balancing != DefaultBalancing() {
		t.Errorf("file without a policy: %v, balancing %+v; want the defaults", err, got.Balancing)
	}
}
