// Package keyspace is the etcd key layout of tcpdispatch and the parsers of
// the values operators write there. It is the contract between operators
// (etcdctl, dispatchctl), self-registering servers (serverkit/register)
// and the dispatcher's replicas, which read the keys (package store).
//
// It depends on the standard library and the contract package only, so
// that a tcp-server registering itself does not link the dispatcher's
// store, Prometheus or logrus.
package keyspace

import (
	"fmt"
	"strings"

	"github.com/tcpdispatch/tcpdispatch"
)

// DefaultPrefix is the etcd key prefix used when none is configured.
const DefaultPrefix = "/tcpdispatch/"

// DefaultWeight is the static weight of a server whose weight key is absent.
const DefaultWeight = 100

// MaxWeight is the largest static weight an operator may set.
const MaxWeight = 10000

// Server fields an operator writes under servers/<id>/.
const (
	FieldAddr   = "addr"
	FieldWeight = "weight"
	// FieldStatusURL is the http(s) URL of the server's status document
	// (see tcpdispatch.Status), pulled by the leader.
	FieldStatusURL = "status-url"
	// FieldDrain is "true" or "false"; true stops new assignments while
	// the server stays listed and probed.
	FieldDrain = "drain"
)

// Layout is the etcd key layout under one prefix:
//
//	<prefix>servers/<id>/addr     host:port (operator)
//	<prefix>servers/<id>/weight   0..10000, default 100 (operator)
//	<prefix>servers/<id>/status-url  http(s) URL of the status document (operator)
//	<prefix>servers/<id>/drain    true | false (operator)
//	<prefix>servers/<id>/drain-reason  JSON DrainNote or text: why it was drained (operator)
//	<prefix>config/strategy       wrr | random | hash | p2c | least-load (operator)
//	<prefix>config/<name>         balancing settings, see store.Balancing (operator)
//	<prefix>health/<id>           JSON store.Health, with the load report (leader, fenced)
//	<prefix>election/<lease>      leader election (concurrency.Election)
type Layout struct {
	prefix string
}

// New returns the layout under prefix, which must start with "/"; a
// missing trailing "/" is added.
func New(prefix string) (Layout, error) {
	if !strings.HasPrefix(prefix, "/") {
		return Layout{}, fmt.Errorf("prefix %q: must start with /", prefix)
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return Layout{prefix: prefix}, nil
}

// Prefix returns the root of the layout, ending in "/".
func (k Layout) Prefix() string { return k.prefix }

// Servers returns the prefix of every server key.
func (k Layout) Servers() string { return k.prefix + "servers/" }

// Server returns the prefix of one server's keys, with the trailing slash
// that keeps "tcp1" from matching "tcp10" in a prefix delete.
func (k Layout) Server(id string) string { return k.Servers() + id + "/" }

// ServerField returns the key of one field of a server.
func (k Layout) ServerField(id, field string) string { return k.Server(id) + field }

// Strategy returns the key holding the balancing strategy.
func (k Layout) Strategy() string { return k.prefix + "config/strategy" }

// Config returns the key of the balancing setting name (see store.Balancing).
func (k Layout) Config(name string) string { return k.prefix + "config/" + name }

// HealthPrefix returns the prefix of the leader-written health records.
func (k Layout) HealthPrefix() string { return k.prefix + "health/" }

// Health returns the key of one server's health record.
func (k Layout) Health(id string) string { return k.HealthPrefix() + id }

// Election returns the election prefix without a trailing slash, in the
// form concurrency.NewElection expects.
func (k Layout) Election() string { return k.prefix + "election" }

// Kind classifies a key under the prefix.
type Kind int

// Kinds of keys.
const (
	// KindUnknown is a key outside the parts of the layout replicas read.
	KindUnknown Kind = iota
	// KindServerField is servers/<id>/<field>.
	KindServerField
	// KindStrategy is config/strategy.
	KindStrategy
	// KindConfig is config/<name>; Parse does not know which settings
	// exist (store does: an unknown one is reported there).
	KindConfig
	// KindHealth is health/<id>.
	KindHealth
	// KindElection is a key under election/.
	KindElection
	// KindHeartbeat is the leader's heartbeat key (see Layout.Heartbeat).
	KindHeartbeat
	// KindInvalid is a key in an operator part of the layout (servers/,
	// config/, health/) that the layout does not allow: a typo in a key's
	// name is reported like a bad value, not silently ignored.
	KindInvalid
)

// Parse classifies key; id and field are set for server keys, id for health
// keys, field for config keys other than the strategy. For KindInvalid,
// field says what is wrong with the key.
func (k Layout) Parse(key string) (kind Kind, id, field string) {
	rest, ok := strings.CutPrefix(key, k.prefix)
	if !ok {
		return KindUnknown, "", ""
	}
	switch {
	case rest == "config/strategy":
		return KindStrategy, "", ""
	case strings.HasPrefix(rest, "config/"):
		return KindConfig, "", rest[len("config/"):]
	case strings.HasPrefix(rest, "servers/"):
		id, field, ok := strings.Cut(rest[len("servers/"):], "/")
		switch {
		case tcpdispatch.ValidateID(id) != nil:
			return KindInvalid, "", tcpdispatch.ValidateID(id).Error()
		case !ok || field == "" || strings.Contains(field, "/"):
			return KindInvalid, "", "want servers/<id>/<field>"
		}
		return KindServerField, id, field
	case strings.HasPrefix(rest, "health/"):
		id := rest[len("health/"):]
		if err := tcpdispatch.ValidateID(id); err != nil {
			return KindInvalid, "", err.Error()
		}
		return KindHealth, id, ""
	case strings.HasPrefix(rest, "election/"):
		return KindElection, "", ""
	case rest == "leader/heartbeat":
		return KindHeartbeat, "", ""
	}
	return KindUnknown, "", ""
}
