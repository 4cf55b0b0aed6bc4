package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// testTimeout bounds each test that talks to etcd.
const testTimeout = 30 * time.Second

// runWatcher runs w.Run in the background; the returned stop cancels it and
// waits for Run to return (also done when the test ends).
func runWatcher(t testing.TB, w *Watcher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v; want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancellation")
		}
	}
	t.Cleanup(stop)
	return stop
}

func newTestWatcher(t testing.TB, cli *clientv3.Client, cfg Config, reg prometheus.Registerer) *Watcher {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = testPrefix
	}
	w, err := NewWatcher(cfg, cli, nil, reg)
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}
	return w
}

// waitRev waits until w publishes a snapshot at revision rev or later.
func waitRev(t testing.TB, w *Watcher, rev int64) *Snapshot {
	t.Helper()
	var s *Snapshot
	etcdtest.WaitFor(t, 10*time.Second, "a snapshot at revision "+itoa(rev), func() bool {
		s = w.Snapshot()
		return s != nil && s.Revision >= rev
	})
	return s
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"defaults", func(*Config) {}, true},
		{"zero progress interval", func(c *Config) { c.ProgressInterval = 0 }, false},
		{"stale equal to progress", func(c *Config) { c.StaleAfter = c.ProgressInterval }, false},
		{"stale below progress", func(c *Config) { c.StaleAfter = c.ProgressInterval / 2 }, false},
		{"zero op timeout", func(c *Config) { c.OpTimeout = 0 }, false},
		{"zero min backoff", func(c *Config) { c.MinBackoff = 0 }, false},
		{"max below min backoff", func(c *Config) { c.MaxBackoff = c.MinBackoff / 2 }, false},
		{"min equal to max backoff", func(c *Config) { c.MaxBackoff = c.MinBackoff }, true},
		{"relative prefix", func(c *Config) { c.Prefix = "tcpdispatch/" }, false},
		{"prefix without trailing slash", func(c *Config) { c.Prefix = "/x" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mutate(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v; want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestNewWatcher(t *testing.T) {
	// Zero fields take defaults; NewWatcher makes no etcd call, so no
	// client is needed here.
	w, err := NewWatcher(Config{}, nil, nil, nil)
	if err != nil {
		t.Fatalf("NewWatcher(zero config): %v", err)
	}
	if w.Keys().Prefix() != keyspace.DefaultPrefix {
		t.Errorf("prefix = %q; want %q", w.Keys().Prefix(), keyspace.DefaultPrefix)
	}
	if w.Snapshot() != nil || w.Age() != -1 || w.Reachable() || w.Sync() != (Sync{}) {
		t.Errorf("new watcher: snapshot %v age %v reachable %v sync %+v; want none, -1, false, zero",
			w.Snapshot(), w.Age(), w.Reachable(), w.Sync())
	}
	if _, err := NewWatcher(Config{ProgressInterval: time.Second, StaleAfter: time.Second}, nil, nil, nil); err == nil {
		t.Errorf("NewWatcher accepted StaleAfter == ProgressInterval")
	}
	reg := prometheus.NewRegistry()
	if _, err := NewWatcher(Config{}, nil, nil, reg); err != nil {
		t.Fatalf("NewWatcher with a registry: %v", err)
	}
	if _, err := NewWatcher(Config{}, nil, nil, reg); err == nil {
		t.Errorf("a second watcher registered the same metrics without an error")
	}
}

func TestWatcherPublish(t *testing.T) {
	w := newTestWatcher(t, nil, Config{}, nil)
	s := mustBuild(t, newTestModel(t))
	ch := w.Changed()
	if !w.Publish(s) {
		t.Fatal("Publish on an empty watcher = false")
	}
	select {
	case <-ch:
	default:
		t.Fatal("Changed channel not closed by Publish")
	}
	if w.Publish(mustBuild(t, newTestModel(t))) {
		t.Fatal("Publish replaced an existing snapshot")
	}
	if w.Snapshot() != s {
		t.Fatal("Snapshot() is not the published snapshot")
	}
}

// TestWatcherFollowsChanges runs a watcher against a real etcd and checks
// that puts, bad values and deletes show in its snapshots.
func TestWatcherFollowsChanges(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	k, _ := keyspace.New(testPrefix)
	up := func(addr string) string { return healthJSON(t, Health{Addr: addr, Healthy: true}) }

	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldAddr), "127.0.0.1:1001")
	etcdtest.Put(t, cli, k.Health("a"), up("127.0.0.1:1001"))
	// Outside the prefix: ignored, but the listing is at its revision.
	rev := etcdtest.Put(t, cli, "/elsewhere/servers/x/addr", "127.0.0.1:9")

	reg := prometheus.NewRegistry()
	w := newTestWatcher(t, cli, Config{ProgressInterval: 100 * time.Millisecond, StaleAfter: time.Second}, reg)
	changed := w.Changed()
	runWatcher(t, w)

	s := waitRev(t, w, rev)
	select {
	case <-changed:
	default:
		t.Error("Changed not closed after the first snapshot")
	}
	if got := ids(s); len(got) != 1 || got[0] != "a" {
		t.Fatalf("servers = %v; want [a]", got)
	}
	checkServer(t, s, "a", srvWant{addr: "127.0.0.1:1001", weight: keyspace.DefaultWeight, state: "up", eligible: true})
	if s.Revision != rev || w.Sync().Revision < rev {
		t.Errorf("snapshot revision %d, sync %+v; want %d", s.Revision, w.Sync(), rev)
	}
	if lists := testutil.ToFloat64(w.metrics.lists); lists != 1 {
		t.Errorf("lists = %v; want 1", lists)
	}

	steps := []struct {
		name  string
		do    func() int64
		check func(t *testing.T, s *Snapshot)
	}{
		{
			name: "new server",
			do: func() int64 {
				etcdtest.Put(t, cli, k.ServerField("b", keyspace.FieldAddr), "127.0.0.1:1002")
				etcdtest.Put(t, cli, k.ServerField("b", keyspace.FieldWeight), "3")
				return etcdtest.Put(t, cli, k.Health("b"), up("127.0.0.1:1002"))
			},
			check: func(t *testing.T, s *Snapshot) {
				checkServer(t, s, "b", srvWant{addr: "127.0.0.1:1002", weight: 3, state: "up", eligible: true})
				if s.Eligible() != 2 {
					t.Errorf("Eligible = %d; want 2", s.Eligible())
				}
			},
		},
		{
			name: "garbage weight is reported and counted, the good one kept",
			do:   func() int64 { return etcdtest.Put(t, cli, k.ServerField("b", keyspace.FieldWeight), "lots") },
			check: func(t *testing.T, s *Snapshot) {
				checkServer(t, s, "b", srvWant{addr: "127.0.0.1:1002", weight: 3, state: "up", eligible: true,
					errs: []string{`weight "lots"`}})
				if n := testutil.ToFloat64(w.metrics.invalid); n != 1 {
					t.Errorf("invalid values counter = %v; want 1", n)
				}
			},
		},
		{
			name: "strategy",
			do:   func() int64 { return etcdtest.Put(t, cli, k.Strategy(), "hash") },
			check: func(t *testing.T, s *Snapshot) {
				if s.Strategy != balancer.Hash {
					t.Errorf("Strategy = %q; want hash", s.Strategy)
				}
			},
		},
		{
			name: "garbage strategy",
			do:   func() int64 { return etcdtest.Put(t, cli, k.Strategy(), "fastest") },
			check: func(t *testing.T, s *Snapshot) {
				if s.Strategy != balancer.Hash || len(s.Problems) != 1 {
					t.Errorf("Strategy = %q, problems %q; want hash and one problem", s.Strategy, s.Problems)
				}
				if n := testutil.ToFloat64(w.metrics.invalid); n != 2 {
					t.Errorf("invalid values counter = %v; want 2", n)
				}
			},
		},
		{
			name: "delete of the server prefix removes it and orphans its health",
			do:   func() int64 { return etcdtest.Delete(t, cli, k.Server("b"), clientv3.WithPrefix()) },
			check: func(t *testing.T, s *Snapshot) {
				if s.Lookup("b") != nil {
					t.Errorf("server b still listed after its keys were deleted")
				}
				if got := s.OrphanHealth(); len(got) != 1 || got[0] != "b" {
					t.Errorf("OrphanHealth = %v; want [b]", got)
				}
			},
		},
		{
			name: "health delete",
			do:   func() int64 { return etcdtest.Delete(t, cli, k.Health("b")) },
			check: func(t *testing.T, s *Snapshot) {
				if len(s.OrphanHealth()) != 0 {
					t.Errorf("OrphanHealth = %v; want none", s.OrphanHealth())
				}
				if got := ids(s); len(got) != 1 || got[0] != "a" {
					t.Errorf("servers = %v; want [a]", got)
				}
			},
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			rev := st.do()
			s := waitRev(t, w, rev)
			if s.Revision != rev {
				t.Errorf("snapshot revision = %d; want exactly %d", s.Revision, rev)
			}
			st.check(t, s)
		})
	}
	if n := testutil.ToFloat64(w.metrics.revision); int64(n) != w.Snapshot().Revision {
		t.Errorf("revision gauge = %v; want %d", n, w.Snapshot().Revision)
	}
	if lists := testutil.ToFloat64(w.metrics.lists); lists != 1 {
		t.Errorf("lists = %v; want 1 (no re-list while the watch works)", lists)
	}
}

