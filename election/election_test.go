package election

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testPrefix = "/test/election"

// term is what a test's lead function saw of one term.
type term struct {
	l     *Leadership
	done  <-chan struct{} // the term's context's Done
	cause func() error    // context.Cause of the term's context
}

// candidate is one replica running Election.Run in the background.
type candidate struct {
	e      *Election
	terms  chan term
	cancel context.CancelFunc
	runErr chan error
}

// startCandidate runs an Election named name on cli. Its lead function
// reports each term on c.terms and holds leadership until the term's context
// ends, or returns at once if holdUntilLost is false. Run is stopped and
// waited for when the test ends.
func startCandidate(t *testing.T, cli *clientv3.Client, name string, holdUntilLost bool) *candidate {
	t.Helper()
	cfg := Config{
		Name: name, Prefix: testPrefix,
		TTL: 2 * time.Second, RetryInterval: 100 * time.Millisecond, OpTimeout: time.Second,
	}
	e, err := New(cfg, cli, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{e: e, terms: make(chan term, 16), cancel: cancel, runErr: make(chan error, 1)}
	go func() {
		c.runErr <- e.Run(ctx, func(ctx context.Context, l *Leadership) error {
			select {
			case c.terms <- term{l: l, done: ctx.Done(), cause: func() error { return context.Cause(ctx) }}:
			case <-ctx.Done():
				return ctx.Err()
			}
			if !holdUntilLost {
				return errors.New("lead returns at once") // exercises the "logged, not fatal" path
			}
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	t.Cleanup(func() { c.stop(t) })
	return c
}

// stop cancels Run and waits for it; it may be called more than once.
func (c *candidate) stop(t *testing.T) {
	t.Helper()
	c.cancel()
	select {
	case err, ok := <-c.runErr:
		if !ok {
			return // stopped before
		}
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		close(c.runErr)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of cancellation")
	}
}

func (c *candidate) nextTerm(t *testing.T, within time.Duration) term {
	t.Helper()
	select {
	case tm := <-c.terms:
		return tm
	case <-time.After(within):
		t.Fatalf("%s did not become leader within %v", c.e.cfg.Name, within)
		return term{}
	}
}

func waitDone(t *testing.T, tm term, within time.Duration) {
	t.Helper()
	select {
	case <-tm.done:
	case <-time.After(within):
		t.Fatalf("term %d context not cancelled within %v", tm.l.Epoch(), within)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t *testing.T) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(tWriter{t})
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	return logrus.NewEntry(l)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestSingleCandidateLeads(t *testing.T) {
	ctx := testCtx(t)
	cli := etcdtest.Start(t).Client(t)
	c := startCandidate(t, cli, "a", true)
	tm := c.nextTerm(t, 5*time.Second)

	if !c.e.IsLeader() {
		t.Error("IsLeader = false while leading")
	}
	select {
	case <-tm.done:
		t.Fatalf("term context done while leading: %v", tm.cause())
	default:
	}
	if tm.l.Name() != "a" || !strings.HasPrefix(tm.l.Key(), testPrefix+"/") {
		t.Errorf("Name, Key = %q, %q", tm.l.Name(), tm.l.Key())
	}
	resp, err := cli.Get(ctx, tm.l.Key())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get leader key: %v, %d kvs", err, len(resp.Kvs))
	}
	if kv := resp.Kvs[0]; kv.CreateRevision != tm.l.Epoch() || string(kv.Value) != "a" {
		t.Errorf("leader key create revision %d, value %q; want %d, %q", kv.CreateRevision, kv.Value, tm.l.Epoch(), "a")
	}
}

func TestHandoverOnCancel(t *testing.T) {
	m := etcdtest.Start(t)
	a := startCandidate(t, m.Client(t), "a", true)
	b := startCandidate(t, m.Client(t), "b", true)

	var leader, follower *candidate
	var tm term
	select {
	case tm = <-a.terms:
		leader, follower = a, b
	case tm = <-b.terms:
		leader, follower = b, a
	case <-time.After(5 * time.Second):
		t.Fatal("no leader within 5s")
	}
	// The follower is queued behind the leader's key; give it time to
	// (wrongly) lead before checking it does not.
	time.Sleep(300 * time.Millisecond)
	if !leader.e.IsLeader() || follower.e.IsLeader() || len(follower.terms) != 0 {
		t.Fatalf("IsLeader: leader %v, follower %v; follower terms %d", leader.e.IsLeader(), follower.e.IsLeader(), len(follower.terms))
	}

	start := time.Now()
	leader.cancel()
	next := follower.nextTerm(t, time.Second)
	handover := time.Since(start)
	t.Logf("handover from %s to %s took %v", tm.l.Name(), next.l.Name(), handover)
	waitDone(t, tm, time.Second)
	leader.stop(t)
	if next.l.Epoch() <= tm.l.Epoch() {
		t.Errorf("epoch %d after %d", next.l.Epoch(), tm.l.Epoch())
	}
}

func TestLeaderKeyDeleted(t *testing.T) {
	ctx := testCtx(t)
	m := etcdtest.Start(t)
	raw := m.Client(t)
	a := startCandidate(t, m.Client(t), "a", true)
	first := a.nextTerm(t, 5*time.Second)
	b := startCandidate(t, m.Client(t), "b", true)
	// b's key is queued behind a's before the deletion, so b must take over.
	etcdtest.WaitFor(t, 2*time.Second, "b campaigning", func() bool {
		resp, err := raw.Get(ctx, testPrefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	})

	if _, err := raw.Delete(ctx, first.l.Key()); err != nil {
		t.Fatal(err)
	}
	waitDone(t, first, time.Second)
	if cause := first.cause(); !errors.Is(cause, ErrNotLeader) {
		t.Errorf("cause = %v, want ErrNotLeader", cause)
	}
	next := b.nextTerm(t, time.Second)
	etcdtest.WaitFor(t, time.Second, "a no longer leader", func() bool { return !a.e.IsLeader() })
	// a campaigns again with a new key, queued behind b's.
	etcdtest.WaitFor(t, 2*time.Second, "a campaigning again", func() bool {
		resp, err := raw.Get(ctx, testPrefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	})
	resp, err := raw.Get(ctx, testPrefix+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("get first key: %v", err)
	}
	if kv := resp.Kvs[0]; string(kv.Key) != next.l.Key() || kv.CreateRevision != next.l.Epoch() {
		t.Errorf("first-created key %s@%d, b's term %s@%d", kv.Key, kv.CreateRevision, next.l.Key(), next.l.Epoch())
	}
	if a.e.IsLeader() || !b.e.IsLeader() || len(a.terms) != 0 {
		t.Errorf("IsLeader a=%v b=%v, a terms %d; want only b leading", a.e.IsLeader(), b.e.IsLeader(), len(a.terms))
	}
}

func TestLeaseRevokedFencesOldLeader(t *testing.T) {
	ctx := testCtx(t)
	m := etcdtest.Start(t)
	raw := m.Client(t)
	c := startCandidate(t, m.Client(t), "a", true)
	tm := c.nextTerm(t, 5*time.Second)

	resp, err := raw.Get(ctx, tm.l.Key())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get leader key: %v", err)
	}
	if _, err := raw.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	waitDone(t, tm, time.Second)
	if cause := tm.cause(); !errors.Is(cause, ErrNotLeader) {
		t.Errorf("cause = %v, want ErrNotLeader", cause)
	}

	_, err = tm.l.Txn(ctx, nil, clientv3.OpPut("/test/fenced", "late"))
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Txn after loss: err = %v, want ErrNotLeader", err)
	}
	got, err := raw.Get(ctx, "/test/fenced")
	if err != nil || len(got.Kvs) != 0 {
		t.Fatalf("fenced put landed: %v, %v", err, got.Kvs)
	}
}

func TestFencedTxnWhileLeading(t *testing.T) {
	ctx := testCtx(t)
	m := etcdtest.Start(t)
	raw := m.Client(t)
	c := startCandidate(t, m.Client(t), "a", true)
	tm := c.nextTerm(t, 5*time.Second)

	resp, err := tm.l.Txn(ctx, nil, clientv3.OpPut("/test/k", "v1"))
	if err != nil || !resp.Succeeded || len(resp.Responses) != 1 || resp.Responses[0].GetResponsePut() == nil {
		t.Fatalf("Txn = %v, %v; want success with one put response", resp, err)
	}
	// No deadline on this ctx: Txn applies OpTimeout itself.
	resp, err = tm.l.Txn(context.Background(),
		[]clientv3.Cmp{clientv3.Compare(clientv3.Value("/test/k"), "=", "other")},
		clientv3.OpPut("/test/k", "v2"))
	if err != nil || resp.Succeeded {
		t.Fatalf("Txn with failing cmp = %v, %v; want Succeeded false, nil error", resp, err)
	}
	got, err := raw.Get(ctx, "/test/k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v1" {
		t.Fatalf("/test/k = %v, %v; want v1", got, err)
	}
	select {
	case <-tm.done:
		t.Fatalf("leadership ended by a failed caller compare: %v", tm.cause())
	default:
	}
	if !c.e.IsLeader() {
		t.Error("IsLeader = false after failed caller compare")
	}
}

func TestEpochsIncrease(t *testing.T) {
	c := startCandidate(t, etcdtest.Start(t).Client(t), "a", false)
	var last int64
	for i := range 3 {
		tm := c.nextTerm(t, 3*time.Second)
		if tm.l.Epoch() <= last {
			t.Fatalf("term %d epoch %d, previous %d", i, tm.l.Epoch(), last)
		}
		last = tm.l.Epoch()
	}
}

func TestRunReturnsAndCleansUp(t *testing.T) {
	ctx := testCtx(t)
	m := etcdtest.Start(t)
	raw := m.Client(t)
	c := startCandidate(t, m.Client(t), "a", true)
	tm := c.nextTerm(t, 5*time.Second)
	kv, err := raw.Get(ctx, tm.l.Key())
	if err != nil || len(kv.Kvs) != 1 {
		t.Fatalf("get leader key: %v", err)
	}
	lease := clientv3.LeaseID(kv.Kvs[0].Lease)

	start := time.Now()
	c.stop(t)
	t.Logf("Run returned %v after cancellation", time.Since(start))
	if d := time.Since(start); d > time.Second {
		t.Errorf("Run took %v to return", d)
	}
	if c.e.IsLeader() {
		t.Error("IsLeader = true after Run returned")
	}
	resp, err := raw.Get(ctx, testPrefix+"/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("keys left under prefix: %v, %v", err, resp.Kvs)
	}
	ttl, err := raw.TimeToLive(ctx, lease)
	if err != nil || ttl.TTL != -1 {
		t.Errorf("lease %x TTL %v, %v; want revoked (-1)", lease, ttl.TTL, err)
	}
}

func TestEtcdUnreachable(t *testing.T) {
	m := etcdtest.Start(t)
	p := startProxy(t, strings.TrimPrefix(m.ClientURL, "http://"))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{p.addr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	c := startCandidate(t, cli, "a", true) // its cleanup runs before cli's
	tm := c.nextTerm(t, 5*time.Second)

	start := time.Now()
	p.cut()
	// No keep-alive reaches etcd, so the session ends when the client's
	// view of the 2s lease runs out.
	waitDone(t, tm, 4*time.Second)
	t.Logf("leadership lost %v after etcd became unreachable: %v", time.Since(start), tm.cause())
	if !errors.Is(tm.cause(), ErrNotLeader) || c.e.IsLeader() {
		t.Errorf("cause %v, IsLeader %v; want ErrNotLeader, false", tm.cause(), c.e.IsLeader())
	}

	// Run keeps retrying against the unreachable etcd; each call is bounded
	// by OpTimeout (1s), so cancellation is honoured within about that.
	time.Sleep(1500 * time.Millisecond) // not for correctness: lands Run somewhere in its retry loop
	start = time.Now()
	c.stop(t)
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("Run took %v to return with etcd unreachable", d)
	}
}

// proxy forwards TCP connections to an etcd member until cut, which
// simulates the member becoming unreachable.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) addr() string { return p.l.Addr().String() }

func (p *proxy) accept() {
	for {
		in, err := p.l.Accept()
		if err != nil {
			return // listener closed by cut
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		// Each copy ends when cut closes both conns.
		p.wg.Go(func() { io.Copy(out, in); out.Close() })
		p.wg.Go(func() { io.Copy(in, out); in.Close() })
	}
}

// cut closes the listener and every connection and waits for the copiers.
func (p *proxy) cut() {
	p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func TestConfigValidate(t *testing.T) {
	valid := func(f func(*Config)) Config {
		c := DefaultConfig()
		c.Name, c.Prefix = "a", "/p"
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"default", valid(func(*Config) {}), ""},
		{"min ttl", valid(func(c *Config) { c.TTL, c.OpTimeout = time.Second, 999*time.Millisecond }), ""},
		{"empty name", valid(func(c *Config) { c.Name = "" }), "Name"},
		{"empty prefix", valid(func(c *Config) { c.Prefix = "" }), "Prefix"},
		{"trailing slash", valid(func(c *Config) { c.Prefix = "/p/" }), "slash"},
		{"ttl below 1s", valid(func(c *Config) { c.TTL, c.OpTimeout = 999*time.Millisecond, 100*time.Millisecond }), "TTL"},
		{"zero retry", valid(func(c *Config) { c.RetryInterval = 0 }), "RetryInterval"},
		{"negative op timeout", valid(func(c *Config) { c.OpTimeout = -time.Second }), "OpTimeout"},
		{"op timeout equals ttl", valid(func(c *Config) { c.OpTimeout = c.TTL }), "below TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewDefaultsAndRounding(t *testing.T) {
	cli := &clientv3.Client{} // New makes no calls
	e, err := New(Config{Name: "a", Prefix: "/p"}, cli, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := DefaultConfig(); e.cfg.TTL != d.TTL || e.cfg.RetryInterval != d.RetryInterval || e.cfg.OpTimeout != d.OpTimeout {
		t.Errorf("defaults not applied: %+v", e.cfg)
	}
	if _, err := New(Config{Name: "a", Prefix: "/p", TTL: time.Second}, cli, nil); err == nil {
		t.Error("New accepted the default OpTimeout 2s with TTL 1s")
	}
	if _, err := New(Config{Name: "a", Prefix: "/p"}, nil, nil); err == nil {
		t.Error("New accepted a nil client")
	}
	for ttl, want := range map[time.Duration]int{time.Second: 1, 1500 * time.Millisecond: 2, 3 * time.Second: 3} {
		if got := (Config{TTL: ttl}).ttlSeconds(); got != want {
			t.Errorf("ttlSeconds(%v) = %d, want %d", ttl, got, want)
		}
	}
}

// TestStepDownBacksOff: a leader that steps down resigns at once, a
// follower takes over, and the stepped-down replica does not campaign for
// its back-off even when the follower's term ends.
func TestStepDownBacksOff(t *testing.T) {
	m := etcdtest.Start(t)
	const backoff = 1500 * time.Millisecond
	cfg := Config{Name: "a", Prefix: testPrefix, TTL: 2 * time.Second, RetryInterval: 100 * time.Millisecond, OpTimeout: time.Second}
	e, err := New(cfg, m.Client(t), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	terms := make(chan *Leadership, 4)
	runErr := make(chan error, 1)
	n := 0 // terms so far; only Run's goroutine touches it
	go func() {
		runErr <- e.Run(ctx, func(ctx context.Context, l *Leadership) error {
			if n++; n == 1 {
				l.StepDown(backoff)
			}
			terms <- l
			<-ctx.Done()
			return nil
		})
	}()
	defer func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var first *Leadership
	select {
	case first = <-terms:
	case <-time.After(5 * time.Second):
		t.Fatal("a did not lead")
	}
	steppedDown := time.Now()
	b := startCandidate(t, m.Client(t), "b", true)
	tb := b.nextTerm(t, time.Second)
	if took := time.Since(steppedDown); took > time.Second {
		t.Errorf("b led %v after a stepped down; want a resign, not a lease expiry", took)
	}
	if e.IsLeader() {
		t.Error("a reports leading after stepping down")
	}
	// b leaves at once; a must still stay out until its back-off ends.
	b.stop(t)
	waitDone(t, tb, time.Second)
	select {
	case l := <-terms:
		if at := time.Since(steppedDown); at < backoff {
			t.Errorf("a led again %v after stepping down; want >= %v", at, backoff)
		}
		if l.Epoch() <= first.Epoch() {
			t.Errorf("epoch %d after %d", l.Epoch(), first.Epoch())
		}
	case <-time.After(backoff + 3*time.Second):
		t.Fatal("a did not lead again after its back-off")
	}
}
