package keyspace

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

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

// RedactURL returns raw without what may hold a secret: credentials
// become "redacted@" and a query string "?redacted". A value that does not
// parse is replaced whole.
func RedactURL(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "(unparsable URL redacted)"
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	if u.RawQuery != "" || u.ForceQuery {
		u.RawQuery, u.ForceQuery = "redacted", false
	}
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}
