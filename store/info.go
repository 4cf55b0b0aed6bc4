package store

import (
	"time"

	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// ServerInfo is one server as the dispatcher lists it: an entry of
// /v1/servers (where api adds the live assignment count and redacts the
// status URL) and of dispatchctl servers ls -o json. Its JSON field names
// are a public contract operators script against; Server is the snapshot's
// own, in-memory entry, and persist.go has the on-disk one. The fields mean
// what the Server fields of the same name mean.
type ServerInfo struct {
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

// Info returns s as the dispatcher lists it.
func (s *Server) Info() ServerInfo {
	return ServerInfo{
		ID: s.ID, Addr: s.Addr, Weight: s.Weight, EffectiveWeight: s.EffectiveWeight,
		Healthy: s.Healthy, State: s.State, Since: s.Since, Reason: s.Reason,
		Eligible: s.Eligible, Errors: s.Errors, StatusURL: s.StatusURL,
		Report: s.Report, ReportedAt: s.ReportedAt, Load: s.Load, Conns: s.Conns, MaxConns: s.MaxConns,
		Overloaded: s.Overloaded, SlowStart: s.SlowStart, Draining: s.Draining, DrainReason: s.DrainReason,
		Held: s.Held, Degraded: s.Degraded, CheckedAt: s.CheckedAt, VerdictEpoch: s.VerdictEpoch,
		RebalanceTarget: s.RebalanceTarget, ShedTotal: s.ShedTotal,
	}
}
