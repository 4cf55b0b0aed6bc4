package store

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// BuildSnapshot returns the snapshot a replica builds from a full listing
// of the keys under keys.Prefix() taken at revision rev, with the same
// validation and the same rules (defaults, last-good values do not exist
// in a single listing, so a bad value shows as an error and its default
// applies). Tools use it to show what the replicas will make of the keys;
// assignment counts are zero and slow start is computed at now.
func BuildSnapshot(keys keyspace.Layout, kvs []*mvccpb.KeyValue, rev int64, now time.Time) (*Snapshot, error) {
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

// CheckKey reports what a replica would reject in a put of key=value under
// layout k: a key name the layout does not allow under servers/, config/ or
// health/, or a value its parser refuses. Keys outside those parts
// (election/, other prefixes) and unknown server fields are accepted, as
// replicas tolerate them.
func CheckKey(k keyspace.Layout, key string, value []byte) error {
	if r := newModel(k).put(key, value, 0); r != nil {
		return r.err
	}
	return nil
}

// parseKey classifies key as replicas read it: keyspace's Parse, with a
// config/<name> this version has no setting for reported as invalid (only
// the settings this version knows are read).
func parseKey(k keyspace.Layout, key string) (kind keyspace.Kind, id, name string) {
	kind, id, name = k.Parse(key)
	if kind == keyspace.KindConfig && configParsers[name] == nil {
		return keyspace.KindInvalid, "", "unknown setting config/" + name
	}
	return kind, id, name
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
