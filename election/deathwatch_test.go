package election

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
)

// fakeProcess stands for the leader's process: a listener whose accepted
// connections stay open, idle, until close (a "SIGKILL": the listener and
// every connection close at once) or dropLinks (the process closes its
// idle connections but keeps listening).
type fakeProcess struct {
	ln       net.Listener
	mu       sync.Mutex
	conns    []net.Conn
	accepted chan struct{}
	done     chan struct{}
}

func startFakeProcess(t *testing.T) *fakeProcess {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeProcess{ln: ln, accepted: make(chan struct{}, 64), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.accepted <- struct{}{}
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *fakeProcess) addr() string { return p.ln.Addr().String() }

func (p *fakeProcess) dropLinks() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *fakeProcess) close() {
	p.ln.Close()
	<-p.done
	p.dropLinks()
}

func (p *fakeProcess) waitLink(t *testing.T) {
	t.Helper()
	select {
	case <-p.accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no link to the leader within 5s")
	}
}

// startDeathWatch runs a DeathWatch named "b" that locates every replica at
// addr, until the test ends.
func startDeathWatch(t *testing.T, cli *clientv3.Client, addr string, dial func(context.Context, string, string) (net.Conn, error)) *DeathWatch {
	return startDeathWatchConfirm(t, cli, addr, dial, "")
}

// startDeathWatchConfirm is startDeathWatch with every replica's Confirm
// address at confirm ("": no Confirm).
func startDeathWatchConfirm(t *testing.T, cli *clientv3.Client, addr string, dial func(context.Context, string, string) (net.Conn, error), confirm string) *DeathWatch {
	t.Helper()
	cfg := DefaultDeathWatchConfig()
	cfg.Name, cfg.Prefix, cfg.Dial = "b", testPrefix, dial
	if confirm != "" {
		cfg.Confirm = func(context.Context, string) (string, error) { return confirm, nil }
	}
	cfg.DialTimeout, cfg.RetryInterval = 300*time.Millisecond, 100*time.Millisecond
	locate := func(context.Context, string) (string, error) { return addr, nil }
	w, err := NewDeathWatch(cfg, cli, locate, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancellation")
		}
	})
	return w
}

func (w *DeathWatch) count(o noticeOutcome) float64 {
	return testutil.ToFloat64(w.notices.WithLabelValues(string(o)))
}

// leaseOf returns the lease of the term's leader key, 0 if the key is gone.
func leaseOf(t *testing.T, cli *clientv3.Client, tm term) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Get(testCtx(t), tm.l.Key())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

func TestDeathWatchRevokesOnRefusal(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	c := startCandidate(t, cli, "a", true)
	tm := c.nextTerm(t, 5*time.Second)
	proc := startFakeProcess(t)
	w := startDeathWatch(t, cli, proc.addr(), nil)
	proc.waitLink(t)

	killed := time.Now()
	proc.close()
	// The candidate's TTL is 2s and its keep-alives go on: only the
	// revoke can end the term this soon.
	waitDone(t, tm, time.Second)
	if took := time.Since(killed); took > time.Second {
		t.Fatalf("term ended %v after the kill", took)
	}
	if leaseOf(t, cli, tm) != 0 {
		t.Fatal("leader key still exists")
	}
	// Counted once the revoke returns, which may be after the term ended.
	etcdtest.WaitFor(t, 2*time.Second, "the revoke counted", func() bool { return w.count(noticeRevoked) == 1 })
	// The candidate wins again on a new lease; its address still refuses,
	// but no link was ever open to that term: no second revoke.
	next := c.nextTerm(t, 5*time.Second)
	time.Sleep(500 * time.Millisecond)
	if leaseOf(t, cli, next) == 0 || w.count(noticeRevoked) != 1 {
		t.Fatalf("a term never linked to was revoked (revoked = %v)", w.count(noticeRevoked))
	}
}

// closedAddr returns a loopback address where nothing listens: a dial is
// refused.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestDeathWatchFirstDialConfirmed: a leader killed before any link to it
// was open (FailoverBenchmark under CPU pressure, 2026-12-02: 3.5 s, the
// lease TTL, when the kill came 0.3 s after the term began) is noticed
// when its member's client listener refuses too; with that listener up
// (only the peer address is wrong) nobody is deposed.
func TestDeathWatchFirstDialConfirmed(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	c := startCandidate(t, cli, "a", true)
	tm := c.nextTerm(t, 5*time.Second)
	peer := closedAddr(t)

	alive := startFakeProcess(t)
	w := startDeathWatchConfirm(t, cli, peer, nil, alive.addr())
	alive.waitLink(t) // the confirming dial connected
	time.Sleep(500 * time.Millisecond)
	if leaseOf(t, cli, tm) == 0 || w.count(noticeRevoked) != 0 {
		t.Fatalf("a leader whose client listener answers was revoked (revoked = %v)", w.count(noticeRevoked))
	}

	start := time.Now()
	w2 := startDeathWatchConfirm(t, cli, peer, nil, closedAddr(t))
	waitDone(t, tm, time.Second)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("term ended %v after the watch started", took)
	}
	// Counted once the revoke returns, which may be after the term ended.
	etcdtest.WaitFor(t, 2*time.Second, "the revoke counted", func() bool { return w2.count(noticeRevoked) == 1 })
}

