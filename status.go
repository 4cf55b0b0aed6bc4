package tcpdispatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// MaxStatusBytes caps the status document the dispatcher reads from a
// server; a longer body is a failed pull.
const MaxStatusBytes = 64 << 10

// Status is the document a tcp-server serves at its status URL (operators
// register the URL as <prefix>servers/<id>/status-url; the leader pulls it):
//
//	{"conns": 1234, "max_conns": 5000, "load": 0.42, "draining": false}
//
// with HTTP 200 while serving and 503 (same body) while draining. Readers
// ignore unknown fields; absent ones are zero.
type Status struct {
	// Conns is the number of client connections the server holds.
	Conns int64 `json:"conns"`
	// MaxConns is the most it accepts; 0 is unlimited.
	MaxConns int64 `json:"max_conns"`
	// Load is the server's own measure of how busy it is, 0..1.
	Load float64 `json:"load"`
	// Draining asks for no new clients.
	Draining bool `json:"draining"`
	// ShedTotal counts the connections the server shed for rebalancing
	// (see docs/BALANCING.md) since it started; absent from servers that
	// do not shed.
	ShedTotal int64 `json:"shed_total,omitempty"`
}

// ErrBadStatus is wrapped by ParseStatus for a document that is valid JSON
// but not a valid status.
var ErrBadStatus = errors.New("bad status document")

// ParseStatus parses and validates a status document: a JSON object with
// conns and max_conns >= 0 and load in 0..1. Unknown fields are ignored.
func ParseStatus(body []byte) (Status, error) {
	var st Status
	b := bytes.TrimSpace(body)
	if len(b) == 0 || b[0] != '{' {
		return st, fmt.Errorf("parse status: %w: want a JSON object", ErrBadStatus)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return Status{}, fmt.Errorf("parse status: %w", err)
	}
	switch {
	case st.Conns < 0 || st.MaxConns < 0:
		return Status{}, fmt.Errorf("parse status: %w: conns %d, max_conns %d must be >= 0", ErrBadStatus, st.Conns, st.MaxConns)
	case math.IsNaN(st.Load) || st.Load < 0 || st.Load > 1:
		return Status{}, fmt.Errorf("parse status: %w: load %v must be in 0..1", ErrBadStatus, st.Load)
	}
	return st, nil
}

// Utilization is how full the server is, 0..1 (1 or more when at its
// limit): the larger of its load and conns/max_conns.
func (s Status) Utilization() float64 {
	u := s.Load
	if s.MaxConns > 0 {
		u = max(u, float64(s.Conns)/float64(s.MaxConns))
	}
	return u
}