// digest returns the parts of a snapshot that must match between two
// copies of the same key space.
func digest(s *Snapshot) string {
	var b strings.Builder
	b.WriteString("strategy=" + string(s.Strategy) + " leader=" + s.Leader + "@" + itoa(s.LeaderEpoch) + "\n")
	b.WriteString("problems=" + strings.Join(s.Problems, "|") + "\n")
	b.WriteString("orphans=" + strings.Join(s.OrphanHealth(), ",") + "\n")
	for _, srv := range s.Servers {
		b.WriteString(srv.ID + " " + srv.Addr + " w=" + itoa(int64(srv.Weight)) + " " + string(srv.State) +
			" eligible=" + map[bool]string{true: "y", false: "n"}[srv.Eligible] +
			" errs=" + strings.Join(srv.Errors, "|") + "\n")
	}
	return b.String()
}

// TestWatcherResumesAfterCompaction exercises what Run does when the
// revision it would resume from was compacted: watch reports relist, and the
// re-list applied to the old model converges to what a fresh listing sees.
func TestWatcherResumesAfterCompaction(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	k, _ := keyspace.New(testPrefix)
	up := func(addr string) string { return healthJSON(t, Health{Addr: addr, Healthy: true}) }

	for id, addr := range map[string]string{"a": "127.0.0.1:1001", "b": "127.0.0.1:1002", "c": "127.0.0.1:1003"} {
		etcdtest.Put(t, cli, k.ServerField(id, keyspace.FieldAddr), addr)
		etcdtest.Put(t, cli, k.Health(id), up(addr))
	}
	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "40")

	reg := prometheus.NewRegistry()
	w := newTestWatcher(t, cli, Config{}, reg)
	old := newModel(w.keys)
	if err := w.list(ctx, old); err != nil {
		t.Fatalf("list: %v", err)
	}
	before := mustBuild(t, old)
	if before.Eligible() != 3 {
		t.Fatalf("eligible before = %d; want 3\n%s", before.Eligible(), digest(before))
	}

	// Changes the old model misses while "disconnected".
	etcdtest.Delete(t, cli, k.Server("b"), clientv3.WithPrefix())
	etcdtest.Put(t, cli, k.ServerField("c", keyspace.FieldWeight), "0")
	etcdtest.Put(t, cli, k.ServerField("d", keyspace.FieldAddr), "127.0.0.1:1004")
	etcdtest.Put(t, cli, k.Strategy(), "random")
	rev := etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "not-a-number")
	if _, err := cli.Compact(ctx, rev); err != nil {
		t.Fatalf("compact: %v", err)
	}

	relist, _, err := w.watch(ctx, old)
	if err != nil || !relist {
		t.Fatalf("watch from a compacted revision = relist %v, err %v; want true, nil", relist, err)
	}
	if n := testutil.ToFloat64(w.metrics.compactions); n != 1 {
		t.Errorf("compactions counter = %v; want 1", n)
	}
	if err := w.list(ctx, old); err != nil {
		t.Fatalf("re-list: %v", err)
	}
	relisted := mustBuild(t, old)

	fresh := newModel(w.keys)
	if err := w.list(ctx, fresh); err != nil {
		t.Fatalf("fresh list: %v", err)
	}
	freshSnap := mustBuild(t, fresh)
	if relisted.Revision != freshSnap.Revision || relisted.Revision < rev {
		t.Errorf("revisions: relisted %d, fresh %d; want equal and >= %d", relisted.Revision, freshSnap.Revision, rev)
	}

	// No designed difference any more: the history that held a's last
	// valid weight is compacted, so both count the typo as absent (see
	// resolve.go), though the old model saw weight 40.
	for name, s := range map[string]*Snapshot{"re-listed": relisted, "fresh": freshSnap} {
		t.Run(name, func(t *testing.T) {
			checkServer(t, s, "a", srvWant{addr: "127.0.0.1:1001", weight: keyspace.DefaultWeight, state: "up", eligible: true,
				errs: []string{`weight "not-a-number"`}})
			if e := s.Lookup("a").Errors; len(e) != 1 || !strings.Contains(e[0], noteCompacted) {
				t.Errorf("errors = %q; want the compaction noted", e)
			}
		})
	}
	etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "40")
	rev = etcdtest.Put(t, cli, k.Strategy(), "random") // same value, new revision
	if err := w.list(ctx, old); err != nil {
		t.Fatalf("re-list: %v", err)
	}
	fresh = newModel(w.keys)
	if err := w.list(ctx, fresh); err != nil {
		t.Fatalf("fresh list: %v", err)
	}
	got, want := digest(mustBuild(t, old)), digest(mustBuild(t, fresh))
	if got != want {
		t.Fatalf("re-listed model differs from a fresh listing:\n got: %s\nwant: %s", got, want)
	}
	if !strings.Contains(want, "strategy=random") || strings.Contains(want, "\nb ") ||
		!strings.Contains(want, "c 127.0.0.1:1003 w=0 up eligible=n") || !strings.Contains(want, "d 127.0.0.1:1004") {
		t.Errorf("unexpected converged state:\n%s", want)
	}

	// Run, started now on the same etcd, serves the same state.
	runWatcher(t, w)
	s := waitRev(t, w, rev)
	if got := digest(s); got != want {
		t.Fatalf("Run snapshot differs from a fresh listing:\n got: %s\nwant: %s", got, want)
	}
}

