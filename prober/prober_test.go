package prober

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/tcpdispatch/tcpdispatch/election"
	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/internal/testnet"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testPrefix = "/p/"
	interval   = 100 * time.Millisecond
	// slack absorbs timer and scheduling delays in lower time bounds.
	slack = 30 * time.Millisecond
)

// testConfig probes fast and never refreshes during a test. The heartbeat
// is off, so that a steady state shows as no write at all;
// TestProberHeartbeat covers it.
func testConfig() Config {
	return Config{Interval: interval, Timeout: 50 * time.Millisecond, Rise: 2, Fall: 2, RefreshInterval: time.Hour,
		HeartbeatInterval: -1}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"defaults", func(*Config) {}, true},
		{"zero interval", func(c *Config) { c.Interval = 0 }, false},
		{"zero timeout", func(c *Config) { c.Timeout = 0 }, false},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, false},
		{"timeout equal to interval", func(c *Config) { c.Timeout = c.Interval }, false},
		{"timeout above interval", func(c *Config) { c.Timeout = 2 * c.Interval }, false},
		{"rise 0", func(c *Config) { c.Rise = 0 }, false},
		{"fall 0", func(c *Config) { c.Fall = 0 }, false},
		{"rise and fall 1", func(c *Config) { c.Rise, c.Fall = 1, 1 }, true},
		{"concurrency 0", func(c *Config) { c.Concurrency = 0 }, false},
		{"batch 0", func(c *Config) { c.BatchSize = 0 }, false},
		{"batch 126", func(c *Config) { c.BatchSize = 126 }, true},
		{"batch 127", func(c *Config) { c.BatchSize = 127 }, false},
		{"refresh below interval", func(c *Config) { c.RefreshInterval = c.Interval / 2 }, false},
		{"refresh equal to interval", func(c *Config) { c.RefreshInterval = c.Interval }, true},
		{"zero op timeout", func(c *Config) { c.OpTimeout = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v; want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestNew(t *testing.T) {
	keys, _ := keyspace.New(testPrefix)
	p, err := New(Config{}, keys, nil, nil, nil)
	if err != nil {
		t.Fatalf("New(zero config): %v", err)
	}
	if p.cfg.Interval != DefaultConfig().Interval || p.cfg.Now == nil || p.dialer.Timeout != DefaultConfig().Timeout {
		t.Errorf("zero config did not take the defaults: %+v", p.cfg)
	}
	if _, err := New(Config{Interval: time.Second, Timeout: 2 * time.Second}, keys, nil, nil, nil); err == nil {
		t.Error("New accepted a timeout above the interval")
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, keys, nil, nil, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{}, keys, nil, nil, reg); err == nil {
		t.Error("a second prober registered the same metrics without an error")
	}
}

// fencedWriter is a Writer fenced like election.Leadership, on a key the
// test creates: its Txn commits only while that key exists with its
// original create revision.
type fencedWriter struct {
	t     testing.TB
	cli   *clientv3.Client
	key   string
	epoch int64
	name  string

	mu   sync.Mutex
	txns int
}

var _ Writer = (*fencedWriter)(nil)

func newFencedWriter(t testing.TB, cli *clientv3.Client, name string) *fencedWriter {
	t.Helper()
	key := "/fence/" + name
	rev := etcdtest.Put(t, cli, key, name)
	return &fencedWriter{t: t, cli: cli, key: key, epoch: rev, name: name}
}

func (w *fencedWriter) Txn(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	if len(cmps) != 0 {
		w.t.Errorf("unexpected caller compares in Txn: %v", cmps)
	}
	if _, ok := ctx.Deadline(); !ok {
		w.t.Errorf("Txn called without a deadline")
	}
	fence := clientv3.Compare(clientv3.CreateRevision(w.key), "=", w.epoch)
	resp, err := w.cli.Txn(ctx).If(append([]clientv3.Cmp{fence}, cmps...)...).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, election.ErrNotLeader
	}
	w.mu.Lock()
	w.txns++
	w.mu.Unlock()
	return resp, nil
}

func (w *fencedWriter) Epoch() int64 { return w.epoch }
func (w *fencedWriter) Name() string { return w.name }

func (w *fencedWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.txns
}

// currentRev returns etcd's current revision.
func currentRev(t testing.TB, cli *clientv3.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// getHealth reads the health record of id; ok is false when there is none.
func getHealth(t testing.TB, cli *clientv3.Client, keys keyspace.Layout, id string) (h store.Health, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, keys.Health(id))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return h, false
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &h); err != nil {
		t.Fatalf("health record of %s: %v", id, err)
	}
	return h, true
}

