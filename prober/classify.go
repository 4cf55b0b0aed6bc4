package prober

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// A probe that fails says something about the server only when the failure
// came from the network or the server. Some failures describe the prober's
// own host instead: it is out of file descriptors or buffers, it has no
// local address or route to the server, a local firewall refused the
// packet, its resolver failed, or it was starved of CPU so that its own
// deadline fired late. Such a failure is not a verdict: it leaves the
// server's health as it was (see Prober.Run), and a round made mostly of
// them counts against the leader, not the servers.

// localErrnos are errors that a connect can only get from the local host:
// resource exhaustion, a missing local address, a local firewall (netfilter
// drops in OUTPUT give EPERM, a "prohibit" route EACCES), a "blackhole"
// route (EINVAL).
var localErrnos = []syscall.Errno{
	syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
	syscall.EADDRNOTAVAIL, syscall.EADDRINUSE, syscall.EPERM, syscall.EACCES, syscall.EINVAL,
}

// routeErrnos come from a local route lookup or from an ICMP error sent by
// a router or the server's host; localRoute tells them apart.
var routeErrnos = []syscall.Errno{syscall.ENETUNREACH, syscall.EHOSTUNREACH}

// classifier decides whether a failed probe is the prober's own fault.
type classifier struct {
	// timeout is the probe timeout; slack is how late past it a timeout
	// may fire before the prober counts itself starved.
	timeout, slack time.Duration
	// routeCheck reports whether the local host has a route to addr (an
	// IP:port). Tests replace it.
	routeCheck func(addr string) error
}

// isLocal reports whether err, returned by a probe of addr that took
// elapsed (lag: how late the round itself started), describes the prober's
// host rather than the server.
func (c classifier) isLocal(addr string, err error, elapsed, lag time.Duration) bool {
	if err == nil {
		return false
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		for _, e := range localErrnos {
			if errno == e {
				return true
			}
		}
		for _, e := range routeErrnos {
			if errno == e {
				return c.localRoute(addr)
			}
		}
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		// An authoritative "no such host" is a verdict on the name the
		// operator registered; a resolver that times out, is unreachable
		// or misbehaves is the prober's own trouble.
		return !dnsErr.IsNotFound
	}
	if isTimeout(err) {
		// A timer that fires well past its deadline, or a round that
		// started well past its time, means the process was not
		// scheduled: the server was not given its timeout.
		return elapsed > c.timeout+c.slack || lag > c.slack
	}
	return false
}

// localRoute reports whether the local routing table (not a remote router)
// refuses addr: a UDP connect looks the route up without sending anything.
func (c classifier) localRoute(addr string) bool {
	check := c.routeCheck
	if check == nil {
		check = udpRoute
	}
	err := check(addr)
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	for _, e := range append(routeErrnos, syscall.EINVAL, syscall.EACCES, syscall.EPERM) {
		if errno == e {
			return true
		}
	}
	return false
}

// udpRoute connects a UDP socket to addr, which only looks up the route.
func udpRoute(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if net.ParseIP(host) == nil {
		// A name: resolving it again would be a second probe of DNS.
		return nil
	}
	conn, err := net.Dial("udp", net.JoinHostPort(host, port))
	if err != nil {
		return err
	}
	return conn.Close()
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