// TestWatcherWatchAfterCompactedRelist drives the Run loop by hand from an
// old revision, as after a broken watch: the compacted resume leads to a
// re-list, and the watch that follows is current again.
func TestWatcherWatchAfterCompactedRelist(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	k, _ := keyspace.New(testPrefix)

	rev := etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldAddr), "127.0.0.1:1001")
	reg := prometheus.NewRegistry()
	w := newTestWatcher(t, cli, Config{}, reg)
	old := newModel(w.keys)
	if err := w.list(ctx, old); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		rev = etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), itoa(int64(i)))
	}
	if _, err := cli.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}

	// Drive the Run loop by hand: watch, then list as Run does.
	relist, _, err := w.watch(ctx, old)
	if !relist || err != nil {
		t.Fatalf("watch = %v, %v; want relist", relist, err)
	}
	if err := w.list(ctx, old); err != nil {
		t.Fatal(err)
	}
	// The model is current again: a watch from here sees new events.
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var werr error
	var wrelist bool
	go func() {
		defer close(done)
		wrelist, _, werr = w.watch(wctx, old)
	}()
	rev = etcdtest.Put(t, cli, k.ServerField("a", keyspace.FieldWeight), "77")
	s := waitRev(t, w, rev)
	wcancel()
	<-done
	if wrelist || werr != nil {
		t.Errorf("watch after re-list returned %v, %v; want false, nil on cancellation", wrelist, werr)
	}
	checkServer(t, s, "a", srvWant{addr: "127.0.0.1:1001", weight: 77, state: "unknown"})
}

