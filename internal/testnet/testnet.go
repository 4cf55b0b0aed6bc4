// Package testnet holds network helpers for tests.
package testnet

import (
	"net"
	"strconv"
	"syscall"
	"testing"
)

// DeadAddr returns a loopback address whose connects are refused for the
// rest of the test: a socket is bound there but does not listen. Unlike a
// port taken by Listen and released by Close, no listener started later in
// the test can be given the same port.
func DeadAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}
