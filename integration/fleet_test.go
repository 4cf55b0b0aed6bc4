package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The fake fleet is this test binary started again with FAKEFLEET_PROCESS
// set (see TestMain): one cheap process holding thousands of tcp-servers on
// loopback, so that the dispatchers and the fleet are measured apart.
//
//	FLEET_LIVE    listeners that accept and hold connections until the
//	              client closes them, as a server of long-lived clients
//	              does (default 7000)
//	FLEET_STATUS  how many of the live ones also serve a status document
//	FLEET_BLACK   blackholed listeners: backlog 0, filled by one connection
//	              that is never accepted, so further SYNs are dropped and a
//	              connect times out (as for a terminated cloud VM)
//	FLEET_IPS     loopback addresses 127.0.1.1.. to spread them over
//
// It prints "live <addr> <status-url|->" and "black <addr>" lines, then
// "ready"; on stdin "kill <addr>" closes that live listener and every
// connection it holds (as the kernel does for a crashed process whose host
// stays up: held connections get a FIN, connects are refused at once) and
// answers "killed <addr>". It exits when stdin closes.
const fleetEnv = "FAKEFLEET_PROCESS"

// runFleet is the fake fleet's main.
func runFleet() int {
	// Root may raise the hard limit; otherwise the soft one goes up to it.
	lim := syscall.Rlimit{Cur: 200000, Max: 200000}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil && syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	live, statusN, black, ips := envInt("FLEET_LIVE", 7000), envInt("FLEET_STATUS", 2000), envInt("FLEET_BLACK", 3000), envInt("FLEET_IPS", 20)
	out := bufio.NewWriter(os.Stdout)
	ip := func(i int) string { return fmt.Sprintf("127.0.1.%d", 1+i%ips) }

	var mu sync.Mutex
	closers := map[string]io.Closer{}
	for i := range live {
		ln, err := net.Listen("tcp", ip(i)+":0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "fleet: listen:", err)
			return 1
		}
		addr := ln.Addr().String()
		url := "-"
		if i < statusN {
			url = "http://" + addr + "/status"
			conns := rand.IntN(500)
			body := fmt.Appendf(nil, `{"conns":%d,"max_conns":1000,"load":%.2f,"draining":false}`, conns, float64(conns)/1000)
			srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header()["Content-Type"] = []string{"application/json"}
				_, _ = w.Write(body)
			})}
			go func() { _ = srv.Serve(ln) }()
			closers[addr] = srv
		} else {
			h := &holder{ln: ln, conns: map[net.Conn]bool{}}
			go h.serve()
			closers[addr] = h
		}
		fmt.Fprintf(out, "live %s %s\n", addr, url)
	}
	for i := range black {
		addr, err := blackhole(ip(live + i))
		if err != nil {
			fmt.Fprintln(os.Stderr, "fleet: blackhole:", err)
			return 1
		}
		fmt.Fprintf(out, "black %s\n", addr)
	}
	fmt.Fprintln(out, "ready")
	out.Flush()

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, addr, _ := strings.Cut(in.Text(), " ")
		if cmd != "kill" {
			continue
		}
		mu.Lock()
		if c, ok := closers[addr]; ok {
			c.Close()
			delete(closers, addr)
		}
		mu.Unlock()
		fmt.Fprintf(out, "killed %s\n", addr)
		out.Flush()
	}
	return 0
}

// holder is a live listener of the fleet that holds what it accepts.
type holder struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

func (h *holder) serve() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		if h.closed {
			// Accepted just as the listener was killed.
			h.mu.Unlock()
			c.Close()
			return
		}
		h.conns[c] = true
		h.mu.Unlock()
		go func() {
			_, _ = io.Copy(io.Discard, c)
			h.mu.Lock()
			delete(h.conns, c)
			h.mu.Unlock()
			c.Close()
		}()
	}
}

// Close closes the listener and every connection it holds.
func (h *holder) Close() error {
	err := h.ln.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for c := range h.conns {
		c.Close()
	}
	return err
}

