package prober

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// blackholeAddr listens on loopback with a backlog of 0 and fills the
// accept queue with one connection never accepted: the kernel then drops
// further SYNs, and a connect waits its whole timeout.
func blackholeAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*syscall.SockaddrInet4).Port))
	filler, err := net.DialTimeout("tcp", ap.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	return ap
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return ap
}

type outcome struct {
	err     error
	elapsed time.Duration
}

func runConnector(t *testing.T, control func(string, string, syscall.RawConn) error) (*connector, context.CancelFunc, *sync.WaitGroup) {
	t.Helper()
	c, err := newConnector(control)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return c, cancel, &wg
}

func connectOnce(c *connector, ap netip.AddrPort, timeout time.Duration) outcome {
	ch := make(chan outcome, 1)
	c.start(ap, timeout, func(err error, elapsed time.Duration) { ch <- outcome{err, elapsed} })
	return <-ch
}

// TestConnectorOutcomes: the connector reports what net.Dialer would, in
// the same form, so that the classifier, the reasons written to etcd and
// the refusal and timeout checks see no difference.
func TestConnectorOutcomes(t *testing.T) {
	c, _, _ := runConnector(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	live := ln.Addr().(*net.TCPAddr).AddrPort()
	if o := connectOnce(c, live, time.Second); o.err != nil {
		t.Fatalf("connect to a listener: %v", o.err)
	}

	closed := closedAddr(t)
	o := connectOnce(c, closed, time.Second)
	if o.err == nil || !refused(o.err) {
		t.Fatalf("connect to a closed port: %v, want a refusal", o.err)
	}
	d := net.Dialer{Timeout: time.Second}
	_, derr := d.Dial("tcp", closed.String())
	if o.err.Error() != derr.Error() {
		t.Errorf("refusal reads %q, net.Dialer's %q", o.err, derr)
	}

	const timeout = 200 * time.Millisecond
	hole := blackholeAddr(t)
	o = connectOnce(c, hole, timeout)
	if o.err == nil || !isTimeout(o.err) || refused(o.err) {
		t.Fatalf("connect to a blackhole: %v, want a timeout", o.err)
	}
	if o.elapsed < timeout || o.elapsed > timeout+time.Second {
		t.Errorf("timeout after %v, want about %v", o.elapsed, timeout)
	}
	if want := "dial tcp " + hole.String() + ": i/o timeout"; o.err.Error() != want {
		t.Errorf("timeout reads %q, want %q", o.err, want)
	}
	var opErr *net.OpError
	if !errors.As(o.err, &opErr) || !opErr.Timeout() {
		t.Errorf("timeout %#v is not a net.OpError that says so", o.err)
	}
}

// TestConnectorManyAtOnce: timeouts and outcomes of many connects in flight
// together each arrive once, in deadline order for the timeouts, and no
// socket is left open.
func TestConnectorManyAtOnce(t *testing.T) {
	c, _, _ := runConnector(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	live := ln.Addr().(*net.TCPAddr).AddrPort()
	hole := blackholeAddr(t)
	fds := openFDs(t)

	const n = 200
	var mu sync.Mutex
	got := map[int]int{}
	var timeouts []time.Duration
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		ap, timeout := live, time.Second
		if i%2 == 1 {
			ap, timeout = hole, 100*time.Millisecond+time.Duration(i)*time.Millisecond
		}
		c.start(ap, timeout, func(err error, elapsed time.Duration) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			got[i]++
			switch {
			case i%2 == 0 && err != nil:
				t.Errorf("connect %d to a listener: %v", i, err)
			case i%2 == 1 && !isTimeout(err):
				t.Errorf("connect %d to a blackhole: %v, want a timeout", i, err)
			case i%2 == 1:
				if elapsed < timeout {
					t.Errorf("connect %d timed out after %v, before its %v", i, elapsed, timeout)
				}
				timeouts = append(timeouts, timeout)
			}
		})
	}
	wg.Wait()
	for i := range n {
		if got[i] != 1 {
			t.Errorf("connect %d reported %d times", i, got[i])
		}
	}
	for i := 1; i < len(timeouts); i++ {
		if timeouts[i] < timeouts[i-1] {
			t.Fatalf("timeouts out of deadline order: %v", timeouts)
		}
	}
	if after := openFDs(t); after > fds {
		t.Errorf("%d descriptors open after the connects, %d before", after, fds)
	}
}

