package node

import (
	"net"
	"os"
	"testing"
)

func TestAdvertisedHTTP(t *testing.T) {
	host, _ := os.Hostname()
	tests := []struct {
		adv  string
		addr net.Addr
		want string
	}{
		{"http://10.0.0.1:8080", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, "http://10.0.0.1:8080"},
		{"", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}, "http://127.0.0.1:8080"},
		{"", &net.TCPAddr{IP: net.IPv6loopback, Port: 8080}, "http://[::1]:8080"},
		{"", &net.TCPAddr{IP: net.IPv6unspecified, Port: 8080}, "http://" + net.JoinHostPort(host, "8080")},
	}
	for _, tt := range tests {
		if got := advertisedHTTP(tt.adv, tt.addr); got != tt.want {
			t.Errorf("advertisedHTTP(%q, %v) = %q; want %q", tt.adv, tt.addr, got, tt.want)
		}
	}
}