// blackhole opens a listener on ip with a backlog of 0 and fills its accept
// queue with one connection that is never accepted: the kernel then drops
// every further SYN. Both sockets stay open until the process exits.
func blackhole(ip string) (string, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("socket: %w", err)
	}
	sa := &syscall.SockaddrInet4{}
	copy(sa.Addr[:], net.ParseIP(ip).To4())
	if err := syscall.Bind(fd, sa); err != nil {
		return "", fmt.Errorf("bind %s: %w", ip, err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	got, err := syscall.Getsockname(fd)
	if err != nil {
		return "", fmt.Errorf("getsockname: %w", err)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(got.(*syscall.SockaddrInet4).Port))
	// The filler: its handshake completes into the queue, which is then
	// full. Kept open (never closed) for the life of the process.
	if _, err := net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
		return "", fmt.Errorf("fill backlog of %s: %w", addr, err)
	}
	return addr, nil
}

// fleet is the client side of a fake-fleet process.
type fleet struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	live  []fleetServer
	black []string
}

type fleetServer struct{ addr, statusURL string }

// startFleet starts the fake fleet and waits until every listener is open.
func startFleet(tb testing.TB, live, withStatus, black int) *fleet {
	tb.Helper()
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fleetEnv+"=1", fmt.Sprintf("FLEET_LIVE=%d", live),
		fmt.Sprintf("FLEET_STATUS=%d", withStatus), fmt.Sprintf("FLEET_BLACK=%d", black))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	outR, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start fake fleet: %v", err)
	}
	f := &fleet{cmd: cmd, in: in, out: bufio.NewScanner(outR)}
	tb.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	for f.out.Scan() {
		fields := strings.Fields(f.out.Text())
		switch {
		case len(fields) == 3 && fields[0] == "live":
			s := fleetServer{addr: fields[1]}
			if fields[2] != "-" {
				s.statusURL = fields[2]
			}
			f.live = append(f.live, s)
		case len(fields) == 2 && fields[0] == "black":
			f.black = append(f.black, fields[1])
		case len(fields) == 1 && fields[0] == "ready":
			return f
		}
	}
	tb.Fatalf("fake fleet ended before it was ready: %v", f.out.Err())
	return nil
}

// kill closes the live listener at addr and waits for the fleet's answer.
func (f *fleet) kill(tb testing.TB, addr string) {
	tb.Helper()
	if _, err := fmt.Fprintf(f.in, "kill %s\n", addr); err != nil {
		tb.Fatal(err)
	}
	for f.out.Scan() {
		if f.out.Text() == "killed "+addr {
			return
		}
	}
	tb.Fatalf("fake fleet did not confirm killing %s", addr)
}

// pid returns the fleet process's pid.
func (f *fleet) pid() int { return f.cmd.Process.Pid }

// TestFakeFleet checks the fleet's three kinds of server: a live one
// accepts, a blackholed one lets a connect time out, a killed one refuses
// and closes what it held.
func TestFakeFleet(t *testing.T) {
	f := startFleet(t, 3, 1, 2)
	if len(f.live) != 3 || len(f.black) != 2 || f.live[0].statusURL == "" {
		t.Fatalf("fleet: %+v", f)
	}
	for _, s := range f.live {
		conn, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err != nil {
			t.Fatalf("live %s: %v", s.addr, err)
		}
		conn.Close()
	}
	if _, err := getSize(f.live[0].statusURL); err != nil {
		t.Fatalf("status document: %v", err)
	}
	for _, addr := range f.black {
		conn, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err == nil {
			conn.Close()
			t.Fatalf("blackholed %s accepted a connection", addr)
		}
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("blackholed %s: want a timeout, got %v", addr, err)
		}
	}
	held, err := net.DialTimeout("tcp", f.live[2].addr, time.Second)
	if err != nil {
		t.Fatalf("live %s: %v", f.live[2].addr, err)
	}
	defer held.Close()
	f.kill(t, f.live[2].addr)
	if _, err := net.DialTimeout("tcp", f.live[2].addr, time.Second); err == nil {
		t.Fatalf("killed %s still accepts", f.live[2].addr)
	}
	// The connection it held ends, as a dead process's do.
	_ = held.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := held.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("connection held by the killed server: read %v; want EOF or a reset", err)
	}
}
