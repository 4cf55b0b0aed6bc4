package serverkit

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// namedConn is a pipe end that knows its name, to see which ones were shed.
type namedConn struct {
	net.Conn
	name string
}

// shedFixture tracks conns named c0..c{n-1}; c0 was last active first, so
// the idleness order is c0, c1, ...; the hook records the order of
// goodbyes.
func shedFixture(t *testing.T, n int, hook func(net.Conn)) (*Status, *fakeClock, []net.Conn) {
	t.Helper()
	clk := &fakeClock{now: time.Unix(1000, 0)}
	s := NewStatus(0, nil)
	s.now = clk.Now
	s.SetOnShed(hook, time.Second)
	var conns []net.Conn
	for i := range n {
		conns = append(conns, s.Track(namedConn{pipeConn(t), "c" + string(rune('0'+i))}))
		clk.Set(clk.Now().Add(time.Second))
	}
	return s, clk, conns
}

func nameOf(c net.Conn) string { return c.(*trackedConn).Conn.(namedConn).name }

func TestShedOrderAndStop(t *testing.T) {
	var mu sync.Mutex
	var said []string
	hook := func(c net.Conn) {
		mu.Lock()
		said = append(said, nameOf(c))
		mu.Unlock()
	}
	s, clk, conns := shedFixture(t, 6, hook)
	// c0 becomes the most recently active: the idlest are now c1, c2, ...
	clk.Set(clk.Now().Add(time.Second))
	conns[0].(*trackedConn).touch()

	if got := s.Shed(2); got != 2 {
		t.Fatalf("Shed(2) took %d; want 2", got)
	}
	s.WaitShed()
	slices.Sort(said)
	if want := []string{"c1", "c2"}; !slices.Equal(said, want) {
		t.Fatalf("shed %v; want the two idlest %v", said, want)
	}
	if s.Conns() != 4 || s.ShedTotal() != 2 || s.Document().ShedTotal != 2 {
		t.Fatalf("after shedding 2 of 6: conns %d shed_total %d", s.Conns(), s.ShedTotal())
	}
	// More than it has: it stops at what it holds, most recent last.
	said = nil
	if got := s.Shed(100); got != 4 {
		t.Fatalf("Shed(100) of 4 took %d", got)
	}
	s.WaitShed()
	if s.Conns() != 0 || s.ShedTotal() != 6 {
		t.Fatalf("conns %d shed_total %d; want 0 and 6", s.Conns(), s.ShedTotal())
	}
	if s.Shed(1) != 0 || s.Shed(0) != 0 || s.Shed(-3) != 0 {
		t.Fatal("an empty server shed something")
	}
}

func TestShedCountsGoodbyesInFlight(t *testing.T) {
	release := make(chan struct{})
	s, _, _ := shedFixture(t, 5, func(net.Conn) { <-release })
	if got := s.Shed(2); got != 2 {
		t.Fatalf("Shed(2) took %d", got)
	}
	// The leader asks again before the goodbyes finished: the two in
	// flight count toward the new target, so only one more is taken.
	if got := s.Shed(3); got != 1 {
		t.Fatalf("Shed(3) with 2 in flight took %d; want 1", got)
	}
	if got := s.Shed(3); got != 0 {
		t.Fatalf("Shed(3) with 3 in flight took %d; want 0", got)
	}
	close(release)
	s.WaitShed()
	if s.Conns() != 2 || s.ShedTotal() != 3 {
		t.Fatalf("conns %d shed_total %d; want 2 and 3", s.Conns(), s.ShedTotal())
	}
}

func TestShedDrainingShedsNothing(t *testing.T) {
	s, _, _ := shedFixture(t, 3, nil)
	s.SetDraining()
	if got := s.Shed(2); got != 0 || s.Conns() != 3 {
		t.Fatalf("a draining server shed %d (conns %d)", got, s.Conns())
	}
}

func TestShedOverHTTP(t *testing.T) {
	s, _, _ := shedFixture(t, 4, nil)
	srv := httptest.NewServer(s)
	defer srv.Close()
	get := func(q string) (int, string) {
		resp, err := srv.Client().Get(srv.URL + "/status" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, q := range []string{"?shed=x", "?shed=-1", "?shed=1&shed=2", "?shed=", "?shed=99999999999"} {
		if code, body := get(q); code != http.StatusBadRequest || !strings.Contains(body, "shed") {
			t.Errorf("GET %s: %d %q; want 400 with a reason", q, code, body)
		}
	}
	if s.Conns() != 4 {
		t.Fatalf("bad requests shed: conns %d", s.Conns())
	}
	if code, _ := get("?shed=0"); code != http.StatusOK {
		t.Fatalf("shed=0: %d", code)
	}
	if code, body := get("?shed=3"); code != http.StatusOK || !strings.Contains(body, `"shed_total":3`) {
		t.Fatalf("shed=3: %d %s", code, body)
	}
	s.WaitShed()
	if s.Conns() != 1 {
		t.Fatalf("conns %d after shed=3 of 4; want 1", s.Conns())
	}
}

// TestServerShedGoodbye runs a Server on a real listener: the client of a
// shed connection reads the OnShed goodbye, then EOF.
func TestServerShedGoodbye(t *testing.T) {
	srv, err := New(Config{OnShed: func(c net.Conn) { _, _ = io.WriteString(c, "BYE\n") }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- srv.Serve(ctx, ln, func(ctx context.Context, c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for srv.Status().Conns() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("connection not tracked")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := srv.Status().Shed(1); got != 1 {
		t.Fatalf("Shed(1) = %d", got)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || line != "BYE\n" {
		t.Fatalf("read %q, %v; want the goodbye", line, err)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("after the goodbye: %v; want EOF", err)
	}
}
