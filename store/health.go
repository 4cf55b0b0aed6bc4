package store

import (
	"errors"
	"time"
)

// Health is the leader's verdict on one server, stored as JSON under
// health/<id>. Epoch is the writer's leader epoch (the create revision of its
// election key), so a reader can tell which term wrote it.
//
// For a server with a status URL the record also carries the last load
// report (the fields from Load on). ReportedAt is zero when there is none:
// no status URL, or the last pull failed. A replica ignores a report once
// its clock passes ReportExpires, so a number the leader stopped refreshing
// never steers traffic.
type Health struct {
	// Addr is the address that was probed; a verdict for another address
	// than the one registered now does not apply.
	Addr    string `json:"addr"`
	Healthy bool   `json:"healthy"`
	// Since is when the server last changed between healthy and unhealthy.
	Since time.Time `json:"since"`
	// CheckedAt is when the leader checked the server (the end of the
	// probe round that produced this record), by the leader's clock; with
	// Epoch it says which term vouches for the verdict and as of when.
	// Records are rewritten at least every refresh interval while a leader
	// runs, so a replica derives the verdict's age from it (see
	// Snapshot.OldestVerdictAge). Both fields have been in every record
	// written so far; a record without them decodes with zero values and
	// counts as having no confirmation time.
	CheckedAt time.Time `json:"checked_at"`
	// Reason says why the last probe failed; empty when healthy.
	Reason string `json:"reason,omitempty"`
	Epoch  int64  `json:"epoch"`
	Leader string `json:"leader"`

	// Load is the smoothed (EWMA) load, 0..1: the larger of the reported
	// load and conns/max_conns.
	Load float64 `json:"load,omitempty"`
	// Conns and MaxConns are as last reported; MaxConns 0 is unlimited.
	Conns    int64 `json:"conns,omitempty"`
	MaxConns int64 `json:"max_conns,omitempty"`
	// Overloaded is the leader's hysteresis verdict: set when the raw load
	// reaches the overload threshold (or conns reach max_conns), cleared
	// when it falls below the recover mark.
	Overloaded bool `json:"overloaded,omitempty"`
	// Draining is the server's own draining flag.
	Draining bool `json:"draining,omitempty"`
	// ReportedAt is when the status document was pulled; ReportExpires is
	// when replicas stop using it (both leader clock).
	ReportedAt    time.Time `json:"reported_at,omitzero"`
	ReportExpires time.Time `json:"report_expires,omitzero"`

	// RebalanceTarget is how many connections the leader asked the server
	// to shed with its last pull (rebalancing, see docs/BALANCING.md); 0
	// when none. ShedTotal is the count of connections the server reports
	// it shed for rebalancing since it started.
	RebalanceTarget int64 `json:"rebalance_target,omitempty"`
	ShedTotal       int64 `json:"shed_total,omitempty"`
}

// HasReport reports whether h carries a load report.
func (h Health) HasReport() bool { return !h.ReportedAt.IsZero() }

// errEmptyHealth is returned for a health record without an address.
var errEmptyHealth = errors.New("health record without addr")

func (h Health) validate() error {
	if h.Addr == "" {
		return errEmptyHealth
	}
	return nil
}