func healthJSON(t testing.TB, h store.Health) string {
	t.Helper()
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitHealth waits until id's record satisfies cond and returns it.
func waitHealth(t testing.TB, cli *clientv3.Client, keys keyspace.Layout, id, what string, cond func(h store.Health, ok bool) bool) store.Health {
	t.Helper()
	var h store.Health
	etcdtest.WaitFor(t, 10*time.Second, "health of "+id+": "+what, func() bool {
		var ok bool
		h, ok = getHealth(t, cli, keys, id)
		return cond(h, ok)
	})
	return h
}

// server is a real TCP listener that accepts and closes connections.
type server struct {
	addr string
	ln   net.Listener
	wg   sync.WaitGroup
}

// listen starts a server on a free loopback port, or on addr if not empty.
func listen(t testing.TB, addr string) *server {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &server{addr: ln.Addr().String(), ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *server) close() {
	s.ln.Close()
	s.wg.Wait()
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t testing.TB) string { return testnet.DeadAddr(t) }

// env is one prober test's etcd, key layout and watcher.
type env struct {
	cli  *clientv3.Client
	keys keyspace.Layout
	w    *store.Watcher
}

func newEnv(t *testing.T) *env {
	t.Helper()
	m := etcdtest.Start(t)
	cli := m.Client(t)
	keys, err := keyspace.New(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	w, err := store.NewWatcher(store.Config{Prefix: testPrefix, ProgressInterval: 100 * time.Millisecond, StaleAfter: time.Second}, cli, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, "watcher", w.Run)
	return &env{cli: cli, keys: keys, w: w}
}

// register writes id's addr.
func (e *env) register(t testing.TB, id, addr string) int64 {
	return etcdtest.Put(t, e.cli, e.keys.ServerField(id, keyspace.FieldAddr), addr)
}

// waitSnapshot waits until the watcher has applied revision rev.
func (e *env) waitSnapshot(t testing.TB, rev int64) *store.Snapshot {
	t.Helper()
	var s *store.Snapshot
	etcdtest.WaitFor(t, 10*time.Second, "the watcher to apply the test's writes", func() bool {
		s = e.w.Snapshot()
		return s != nil && s.Revision >= rev
	})
	return s
}

// runInBackground runs fn until the returned stop is called or the test
// ends; stop waits for fn and returns its error. done is closed when fn has
// returned, after which stop returns at once.
func runInBackground(t testing.TB, what string, fn func(context.Context) error) (stop func() error, done <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	var err error
	go func() {
		defer close(finished)
		err = fn(ctx)
	}()
	stop = func() error {
		cancel()
		select {
		case <-finished:
			return err
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not return within 10s of cancellation", what)
			return nil
		}
	}
	t.Cleanup(func() { stop() })
	return stop, finished
}

func newTestProber(t testing.TB, cfg Config, keys keyspace.Layout, snaps Snapshots) (*Prober, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := New(cfg, keys, snaps, nil, reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p, reg
}

// waitRounds waits until the prober completed n more rounds.
func waitRounds(t testing.TB, p *Prober, n int) {
	t.Helper()
	start := testutil.ToFloat64(p.metrics.rounds)
	etcdtest.WaitFor(t, 10*time.Second, "probe rounds", func() bool {
		return testutil.ToFloat64(p.metrics.rounds) >= start+float64(n)
	})
}

// TestProberLifecycle follows one server through up, down, up and removal,
// and checks that steady state costs no etcd writes.
func TestProberLifecycle(t *testing.T) {
	e := newEnv(t)
	srv := listen(t, "")
	dead := deadAddr(t)
	e.register(t, "a", srv.addr)
	e.waitSnapshot(t, e.register(t, "b", dead))

	cfg := testConfig()
	cfg.Fall = 3
	p, _ := newTestProber(t, cfg, e.keys, e.w)
	wr := newFencedWriter(t, e.cli, "leader-1")
	stop, _ := runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })

	// A new server takes the verdict of its first probe.
	a := waitHealth(t, e.cli, e.keys, "a", "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })
	if a.Addr != srv.addr || a.Epoch != wr.epoch || a.Leader != "leader-1" || a.Reason != "" ||
		a.Since.IsZero() || a.CheckedAt.Before(a.Since) {
		t.Errorf("record of a = %+v; want addr %s, epoch %d, leader leader-1, no reason, since set", a, srv.addr, wr.epoch)
	}
	b := waitHealth(t, e.cli, e.keys, "b", "down", func(h store.Health, ok bool) bool { return ok })
	if b.Healthy || b.Addr != dead || b.Reason == "" || b.Epoch != wr.epoch {
		t.Errorf("record of b = %+v; want down at %s with a reason", b, dead)
	}

	t.Run("no write per probe", func(t *testing.T) {
		// Wait until the watcher shows both verdicts, so the prober sees
		// them as recorded, then let rounds pass without a transition.
		etcdtest.WaitFor(t, 10*time.Second, "the snapshot to hold both verdicts", func() bool {
			s := e.w.Snapshot()
			return s.Lookup("a").State == "up" && s.Lookup("b").State == "down"
		})
		waitRounds(t, p, 1)
		rev, txns := currentRev(t, e.cli), wr.count()
		waitRounds(t, p, 6)
		if got := currentRev(t, e.cli); got != rev {
			t.Errorf("etcd revision went from %d to %d over 6 steady rounds; want no write", rev, got)
		}
		if got := wr.count(); got != txns {
			t.Errorf("%d transactions over 6 steady rounds; want none", got-txns)
		}
		if got := testutil.ToFloat64(p.metrics.failures); got < 6 {
			t.Errorf("failures = %v; want b's failed probes counted", got)
		}
	})

	t.Run("down after fall failures", func(t *testing.T) {
		closed := time.Now()
		srv.close()
		h := waitHealth(t, e.cli, e.keys, "a", "down", func(h store.Health, ok bool) bool { return ok && !h.Healthy })
		if min := time.Duration(cfg.Fall-1)*interval - slack; h.CheckedAt.Sub(closed) < min {
			t.Errorf("a went down %v after its listener closed; want >= %v (fall = %d)", h.CheckedAt.Sub(closed), min, cfg.Fall)
		}
		if !h.Since.Equal(h.CheckedAt) || h.Reason == "" || h.Addr != srv.addr {
			t.Errorf("transition record = %+v; want since == checked_at, a reason and addr %s", h, srv.addr)
		}
	})

	t.Run("up after rise successes", func(t *testing.T) {
		reopened := time.Now()
		listen(t, srv.addr)
		h := waitHealth(t, e.cli, e.keys, "a", "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })
		if min := time.Duration(cfg.Rise-1)*interval - slack; h.CheckedAt.Sub(reopened) < min {
			t.Errorf("a came up %v after its listener reopened; want >= %v (rise = %d)", h.CheckedAt.Sub(reopened), min, cfg.Rise)
		}
		if h.Reason != "" {
			t.Errorf("up record has reason %q", h.Reason)
		}
	})

	t.Run("removed server loses its record", func(t *testing.T) {
		etcdtest.Delete(t, e.cli, e.keys.Server("b"), clientv3.WithPrefix())
		waitHealth(t, e.cli, e.keys, "b", "deleted", func(_ store.Health, ok bool) bool { return !ok })
		if _, ok := getHealth(t, e.cli, e.keys, "a"); !ok {
			t.Error("record of a deleted with b's")
		}
	})

	t.Run("new address starts without a verdict", func(t *testing.T) {
		other := listen(t, "")
		e.register(t, "a", other.addr)
		h := waitHealth(t, e.cli, e.keys, "a", "record for the new addr", func(h store.Health, ok bool) bool {
			return ok && h.Addr == other.addr
		})
		if !h.Healthy {
			t.Errorf("record for the new addr = %+v; want healthy at once (first probe decides)", h)
		}
	})

	if err := stop(); err != nil {
		t.Fatalf("Run returned %v on cancellation; want nil", err)
	}
}

// TestProberSeedsFromEtcd starts a prober as a new leader would, with
// records a previous leader wrote: verdicts carry over (the term's first
// round stamps them with its epoch), so a dead server marked up needs fall
// failures.
func TestProberSeedsFromEtcd(t *testing.T) {
	e := newEnv(t)
	live := listen(t, "")
	dead := deadAddr(t)
	since := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	old := store.Health{Healthy: true, Since: since, CheckedAt: since, Epoch: 1, Leader: "old-leader"}
	e.register(t, "dead", dead)
	e.register(t, "live", live.addr)
	old.Addr = dead
	etcdtest.Put(t, e.cli, e.keys.Health("dead"), healthJSON(t, old))
	old.Addr = live.addr
	rev := etcdtest.Put(t, e.cli, e.keys.Health("live"), healthJSON(t, old))
	s := e.waitSnapshot(t, rev)
	if s.Lookup("dead").State != "up" || s.Lookup("live").State != "up" {
		t.Fatalf("snapshot does not hold the old verdicts: %+v", s.Servers)
	}

	// Every write from now on shows in this watch.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	wch := e.cli.Watch(wctx, e.keys.HealthPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))

	cfg := testConfig()
	cfg.Fall = 4
	p, _ := newTestProber(t, cfg, e.keys, e.w)
	wr := newFencedWriter(t, e.cli, "leader-2")
	started := time.Now()
	stop, _ := runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })

	// The term's first round stamps every record with the new epoch but
	// keeps the old verdicts and their since; dead goes down only after
	// fall failures.
	var down *store.Health
	stamped := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for down == nil {
		var resp clientv3.WatchResponse
		select {
		case resp = <-wch:
		case <-deadline:
			t.Fatal("dead did not go down within 10s")
		}
		if err := resp.Err(); err != nil {
			t.Fatalf("watch: %v", err)
		}
		for _, ev := range resp.Events {
			var h store.Health
			if err := json.Unmarshal(ev.Kv.Value, &h); err != nil {
				t.Fatal(err)
			}
			if h.Epoch != wr.epoch || h.Leader != "leader-2" {
				t.Errorf("record written with epoch %d by %q; want %d by leader-2", h.Epoch, h.Leader, wr.epoch)
			}
			id := strings.TrimPrefix(string(ev.Kv.Key), e.keys.HealthPrefix())
			if !h.Healthy {
				if id != "dead" {
					t.Fatalf("%s went down; want only dead to", id)
				}
				down = &h
				break
			}
			if !h.Since.Equal(since) {
				t.Errorf("takeover record of %s = %+v; want the old since %v kept", id, h, since)
			}
			stamped[id] = true
		}
	}
	if !stamped["dead"] || !stamped["live"] {
		t.Errorf("takeover stamped %v; want both records rewritten with the new epoch", stamped)
	}
	if min := time.Duration(cfg.Fall-1)*interval - slack; down.CheckedAt.Sub(started) < min {
		t.Errorf("dead went down %v after the prober started; want >= %v: the old verdict must need fall = %d failures",
			down.CheckedAt.Sub(started), min, cfg.Fall)
	}
	stop()
}

// TestProberNotLeader checks that a failed fence ends Run with
// ErrNotLeader.
func TestProberNotLeader(t *testing.T) {
	e := newEnv(t)
	srv := listen(t, "")
	e.waitSnapshot(t, e.register(t, "a", srv.addr))
	wr := newFencedWriter(t, e.cli, "deposed")
	etcdtest.Delete(t, e.cli, wr.key) // the term is over before the first write

	p, _ := newTestProber(t, testConfig(), e.keys, e.w)
	stop, done := runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its fence failed")
	}
	if err := stop(); !errors.Is(err, election.ErrNotLeader) {
		t.Fatalf("Run = %v; want ErrNotLeader", err)
	}
	if _, ok := getHealth(t, e.cli, e.keys, "a"); ok {
		t.Error("a health record was written without leadership")
	}
}

// TestProberBatchesAndRefreshes checks that many records are split into
// transactions of at most BatchSize writes, and that records are rewritten
// every RefreshInterval without a transition.
func TestProberBatchesAndRefreshes(t *testing.T) {
	e := newEnv(t)
	srv := listen(t, "")
	ids := []string{"s1", "s2", "s3", "s4", "s5"}
	var rev int64
	for _, id := range ids {
		rev = e.register(t, id, srv.addr)
	}
	e.waitSnapshot(t, rev)

	cfg := testConfig()
	cfg.BatchSize = 2
	cfg.RefreshInterval = 5 * interval
	p, _ := newTestProber(t, cfg, e.keys, e.w)
	wr := newFencedWriter(t, e.cli, "leader")
	stop, _ := runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })

	first := make(map[string]store.Health)
	for _, id := range ids {
		first[id] = waitHealth(t, e.cli, e.keys, id, "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })
	}
	if txns := testutil.ToFloat64(p.metrics.txns); txns < 3 {
		t.Errorf("5 records written in %v transactions; want >= 3 with batch size 2", txns)
	}
	for _, id := range ids {
		h := waitHealth(t, e.cli, e.keys, id, "refreshed", func(h store.Health, ok bool) bool {
			return ok && h.CheckedAt.After(first[id].CheckedAt)
		})
		if d := h.CheckedAt.Sub(first[id].CheckedAt); !h.Healthy || !h.Since.Equal(first[id].Since) || d < cfg.RefreshInterval-slack {
			t.Errorf("refresh of %s = %+v, %v after the first write; want healthy, the same since, >= %v later",
				id, h, d, cfg.RefreshInterval)
		}
	}
	stop()
}

