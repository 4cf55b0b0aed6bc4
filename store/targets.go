package store

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"

	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// ErrTargetNotAllowed is wrapped by the error for an addr or status-url
// whose IP address is outside the target policy (--allowed-targets), and by
// the dial error of a probe or status pull to such an address.
var ErrTargetNotAllowed = errors.New("target address not allowed")

// defaultDenied are the ranges the default policy refuses: link-local,
// where cloud metadata services answer (169.254.169.254).
var defaultDenied = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fe80::/10"),
}

// TargetPolicy says which IP addresses a tcp-server's addr and status-url
// may name. The zero value is the default policy: every address but
// link-local. It is immutable and safe for concurrent use.
//
// An IP literal is checked when the value is read from etcd: a disallowed
// one is rejected like any invalid value. A host name cannot be checked
// then (its addresses change, and the watcher does not wait on DNS), so it
// is accepted and checked when the leader dials it: a probe or status pull
// to a disallowed address fails, and the server is reported down with the
// reason, so it is never served.
type TargetPolicy struct {
	allowed []netip.Prefix // nil: all but defaultDenied
}

// NewTargetPolicy returns the policy allowing only the given ranges; none
// means the default policy.
func NewTargetPolicy(allowed []netip.Prefix) TargetPolicy {
	return TargetPolicy{allowed: append([]netip.Prefix(nil), allowed...)}
}

// Allows reports whether a may be dialled.
func (p TargetPolicy) Allows(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if len(p.allowed) == 0 {
		for _, d := range defaultDenied {
			if d.Contains(a) {
				return false
			}
		}
		return true
	}
	for _, pr := range p.allowed {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// String describes the policy for error messages.
func (p TargetPolicy) String() string {
	if len(p.allowed) == 0 {
		return "the default policy (all but link-local 169.254.0.0/16 and fe80::/10)"
	}
	s := make([]string, len(p.allowed))
	for i, pr := range p.allowed {
		s[i] = pr.String()
	}
	return "--allowed-targets " + strings.Join(s, ",")
}

// checkHost checks a host of an addr or status-url: IP literals against
// the policy, names not at all (see TargetPolicy).
func (p TargetPolicy) checkHost(host string) error {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	if !p.Allows(a) {
		return fmt.Errorf("%w: %s is outside %s", ErrTargetNotAllowed, host, p)
	}
	return nil
}

// Control is a net.Dialer Control function refusing connections to
// addresses outside the policy, after name resolution.
func (p TargetPolicy) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrTargetNotAllowed, address)
	}
	if !p.Allows(ap.Addr()) {
		return fmt.Errorf("%w: %s is outside %s", ErrTargetNotAllowed, ap.Addr(), p)
	}
	return nil
}

// checkAddr checks a parsed addr.
func (p TargetPolicy) checkAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if err := p.checkHost(host); err != nil {
		return fmt.Errorf("addr %q: %w", addr, err)
	}
	return nil
}

// checkStatusURL checks a parsed status URL.
func (p TargetPolicy) checkStatusURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if err := p.checkHost(u.Hostname()); err != nil {
		return fmt.Errorf("status-url %q: %w", keyspace.RedactURL(raw), err)
	}
	return nil
}
