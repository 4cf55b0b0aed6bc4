package store

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// persistVersion is the format version of a saved snapshot.
const persistVersion = 1

// savedSnapshot is the on-disk form of a Snapshot: what a replica needs to
// answer get-tcp-ip after a restart while etcd has no quorum.
type savedSnapshot struct {
	Version     int           `json:"version"`
	Revision    int64         `json:"revision"`
	SavedAt     time.Time     `json:"saved_at"`
	ConfirmedAt time.Time     `json:"confirmed_at"`
	Strategy    string        `json:"strategy"`
	Leader      string        `json:"leader"`
	LeaderEpoch int64         `json:"leader_epoch"`
	Servers     []savedServer `json:"servers"`
	// Balancing is the policy in force; absent in files of earlier
	// versions, which then load with DefaultBalancing.
	Balancing *Balancing `json:"balancing,omitempty"`
	AllDown   bool       `json:"all_down,omitempty"`
	// Heartbeat is the leader's newest heartbeat when the file was saved,
	// which confirms the verdicts of its epoch (see verdict.go); absent in
	// files of earlier versions.
	Heartbeat *Heartbeat `json:"heartbeat,omitempty"`
}

// savedServer is the on-disk form of a Server. It is a format of its own,
// not the Server or ServerInfo type, so that neither can change what a
// restarted replica reads: files written by earlier versions must keep
// loading. It converts to and from ServerInfo, which has the same fields
// (a field added to one is a compile error here until the format decides).
type savedServer struct {
	ID              string              `json:"id"`
	Addr            string              `json:"addr"`
	Weight          int                 `json:"weight"`
	EffectiveWeight int                 `json:"effective_weight"`
	Healthy         bool                `json:"healthy"`
	State           HealthState         `json:"state"`
	Since           time.Time           `json:"since"`
	Reason          string              `json:"reason,omitempty"`
	Eligible        bool                `json:"eligible"`
	Errors          []string            `json:"errors,omitempty"`
	StatusURL       string              `json:"status_url,omitempty"`
	Report          ReportState         `json:"report"`
	ReportedAt      time.Time           `json:"reported_at,omitzero"`
	Load            float64             `json:"load"`
	Conns           int64               `json:"conns"`
	MaxConns        int64               `json:"max_conns"`
	Overloaded      bool                `json:"overloaded"`
	SlowStart       float64             `json:"slow_start"`
	Draining        bool                `json:"draining"`
	DrainReason     *keyspace.DrainNote `json:"drain_reason,omitempty"`
	Held            bool                `json:"held,omitempty"`
	Degraded        bool                `json:"degraded,omitempty"`
	CheckedAt       time.Time           `json:"checked_at,omitzero"`
	VerdictEpoch    int64               `json:"verdict_epoch,omitempty"`
	RebalanceTarget int64               `json:"rebalance_target"`
	ShedTotal       int64               `json:"shed_total"`
}

// server returns the snapshot entry saved as s.
func (s savedServer) server() Server {
	return Server{
		ID: s.ID, Addr: s.Addr, Weight: s.Weight, EffectiveWeight: s.EffectiveWeight,
		Healthy: s.Healthy, State: s.State, Since: s.Since, Reason: s.Reason,
		Eligible: s.Eligible, Errors: s.Errors, StatusURL: s.StatusURL,
		Report: s.Report, ReportedAt: s.ReportedAt, Load: s.Load, Conns: s.Conns, MaxConns: s.MaxConns,
		Overloaded: s.Overloaded, SlowStart: s.SlowStart, Draining: s.Draining, DrainReason: s.DrainReason,
		Held: s.Held, Degraded: s.Degraded, CheckedAt: s.CheckedAt, VerdictEpoch: s.VerdictEpoch,
		RebalanceTarget: s.RebalanceTarget, ShedTotal: s.ShedTotal,
	}
}

// SaveSnapshot writes s to path atomically (temporary file, fsync,
// rename), so a crash leaves either the old file or the new one.
// confirmedAt is when etcd last confirmed s was current.
func SaveSnapshot(path string, s *Snapshot, confirmedAt, now time.Time) error {
	var hb *Heartbeat
	if h := s.Heartbeat(); h.Epoch != 0 {
		hb = &h
	}
	// The envelope is encoded with no servers, and the servers are
	// streamed into it one at a time: at 10,000 servers the whole file
	// encoded at once was a 4 MB buffer (grown by doubling) plus a copy
	// of every server, every few seconds, on every replica.
	head, err := json.Marshal(savedSnapshot{Heartbeat: hb, Version: persistVersion, Revision: s.Revision, SavedAt: now,
		ConfirmedAt: confirmedAt, Strategy: string(s.Strategy), Leader: s.Leader, LeaderEpoch: s.LeaderEpoch,
		Servers: []savedServer{}, Balancing: &s.Balancing, AllDown: s.AllDown})
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	const list = `"servers":[`
	// Keys come before their values and strings escape their quotes, so
	// the first match is the key itself.
	at := bytes.Index(head, []byte(list+"]"))
	if at < 0 {
		return errors.New("encode snapshot: no server list in the envelope")
	}
	at += len(list)
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this fails harmlessly
	w := bufio.NewWriterSize(f, 64<<10)
	enc := json.NewEncoder(w)
	_, _ = w.Write(head[:at])
	for i := range s.Servers {
		if i > 0 {
			_ = w.WriteByte(',')
		}
		if err := enc.Encode(savedServer(s.Servers[i].Info())); err != nil {
			f.Close()
			return fmt.Errorf("encode snapshot: server %s: %w", s.Servers[i].ID, err)
		}
	}
	_, _ = w.Write(head[at:])
	if err := w.Flush(); err != nil {
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
	servers := make([]Server, len(saved.Servers))
	for i, srv := range saved.Servers {
		servers[i] = srv.server()
	}
	var hb Heartbeat
	if saved.Heartbeat != nil {
		hb = *saved.Heartbeat
	}
	s, err := newSnapshotFrom(saved.Revision, st, bal, saved.AllDown, servers, now, hb)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("load snapshot %s: %w", path, err)
	}
	s.Leader, s.LeaderEpoch = saved.Leader, saved.LeaderEpoch
	return s, saved.ConfirmedAt, nil
}