// proxy forwards TCP connections to a backend until closed; closing it cuts
// every connection, which is how the tests make etcd unreachable without
// stopping it (etcdtest's cleanup calls embed.Etcd.Close, which panics when
// called twice).
type proxy struct {
	t       testing.TB
	backend string
	addr    string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newProxy(t testing.TB, backend string) *proxy {
	t.Helper()
	p := &proxy{t: t, backend: backend, conns: make(map[net.Conn]bool)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.close)
	return p
}

// reopen listens again on the same address.
func (p *proxy) reopen() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("reopen proxy: %v", err)
	}
	p.serve(ln)
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", p.backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.ln != ln { // closed meanwhile
				p.mu.Unlock()
				c.Close()
				b.Close()
				return
			}
			p.conns[c], p.conns[b] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(c, b)
			go p.pipe(b, c)
		}
	}()
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// close cuts every connection and stops listening; it waits for the
// proxy's goroutines and may be called more than once.
func (p *proxy) close() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// proxiedClient returns an etcd client that reaches m through a proxy.
func proxiedClient(t testing.TB, m *etcdtest.Member) (*clientv3.Client, *proxy) {
	t.Helper()
	u, err := url.Parse(m.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, u.Host)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + p.addr},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli, p
}

// TestWatcherStaleWhenEtcdUnreachable checks that the last snapshot keeps
// being served while etcd cannot be reached, that Age and Reachable say so,
// and that the watcher catches up once etcd is back.
func TestWatcherStaleWhenEtcdUnreachable(t *testing.T) {
	m := etcdtest.Start(t)
	direct := m.Client(t)
	cli, px := proxiedClient(t, m)
	k, _ := keyspace.New(testPrefix)
	etcdtest.Put(t, direct, k.ServerField("a", keyspace.FieldAddr), "127.0.0.1:1001")
	rev := etcdtest.Put(t, direct, k.Health("a"), healthJSON(t, Health{Addr: "127.0.0.1:1001", Healthy: true}))

	const progress, stale = 100 * time.Millisecond, 500 * time.Millisecond
	w := newTestWatcher(t, cli, Config{ProgressInterval: progress, StaleAfter: stale, MaxBackoff: 200 * time.Millisecond}, nil)
	stop := runWatcher(t, w)
	snap := waitRev(t, w, rev)
	// Work around the idle-cluster bug (see TestWatcherProgressWhenIdle):
	// a write outside the prefix moves etcd's revision to the watch's
	// start revision, after which progress requests are answered.
	etcdtest.Put(t, direct, "/elsewhere", "x")

	// While etcd is up, progress notifications keep the age below
	// StaleAfter even though nothing under the prefix changes.
	etcdtest.WaitFor(t, 5*time.Second, "a progress notification", func() bool { return w.Sync().Revision > rev })
	deadline := time.Now().Add(4 * stale)
	for time.Now().Before(deadline) {
		if age := w.Age(); age < 0 || age > stale || !w.Reachable() {
			t.Fatalf("idle but healthy: Age = %v, Reachable = %v; want 0..%v, true", age, w.Reachable(), stale)
		}
		time.Sleep(20 * time.Millisecond)
	}

	px.close()
	etcdtest.WaitFor(t, 10*time.Second, "Reachable to turn false", func() bool { return !w.Reachable() })
	a1 := w.Age()
	if a1 <= stale {
		t.Errorf("unreachable with Age %v; want > %v", a1, stale)
	}
	etcdtest.WaitFor(t, 5*time.Second, "Age to grow", func() bool { return w.Age() > a1+100*time.Millisecond })
	if w.Snapshot() != snap {
		t.Fatalf("snapshot replaced while etcd was unreachable")
	}
	if p := w.Snapshot().Pick("k", nil); p == nil || p.ID != "a" {
		t.Fatalf("last snapshot no longer picks a while etcd is unreachable: %v", p)
	}

	// A change made meanwhile shows once etcd is reachable again.
	rev = etcdtest.Put(t, direct, k.ServerField("a", keyspace.FieldWeight), "5")
	px.reopen()
	s := waitRev(t, w, rev)
	checkServer(t, s, "a", srvWant{addr: "127.0.0.1:1001", weight: 5, state: "up", eligible: true})
	etcdtest.WaitFor(t, 5*time.Second, "Reachable to turn true again", w.Reachable)

	// Run returns promptly when cancelled while etcd is unreachable.
	px.close()
	etcdtest.WaitFor(t, 10*time.Second, "Reachable to turn false", func() bool { return !w.Reachable() })
	start := time.Now()
	stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %v to return after cancellation while etcd was unreachable", d)
	}
}

