package node

import (
	"net"
	"os"
	"strconv"
)

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