// TestConnectorPolicyAndShutdown: the target policy refuses before any
// packet; the end of run closes connects in flight without reporting them,
// and a start after it reports net.ErrClosed at once.
func TestConnectorPolicyAndShutdown(t *testing.T) {
	policy := store.NewTargetPolicy([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	c, cancel, wg := runConnector(t, policy.Control)
	if o := connectOnce(c, closedAddr(t), time.Second); !errors.Is(o.err, store.ErrTargetNotAllowed) {
		t.Fatalf("connect outside the policy: %v, want %v", o.err, store.ErrTargetNotAllowed)
	}

	c2, cancel2, wg2 := runConnector(t, nil)
	hole := blackholeAddr(t)
	fds := openFDs(t)
	reported := make(chan error, 1)
	c2.start(hole, time.Minute, func(err error, _ time.Duration) { reported <- err })
	if openFDs(t) != fds+1 {
		t.Fatalf("the connect in flight holds no socket")
	}
	cancel2()
	wg2.Wait()
	select {
	case err := <-reported:
		t.Fatalf("a connect cut by the end of run was reported: %v", err)
	default:
	}
	// Both the connect's socket and the epoll instance are closed.
	if after := openFDs(t); after != fds-1 {
		t.Errorf("%d descriptors open after run ended, %d before the connect (with the epoll instance)", after, fds)
	}
	if o := connectOnce(c2, hole, time.Second); !errors.Is(o.err, net.ErrClosed) {
		t.Errorf("start after run: %v, want net.ErrClosed", o.err)
	}
	cancel()
	wg.Wait()
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestConnectorOpenKeepsSocket: open hands over the connected socket, which
// a link then holds with the dialer's keepalive settings; a refusal hands
// over nothing.
func TestConnectorOpenKeepsSocket(t *testing.T) {
	c, _, _ := runConnector(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type opened struct {
		fd  int
		err error
	}
	open := func(ap netip.AddrPort) opened {
		ch := make(chan opened, 1)
		c.open(ap, time.Second, func(fd int, err error) { ch <- opened{fd, err} })
		return <-ch
	}
	o := open(ln.Addr().(*net.TCPAddr).AddrPort())
	if o.err != nil || o.fd < 0 {
		t.Fatalf("open a listener: fd %d, %v", o.fd, o.err)
	}
	defer syscall.Close(o.fd)
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := setKeepAlive(o.fd, net.KeepAliveConfig{Enable: true, Idle: 2 * time.Second, Interval: 1500 * time.Millisecond, Count: 1}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		level, opt, v int
		name          string
	}{
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1, "SO_KEEPALIVE"},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 2, "TCP_KEEPIDLE"},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 2, "TCP_KEEPINTVL"},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 1, "TCP_KEEPCNT"},
	} {
		if v, err := syscall.GetsockoptInt(o.fd, want.level, want.opt); err != nil || v != want.v {
			t.Errorf("%s = %d (%v), want %d", want.name, v, err, want.v)
		}
	}
	// The socket is the connection: what the peer writes arrives on it.
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	etcdtest.WaitFor(t, 5*time.Second, "the peer's byte on the opened socket", func() bool { n, _ := syscall.Read(o.fd, buf); return n == 1 })

	if o := open(closedAddr(t)); o.err == nil || o.fd != -1 || !refused(o.err) {
		t.Errorf("open a closed port: fd %d, %v; want -1 and a refusal", o.fd, o.err)
	}
}

// TestProbeConnectionsReset: a connect probe that gets through closes its
// connection with a reset, by the connector or after net.Dialer (a host
// name): the server reads ECONNRESET, not EOF, and the leader keeps no
// TIME_WAIT socket per probe.
func TestProbeConnectionsReset(t *testing.T) {
	c, _, _ := runConnector(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	for _, tc := range []struct {
		name  string
		probe func() error
	}{
		{"connector", func() error { return connectOnce(c, addr, time.Second).err }},
		{"net.Dialer", func() error {
			conn, err := net.DialTimeout("tcp", "localhost:"+strconv.Itoa(int(addr.Port())), time.Second)
			if err == nil {
				closeProbeConn(conn)
			}
			return err
		}},
	} {
		if err := tc.probe(); err != nil {
			t.Fatalf("%s: probe: %v", tc.name, err)
		}
		conn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s: the server read %v after the probe, want a connection reset", tc.name, err)
		}
	}
}
