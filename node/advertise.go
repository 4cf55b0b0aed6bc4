package node

import (
	"net"
	"os"
	"strconv"
	"time"
)

// announceTTL is the lease of a replica's announcement: far longer than the
// leader's, so that an etcd that is slow to renew leases for a few seconds
// does not empty the replica list a suspect leader asks (a dead replica
// listed meanwhile costs one refused or timed-out request).
func announceTTL(leaderTTL time.Duration) time.Duration {
	return max(30*time.Second, leaderTTL)
}

// advertisedHTTP returns the base URL other replicas use to reach this
// replica's HTTP API: adv when set, else the listener's address, with the
// host name in place of an unspecified IP.
func advertisedHTTP(adv string, addr net.Addr) string {
	if adv != "" {
		return adv
	}
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return "http://" + addr.String()
	}
	host := tcp.IP.String()
	if tcp.IP.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}