// TestProberWithElection runs the prober as the lead function of a real
// election: records carry the term's epoch, which the watcher reports as
// the leader epoch, and the leader's name.
func TestProberWithElection(t *testing.T) {
	e := newEnv(t)
	srv := listen(t, "")
	e.waitSnapshot(t, e.register(t, "a", srv.addr))

	el, err := election.New(election.Config{Name: "replica-1", Prefix: e.keys.Election(), TTL: time.Second,
		RetryInterval: 100 * time.Millisecond, OpTimeout: 500 * time.Millisecond}, e.cli, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := newTestProber(t, testConfig(), e.keys, e.w)
	stop, _ := runInBackground(t, "election", func(ctx context.Context) error {
		return el.Run(ctx, func(ctx context.Context, l *election.Leadership) error { return p.Run(ctx, l) })
	})

	h := waitHealth(t, e.cli, e.keys, "a", "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })
	s := e.w.Snapshot()
	etcdtest.WaitFor(t, 5*time.Second, "the watcher to see the leader", func() bool {
		s = e.w.Snapshot()
		return s.Leader != ""
	})
	if h.Leader != "replica-1" || s.Leader != "replica-1" || h.Epoch != s.LeaderEpoch || h.Epoch == 0 {
		t.Errorf("record epoch %d by %q; snapshot leader %q epoch %d; want the same term", h.Epoch, h.Leader, s.Leader, s.LeaderEpoch)
	}
	if !el.IsLeader() {
		t.Error("IsLeader() = false while leading")
	}
	if err := stop(); err != nil {
		t.Fatalf("election Run = %v", err)
	}
}

// TestFlushLargestValidBatch commits one batch of the largest size Validate
// accepts, mixing record puts with guarded orphan deletes (nested
// transactions), through a real election's fenced Txn on a real etcd with
// its default --max-txn-ops: a size that validates never fails there.
func TestFlushLargestValidBatch(t *testing.T) {
	e := newEnv(t)
	largest := 0
	for b := 1; b <= 1024; b++ {
		c := DefaultConfig()
		c.BatchSize = b
		if c.Validate() == nil {
			largest = b
		}
	}
	if largest == 0 {
		t.Fatal("Validate accepts no batch size")
	}
	cfg := testConfig()
	cfg.BatchSize = largest
	var rev int64
	for i := range 3 {
		rev = etcdtest.Put(t, e.cli, e.keys.Health(fmt.Sprintf("orphan%d", i)), `{"addr":"127.0.0.1:1"}`)
	}
	snap := e.waitSnapshot(t, rev)
	if len(snap.OrphanHealth()) != 3 {
		t.Fatalf("orphans = %v; want 3", snap.OrphanHealth())
	}
	// One batch: largest-1 puts and the first orphan delete.
	pending := make(map[string]store.Health)
	for i := range largest - 1 {
		pending[fmt.Sprintf("s%03d", i)] = store.Health{Addr: "127.0.0.1:1"}
	}
	p, _ := newTestProber(t, cfg, e.keys, e.w)
	el, err := election.New(election.Config{Name: "replica-1", Prefix: e.keys.Election(), TTL: time.Second,
		RetryInterval: 100 * time.Millisecond, OpTimeout: 500 * time.Millisecond}, e.cli, nil)
	if err != nil {
		t.Fatal(err)
	}
	flushed := make(chan error, 1)
	stop, _ := runInBackground(t, "election", func(ctx context.Context) error {
		return el.Run(ctx, func(ctx context.Context, l *election.Leadership) error {
			flushed <- p.flush(ctx, l, snap, pending)
			<-ctx.Done()
			return nil
		})
	})
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatalf("flush of a batch of %d (the largest valid size) = %v", largest, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no leadership within 10s")
	}
	if len(pending) != 0 {
		t.Errorf("%d records left unwritten", len(pending))
	}
	if _, ok := getHealth(t, e.cli, e.keys, "orphan0"); ok {
		t.Error("orphan0's record survived its delete")
	}
	stop()
}
