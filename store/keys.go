package store

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
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
	// (see prober.ParseStatus), pulled by the leader.
	FieldStatusURL = "status-url"
	// FieldDrain is "true" or "false"; true stops new assignments while
	// the server stays listed and probed.
	FieldDrain = "drain"
)

// Keys is the etcd key layout under one prefix:
//
//	<prefix>servers/<id>/addr     host:port (operator)
//	<prefix>servers/<id>/weight   0..10000, default 100 (operator)
//	<prefix>servers/<id>/status-url  http(s) URL of the status document (operator)
//	<prefix>servers/<id>/drain    true | false (operator)
//	<prefix>config/strategy       wrr | random | hash | p2c | least-load (operator)
//	<prefix>config/<name>         balancing settings, see Balancing (operator)
//	<prefix>health/<id>           JSON Health, with the load report (leader, fenced)
//	<prefix>election/<lease>      leader election (concurrency.Election)
type Keys struct {
	prefix string
}

// NewKeys returns the layout under prefix, which must start with "/"; a
// missing trailing "/" is added.
func NewKeys(prefix string) (Keys, error) {
	if !strings.HasPrefix(prefix, "/") {
		return Keys{}, fmt.Errorf("prefix %q: must start with /", prefix)
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return Keys{prefix: prefix}, nil
}

// Prefix returns the root of the layout, ending in "/".
func (k Keys) Prefix() string { return k.prefix }

// Servers returns the prefix of every server key.
func (k Keys) Servers() string { return k.prefix + "servers/" }

// Server returns the prefix of one server's keys, with the trailing slash
// that keeps "tcp1" from matching "tcp10" in a prefix delete.
func (k Keys) Server(id string) string { return k.Servers() + id + "/" }

// ServerField returns the key of one field of a server.
func (k Keys) ServerField(id, field string) string { return k.Server(id) + field }

// Strategy returns the key holding the balancing strategy.
func (k Keys) Strategy() string { return k.prefix + "config/strategy" }

// Config returns the key of the balancing setting name (see Balancing).
func (k Keys) Config(name string) string { return k.prefix + "config/" + name }

// HealthPrefix returns the prefix of the leader-written health records.
func (k Keys) HealthPrefix() string { return k.prefix + "health/" }

// Health returns the key of one server's health record.
func (k Keys) Health(id string) string { return k.HealthPrefix() + id }

// Election returns the election prefix without a trailing slash, in the
// form concurrency.NewElection expects.
func (k Keys) Election() string { return k.prefix + "election" }

// keyKind classifies a key under the prefix.
type keyKind int

const (
	kindUnknown keyKind = iota
	kindServerField
	kindStrategy
	kindConfig
	kindHealth
	kindElection
	// kindHeartbeat is the leader's heartbeat key (see Heartbeat).
	kindHeartbeat
	// kindInvalid is a key in an operator part of the layout (servers/,
	// config/, health/) that the layout does not allow: a typo in a key's
	// name is reported like a bad value, not silently ignored.
	kindInvalid
)

// parse classifies key; id and field are set for server keys, id for health
// keys, field for config keys other than the strategy.
func (k Keys) parse(key string) (kind keyKind, id, field string) {
	rest, ok := strings.CutPrefix(key, k.prefix)
	if !ok {
		return kindUnknown, "", ""
	}
	switch {
	case rest == "config/strategy":
		return kindStrategy, "", ""
	case strings.HasPrefix(rest, "config/"):
		// Only the settings this version knows are read; others are
		// ignored like any key outside the layout.
		name := rest[len("config/"):]
		if configParsers[name] == nil {
			return kindInvalid, "", "unknown setting config/" + name
		}
		return kindConfig, "", name
	case strings.HasPrefix(rest, "servers/"):
		id, field, ok := strings.Cut(rest[len("servers/"):], "/")
		switch {
		case ValidateID(id) != nil:
			return kindInvalid, "", ValidateID(id).Error()
		case !ok || field == "" || strings.Contains(field, "/"):
			return kindInvalid, "", "want servers/<id>/<field>"
		}
		return kindServerField, id, field
	case strings.HasPrefix(rest, "health/"):
		id := rest[len("health/"):]
		if err := ValidateID(id); err != nil {
			return kindInvalid, "", err.Error()
		}
		return kindHealth, id, ""
	case strings.HasPrefix(rest, "election/"):
		return kindElection, "", ""
	case rest == "leader/heartbeat":
		return kindHeartbeat, "", ""
	}
	return kindUnknown, "", ""
}

// MaxIDLen bounds a server id, which travels in every get-tcp-ip answer.
const MaxIDLen = 128

// ValidateID reports whether id can name a server: 1..128 bytes of
// letters, digits, '-', '_', '.', ':' and '@'.
func ValidateID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("server id %q: must be 1..%d bytes", id, MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
			c == '-' || c == '_' || c == '.' || c == ':' || c == '@' {
			continue
		}
		return fmt.Errorf("server id %q: byte %q not allowed (use letters, digits, - _ . : @)", id, c)
	}
	return nil
}

// ParseAddr validates a tcp-server address written by an operator: host:port
// with a non-empty host and a port in 1..65535. Surrounding space is ignored.
func ParseAddr(v string) (string, error) {
	v = strings.TrimSpace(v)
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", fmt.Errorf("addr %q: want host:port: %w", v, err)
	}
	if host == "" {
		return "", fmt.Errorf("addr %q: empty host", v)
	}
	if strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", fmt.Errorf("addr %q: host contains space or control characters", v)
	}
	n, err := strconv.Atoi(port)
	if err != nil || port[0] < '0' || port[0] > '9' || n < 1 || n > 65535 {
		return "", fmt.Errorf("addr %q: port must be a number in 1..65535", v)
	}
	return v, nil
}

// ParseWeight validates a static weight written by an operator: an integer
// in 0..10000; 0 drains the server.
func ParseWeight(v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("weight %q: not an integer", v)
	}
	if n < 0 || n > MaxWeight {
		return 0, fmt.Errorf("weight %d: must be in 0..%d", n, MaxWeight)
	}
	return n, nil
}

// ParseStatusURL validates a status URL written by an operator: an absolute
// http or https URL with a host. Surrounding space is ignored.
func ParseStatusURL(v string) (string, error) {
	v = strings.TrimSpace(v)
	u, err := url.Parse(v)
	if err != nil {
		// url's error quotes the value, which may hold a secret.
		return "", fmt.Errorf("status-url %q: does not parse as a URL", RedactURL(v))
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("status-url %q: want http://host[:port]/path (no credentials)", RedactURL(v))
	}
	return v, nil
}

// ParseDrain validates a drain flag written by an operator: "true" or
// "false", any case, surrounding space ignored.
func ParseDrain(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("drain %q: want true or false", v)
}

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