func TestDeathWatchLeavesOtherEndsToTTL(t *testing.T) {
	// blackhole: every dial after the first hangs until its timeout, as
	// towards a partitioned host.
	var dials sync.Mutex
	n := 0
	blackhole := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Lock()
		n++
		first := n == 1
		dials.Unlock()
		if first {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	for _, tc := range []struct {
		name string
		dial func(context.Context, string, string) (net.Conn, error)
		end  func(p *fakeProcess)
		want noticeOutcome
	}{
		{"closed link, still listening", nil, (*fakeProcess).dropLinks, noticeAlive},
		{"killed behind a blackhole", blackhole, (*fakeProcess).close, noticeUnconfirmed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli := etcdtest.Start(t).Client(t)
			c := startCandidate(t, cli, "a", true)
			tm := c.nextTerm(t, 5*time.Second)
			lease := leaseOf(t, cli, tm)
			proc := startFakeProcess(t)
			w := startDeathWatch(t, cli, proc.addr(), tc.dial)
			proc.waitLink(t)
			time.Sleep(minLinkLife) // a link that lived, so a reconnect is taken at once
			tc.end(proc)
			deadline := time.Now().Add(5 * time.Second)
			for w.count(tc.want) == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("no %s notice within 5s", tc.want)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if got := w.count(noticeRevoked); got != 0 {
				t.Fatalf("revoked = %v, want 0", got)
			}
			if leaseOf(t, cli, tm) != lease {
				t.Fatal("leader key changed")
			}
		})
	}
}

func TestDeathWatchRevokeComparesKey(t *testing.T) {
	ctx := testCtx(t)
	cli := etcdtest.Start(t).Client(t)
	cfg := DefaultDeathWatchConfig()
	cfg.Name, cfg.Prefix = "b", testPrefix
	w, err := NewDeathWatch(cfg, cli, func(context.Context, string) (string, error) { return "", errors.New("unused") },
		testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	grant := func() clientv3.LeaseID {
		l, err := cli.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		return l.ID
	}
	put := func(key string, lease clientv3.LeaseID) *leaderTerm {
		resp, err := cli.Put(ctx, key, "a", clientv3.WithLease(lease))
		if err != nil {
			t.Fatal(err)
		}
		return &leaderTerm{key: key, name: "a", lease: lease, createRev: resp.Header.Revision}
	}
	alive := func(id clientv3.LeaseID) bool {
		r, err := cli.TimeToLive(ctx, id)
		return err == nil && r.TTL > 0
	}

	key := testPrefix + "/k"
	l1 := grant()
	old := put(key, l1)
	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	l2 := grant()
	cur := put(key, l2)

	for _, tc := range []struct {
		name string
		lt   *leaderTerm
		want noticeOutcome
	}{
		{"lease changed", old, noticeGone},
		{"create revision changed", &leaderTerm{key: key, lease: l2, createRev: old.createRev}, noticeGone},
		{"key gone", &leaderTerm{key: testPrefix + "/none", lease: l1, createRev: old.createRev}, noticeGone},
	} {
		if got, err := w.revokeIfSame(ctx, tc.lt); got != tc.want || err != nil {
			t.Errorf("%s: revokeIfSame = %s, %v; want %s", tc.name, got, err, tc.want)
		}
	}
	if !alive(l1) || !alive(l2) {
		t.Fatal("a lease was revoked although the key did not match")
	}
	if got, err := w.revokeIfSame(ctx, cur); got != noticeRevoked || err != nil {
		t.Fatalf("same key: revokeIfSame = %s, %v; want revoked", got, err)
	}
	if alive(l2) {
		t.Fatal("lease of the matching key is alive")
	}
	// A second replica's revoke of the same term is a no-op.
	if got, err := w.revokeIfSame(ctx, cur); got != noticeGone || err != nil {
		t.Fatalf("second revoke = %s, %v; want already_gone", got, err)
	}
}