// TestWatcherProgressWhenIdle checks that an idle but healthy etcd keeps
// the snapshot confirmed: nothing changes after the listing, yet Age stays
// near ProgressInterval and Reachable stays true. etcd answers a progress
// request only when its current revision has reached every watcher's start
// revision (mvcc progressIfSync), which is why watch starts at m.rev.
func TestWatcherProgressWhenIdle(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	rev := etcdtest.Put(t, cli, testPrefix+"servers/a/addr", "127.0.0.1:1001")
	const progress, stale = 100 * time.Millisecond, 500 * time.Millisecond
	w := newTestWatcher(t, cli, Config{ProgressInterval: progress, StaleAfter: stale}, nil)
	runWatcher(t, w)
	waitRev(t, w, rev)
	deadline := time.Now().Add(4 * stale)
	for time.Now().Before(deadline) {
		if age := w.Age(); age < 0 || age > stale || !w.Reachable() {
			t.Fatalf("idle but healthy: Age = %v, Reachable = %v; want 0..%v, true", age, w.Reachable(), stale)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWaitSynced checks that a snapshot restored from disk does not count
// as synced, and that a live one does once it reaches the revision.
func TestWaitSynced(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	rev := etcdtest.Put(t, cli, testPrefix+"servers/a/addr", "127.0.0.1:1001")
	w := newTestWatcher(t, cli, Config{}, nil)
	restored, err := NewSnapshot(rev, "wrr", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.Restore(restored, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := w.WaitSynced(ctx, rev); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSynced on a restored snapshot = %v; want it to wait", err)
	}
	runWatcher(t, w)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := w.WaitSynced(ctx2, rev); err != nil {
		t.Fatalf("WaitSynced with a live watcher: %v", err)
	}
	if s := w.Snapshot(); s == restored || s.Lookup("a") == nil {
		t.Fatalf("snapshot after sync = %+v; want the listed one", s)
	}
}

// TestWaitSyncedRestoredAhead checks that a revision read from a saved
// snapshot never stands in for etcd's own: a file from a run against
// another (or a restored) cluster may name a revision etcd has not reached,
// and WaitSynced must still wait for etcd to reach it.
func TestWaitSyncedRestoredAhead(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	rev := etcdtest.Put(t, cli, testPrefix+"servers/a/addr", "127.0.0.1:1001")
	w := newTestWatcher(t, cli, Config{}, nil)
	const fileRev = 1_000_000
	restored, err := NewSnapshot(fileRev, "wrr", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.Restore(restored, time.Now())
	runWatcher(t, w)
	etcdtest.WaitFor(t, 10*time.Second, "the first listing", func() bool { return !w.Sync().Restored })
	if got := w.Sync().Revision; got >= fileRev {
		t.Fatalf("Sync().Revision = %d after listing etcd at %d; want etcd's revision, not the file's", got, rev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := w.WaitSynced(ctx, fileRev); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSynced(%d) with etcd at %d = %v; want it to wait", fileRev, rev, err)
	}
}

// TestWatcherCoalescesBursts checks that a burst of transactions, one
// watch response each, is published as fewer snapshots than transactions,
// that the last snapshot holds every change, and that the revision is
// confirmed only once it is published.
func TestWatcherCoalescesBursts(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	k, _ := keyspace.New(testPrefix)
	rev := etcdtest.Put(t, cli, k.ServerField("s000", keyspace.FieldAddr), "127.0.0.1:1000")

	reg := prometheus.NewRegistry()
	w := newTestWatcher(t, cli, Config{ProgressInterval: 100 * time.Millisecond, StaleAfter: time.Second}, reg)
	runWatcher(t, w)
	waitRev(t, w, rev)
	before := testutil.ToFloat64(w.metrics.builds)

	const burst = 200
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var wg sync.WaitGroup
	revs := make(chan int64, burst)
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := cli.Put(ctx, k.ServerField(fmt.Sprintf("s%03d", i+1), keyspace.FieldAddr), fmt.Sprintf("127.0.0.1:%d", 1001+i))
			if err != nil {
				t.Error(err)
				return
			}
			revs <- resp.Header.Revision
		}()
	}
	wg.Wait()
	close(revs)
	last := rev
	for r := range revs {
		last = max(last, r)
	}
	if err := w.WaitSynced(ctx, last); err != nil {
		t.Fatal(err)
	}
	if s := w.Snapshot(); len(s.Servers) != burst+1 || s.Revision < last {
		t.Fatalf("after the burst: %d servers at revision %d; want %d at %d", len(s.Servers), s.Revision, burst+1, last)
	}
	builds := testutil.ToFloat64(w.metrics.builds) - before
	t.Logf("%d transactions published in %v snapshots", burst, builds)
	if builds >= burst {
		t.Errorf("%v snapshots for %d transactions; want them coalesced", builds, burst)
	}
}
