package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// FieldDrainReason (servers/<id>/drain-reason) records why, by whom and
// when a server was drained: a JSON DrainNote as dispatchctl writes it, or
// plain text (etcdctl put), taken as the reason. It is informational:
// replicas show it in /v1/servers and never act on it, so a malformed
// value is shown as text, not rejected.
const FieldDrainReason = "drain-reason"

// DrainNote is the value of servers/<id>/drain-reason.
type DrainNote struct {
	Reason string `json:"reason"`
	// By is who drained the server (user@host, or dispatchctl --by).
	By string `json:"by,omitempty"`
	// At is when the drain was written.
	At time.Time `json:"at,omitzero"`
}

// MaxDrainReason bounds the reason text, which every replica keeps in
// memory and serves in /v1/servers.
const MaxDrainReason = 1024

// ParseDrainNote reads a drain-reason value: a JSON object with a reason,
// or any other text as the reason itself.
func ParseDrainNote(v string) DrainNote {
	var n DrainNote
	if strings.HasPrefix(strings.TrimSpace(v), "{") && json.Unmarshal([]byte(v), &n) == nil && (n.Reason != "" || n.By != "") {
		return n
	}
	return DrainNote{Reason: strings.TrimSpace(v)}
}

// Encode returns the value to store under drain-reason; it fails when the
// reason is too long or contains control characters.
func (n DrainNote) Encode() (string, error) {
	if len(n.Reason) > MaxDrainReason {
		return "", fmt.Errorf("drain reason: %d bytes, at most %d", len(n.Reason), MaxDrainReason)
	}
	if strings.ContainsFunc(n.Reason+n.By, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", fmt.Errorf("drain reason %q: control characters not allowed", n.Reason)
	}
	b, err := json.Marshal(n)
	if err != nil {
		return "", fmt.Errorf("encode drain reason: %w", err)
	}
	return string(b), nil
}

// BuildSnapshot returns the snapshot a replica builds from a full listing
// of the keys under keys.Prefix() taken at revision rev, with the same
// validation and the same rules (defaults, last-good values do not exist
// in a single listing, so a bad value shows as an error and its default
// applies). Tools use it to show what the replicas will make of the keys;
// assignment counts are zero and slow start is computed at now.
func BuildSnapshot(keys Keys, kvs []*mvccpb.KeyValue, rev int64, now time.Time) (*Snapshot, error) {
	m := newModel(keys)
	for _, kv := range kvs {
		m.put(string(kv.Key), kv.Value, kv.CreateRevision)
	}
	m.rev = rev
	s, err := m.build(now)
	if err != nil {
		return nil, fmt.Errorf("build snapshot at revision %d: %w", rev, err)
	}
	return s, nil
}

// Check reports what a replica would reject in a put of key=value: a key
// name the layout does not allow under servers/, config/ or health/, or a
// value its parser refuses. Keys outside those parts (election/, other
// prefixes) and unknown server fields are accepted, as replicas tolerate
// them.
func (k Keys) Check(key string, value []byte) error {
	if r := newModel(k).put(key, value, 0); r != nil {
		return r.err
	}
	return nil
}

// ConfigNames returns the names of the settings under config/ other than
// the strategy, sorted.
func ConfigNames() []string {
	names := make([]string, 0, len(configParsers))
	for n := range configParsers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Value returns setting name of b in the form its key takes ("30s",
// "0.9", "true", "apply"); "" for an unknown name.
func (b Balancing) Value(name string) string {
	switch name {
	case ConfigSlowStart:
		return b.SlowStart.String()
	case ConfigPanicThreshold:
		return strconv.FormatFloat(b.PanicThreshold, 'f', -1, 64)
	case ConfigOverloadThreshold:
		return strconv.FormatFloat(b.OverloadThreshold, 'f', -1, 64)
	case ConfigOverloadRecover:
		return strconv.FormatFloat(b.OverloadRecover, 'f', -1, 64)
	case ConfigHashLoadFactor:
		return strconv.FormatFloat(b.HashLoadFactor, 'f', -1, 64)
	case ConfigAccounting:
		return strconv.FormatBool(b.Accounting)
	case ConfigMassRemoval:
		return string(b.MassRemoval)
	}
	return ""
}
