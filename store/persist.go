package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
)

// persistVersion is the format version of a saved snapshot.
const persistVersion = 1

// savedSnapshot is the on-disk form of a Snapshot: what a replica needs to
// answer get-tcp-ip after a restart while etcd has no quorum.
type savedSnapshot struct {
	Version     int       `json:"version"`
	Revision    int64     `json:"revision"`
	SavedAt     time.Time `json:"saved_at"`
	ConfirmedAt time.Time `json:"confirmed_at"`
	Strategy    string    `json:"strategy"`
	Leader      string    `json:"leader"`
	LeaderEpoch int64     `json:"leader_epoch"`
	Servers     []Server  `json:"servers"`
	// Balancing is the policy in force; absent in files of earlier
	// versions, which then load with DefaultBalancing.
	Balancing *Balancing `json:"balancing,omitempty"`
	AllDown   bool       `json:"all_down,omitempty"`
	// Heartbeat is the leader's newest heartbeat when the file was saved,
	// which confirms the verdicts of its epoch (see verdict.go); absent in
	// files of earlier versions.
	Heartbeat *Heartbeat `json:"heartbeat,omitempty"`
}

// SaveSnapshot writes s to path atomically (temporary file, fsync,
// rename), so a crash leaves either the old file or the new one.
// confirmedAt is when etcd last confirmed s was current.
func SaveSnapshot(path string, s *Snapshot, confirmedAt, now time.Time) error {
	var hb *Heartbeat
	if h := s.Heartbeat(); h.Epoch != 0 {
		hb = &h
	}
	b, err := json.Marshal(savedSnapshot{Heartbeat: hb, Version: persistVersion, Revision: s.Revision, SavedAt: now,
		ConfirmedAt: confirmedAt, Strategy: string(s.Strategy), Leader: s.Leader, LeaderEpoch: s.LeaderEpoch,
		Servers: s.Servers, Balancing: &s.Balancing, AllDown: s.AllDown})
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this fails harmlessly
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("save snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("save snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the rename durable where the platform allows
		d.Close()
	}
	return nil
}

// ErrNoSavedSnapshot is returned by LoadSnapshot when path does not exist.
var ErrNoSavedSnapshot = errors.New("no saved snapshot")

// LoadSnapshot reads a snapshot written by SaveSnapshot and returns it with
// the time etcd last confirmed it.
func LoadSnapshot(path string, now time.Time) (*Snapshot, time.Time, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, time.Time{}, ErrNoSavedSnapshot
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("load snapshot: %w", err)
	}
	var saved savedSnapshot
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, time.Time{}, fmt.Errorf("load snapshot %s: %w", path, err)
	}
	if saved.Version != persistVersion {
		return nil, time.Time{}, fmt.Errorf("load snapshot %s: version %d, want %d", path, saved.Version, persistVersion)
	}
	st, err := balancer.ParseStrategy(saved.Strategy)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("load snapshot %s: %w", path, err)
	}
	// The policy travels with the servers: without it a restart while etcd
	// has no quorum ran hash unbounded and counted nothing.
	bal := DefaultBalancing()
	if saved.Balancing != nil {
		bal = *saved.Balancing
	}
	s, err := newSnapshotFrom(saved.Revision, st, bal, saved.AllDown, saved.Servers, now)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("load snapshot %s: %w", path, err)
	}
	s.Leader, s.LeaderEpoch = saved.Leader, saved.LeaderEpoch
	if saved.Heartbeat != nil {
		s.setVerdicts(*saved.Heartbeat)
	}
	return s, saved.ConfirmedAt, nil
}
