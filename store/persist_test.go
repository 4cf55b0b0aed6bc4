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
