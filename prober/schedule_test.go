package prober

import (
	"container/heap"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/store"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestProberSpreadsProbes registers one live server and 30 blackholed ones
// (connects time out), with the smallest concurrency: every server
// is still probed about once per interval (the capacity grows with the
// fleet), and the live server's death is noticed within fall intervals,
// not after rounds paced by the hanging ones.
func TestProberSpreadsProbes(t *testing.T) {
	e := newEnv(t)
	live := listen(t, "")
	black := map[string]bool{}
	var rev int64
	e.register(t, "live", live.addr)
	for i := range 30 {
		addr := blackholeAddr(t).String()
		black[addr] = true
		rev = e.register(t, "black"+string(rune('a'+i%26))+string(rune('a'+i/26)), addr)
	}
	e.waitSnapshot(t, rev)

	cfg := testConfig()
	cfg.Concurrency = 1
	p, reg := newTestProber(t, cfg, e.keys, e.w)
	var mu sync.Mutex
	probes := map[string]int{}
	p.dialer.Control = func(_, addr string, _ syscall.RawConn) error {
		mu.Lock()
		probes[addr]++
		mu.Unlock()
		return nil
	}
	wr := newFencedWriter(t, e.cli, "leader")
	runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })
	waitHealth(t, e.cli, e.keys, "live", "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })

	mu.Lock()
	clear(probes)
	mu.Unlock()
	const window = 10 * interval
	time.Sleep(window)
	mu.Lock()
	for addr := range black {
		if n := probes[addr]; n < 7 {
			t.Errorf("%s probed %d times in %v; want about once per %v interval", addr, n, window, interval)
		}
	}
	mu.Unlock()
	if c := gauge(t, reg, "tcpdispatch_prober_inflight_capacity"); c != 25 {
		t.Errorf("in-flight capacity = %v; want 1 + 1.5 × 31 × 50ms / 100ms = 25", c)
	}

	closed := time.Now()
	live.close()
	h := waitHealth(t, e.cli, e.keys, "live", "down", func(h store.Health, ok bool) bool { return ok && !h.Healthy })
	if d := h.CheckedAt.Sub(closed); d > time.Duration(cfg.Fall)*interval+cfg.Timeout+slack {
		t.Errorf("live went down %v after it closed; want within fall × interval + timeout", d)
	}
}

// TestProberHeartbeat checks that a steady leader writes its heartbeat
// once per interval and never rewrites an unchanged record, and that a
// replica's verdict age follows the heartbeat.
func TestProberHeartbeat(t *testing.T) {
	e := newEnv(t)
	srv := listen(t, "")
	e.waitSnapshot(t, e.register(t, "a", srv.addr))
	cfg := testConfig()
	cfg.HeartbeatInterval = 0 // the default: every interval
	p, _ := newTestProber(t, cfg, e.keys, e.w)
	wr := newFencedWriter(t, e.cli, "leader")
	runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })
	waitHealth(t, e.cli, e.keys, "a", "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })
	waitRounds(t, p, 2)
	recRev := modRev(t, e.cli, e.keys.Health("a"))
	beats := testutil.ToFloat64(p.metrics.heartbeats)
	waitRounds(t, p, 10)
	if got := modRev(t, e.cli, e.keys.Health("a")); got != recRev {
		t.Errorf("unchanged record rewritten (mod revision %d -> %d)", recRev, got)
	}
	if n := testutil.ToFloat64(p.metrics.heartbeats) - beats; n < 8 || n > 11 {
		t.Errorf("%v heartbeats over 10 rounds; want one per round", n)
	}
	etcdtest.WaitFor(t, 10*time.Second, "the verdict age to follow the heartbeat", func() bool {
		return e.w.OldestVerdictAge() < 3*interval
	})
	hb := e.w.Snapshot().Heartbeat()
	if hb.Epoch != wr.epoch || hb.Leader != "leader" {
		t.Errorf("heartbeat = %+v; want epoch %d by leader", hb, wr.epoch)
	}
}

// holdingServer accepts connections and holds them until closed, as a
// server of long-lived clients does; kill closes the listener and every
// connection, as the kernel does when such a process dies.
type holdingServer struct {
	addr  string
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newHoldingServer(t *testing.T) *holdingServer { return holdingServerAt(t, "127.0.0.1:0") }

// holdingServerAt is newHoldingServer listening on addr.
func holdingServerAt(t *testing.T, addr string) *holdingServer {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &holdingServer{addr: ln.Addr().String(), ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	})
	t.Cleanup(s.kill)
	return s
}

func (s *holdingServer) kill() {
	s.ln.Close()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// closeLinksFirst closes the server's connections, then, after a pause,
// its listener: a dying process whose sockets close in that order accepts
// the first notice probe.
func (s *holdingServer) closeLinksFirst(pause time.Duration) {
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	time.Sleep(pause)
	s.kill()
}

// TestProberDeathNotice checks the persistent connection: a server process
// that dies while its host stays up is down within milliseconds, long
// before the next regular probe, whichever of its sockets closes first and
// however young its link (a server killed just after it came up).
func TestProberDeathNotice(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill func(*holdingServer)
		held time.Duration // how long the link is open before the kill
	}{
		{"listener first", (*holdingServer).kill, time.Second + 100*time.Millisecond},
		{"links first, listener 3ms later", func(s *holdingServer) { s.closeLinksFirst(3 * time.Millisecond) }, time.Second + 100*time.Millisecond},
		{"a link open for 200ms", (*holdingServer).kill, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) { testDeathNotice(t, tc.kill, tc.held) })
	}
}

// linkedProber runs a prober at a 1 s interval (so that links are young
// for a while) over one holding server registered as "a".
func linkedProber(t *testing.T) (*env, *holdingServer, *Prober, *prometheus.Registry) {
	e := newEnv(t)
	srv := newHoldingServer(t)
	e.waitSnapshot(t, e.register(t, "a", srv.addr))
	cfg := testConfig()
	cfg.Interval, cfg.Timeout = time.Second, 500*time.Millisecond
	p, reg := newTestProber(t, cfg, e.keys, e.w)
	wr := newFencedWriter(t, e.cli, "leader")
	runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })
	return e, srv, p, reg
}

func testDeathNotice(t *testing.T, kill func(*holdingServer), held time.Duration) {
	e, srv, p, reg := linkedProber(t)
	waitHealth(t, e.cli, e.keys, "a", "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })
	etcdtest.WaitFor(t, 10*time.Second, "a link to a", func() bool { return gauge(t, reg, "tcpdispatch_prober_links") == 1 })
	time.Sleep(held)
	killed := time.Now()
	kill(srv)
	h := waitHealth(t, e.cli, e.keys, "a", "down", func(h store.Health, ok bool) bool { return ok && !h.Healthy })
	if d := h.CheckedAt.Sub(killed); d > 100*time.Millisecond {
		t.Errorf("a went down %v after its process died; want < 100ms (a death notice)", d)
	}
	if n := testutil.ToFloat64(p.metrics.deathNotices); n != 1 {
		t.Errorf("death notices = %v; want 1", n)
	}
}

func gauge(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var m *dto.Metric = mf.GetMetric()[0]
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func modRev(t testing.TB, cli *clientv3.Client, key string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("get %s: %v (%d keys)", key, err, len(resp.Kvs))
	}
	return resp.Kvs[0].ModRevision
}

// TestProberLinkVouches checks that an open persistent connection stands
// in for the connect probe: the server is connect-probed only once per
// Recheck, and its closed listener is still found by that recheck.
func TestProberLinkVouches(t *testing.T) {
	e := newEnv(t)
	srv := newHoldingServer(t)
	e.waitSnapshot(t, e.register(t, "a", srv.addr))
	cfg := testConfig()
	cfg.Recheck = 10 * interval
	p, reg := newTestProber(t, cfg, e.keys, e.w)
	var mu sync.Mutex
	dials := 0
	p.dialer.Control = func(string, string, syscall.RawConn) error {
		mu.Lock()
		dials++
		mu.Unlock()
		return nil
	}
	wr := newFencedWriter(t, e.cli, "leader")
	runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })
	waitHealth(t, e.cli, e.keys, "a", "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })
	etcdtest.WaitFor(t, 10*time.Second, "a link to a", func() bool { return gauge(t, reg, "tcpdispatch_prober_links") == 1 })

	mu.Lock()
	dials = 0
	mu.Unlock()
	v0 := testutil.ToFloat64(p.metrics.vouched)
	time.Sleep(30 * interval)
	mu.Lock()
	n := dials
	mu.Unlock()
	if n < 2 || n > 4 {
		t.Errorf("%d connect probes in 30 intervals with recheck = 10 intervals; want 3", n)
	}
	if v := testutil.ToFloat64(p.metrics.vouched) - v0; v < 20 {
		t.Errorf("%v intervals vouched for by the link in 30; want about 27", v)
	}

	// The listener closes, the held connection stays: the recheck finds it.
	closed := time.Now()
	srv.ln.Close()
	h := waitHealth(t, e.cli, e.keys, "a", "down", func(h store.Health, ok bool) bool { return ok && !h.Healthy })
	if d := h.CheckedAt.Sub(closed); d > cfg.Recheck+time.Duration(cfg.Fall)*interval+cfg.Timeout+slack {
		t.Errorf("a went down %v after its listener closed; want within recheck + fall intervals", d)
	}
}

// TestFirstProbeEarly: a server with no verdict is probed within a quarter
// interval of its registration (a new fleet is served sooner), one with a
// verdict at its phase; after its first probe each keeps its phase, so
// that probes stay spread over the interval.
func TestFirstProbeEarly(t *testing.T) {
	p, _ := newTestProber(t, testConfig(), keyspace.Layout{}, nil)
	tm := &term{p: p, trackers: map[string]*tracker{"known": {addr: "127.0.0.1:2", status: statusUp}},
		loads: map[string]*loadTracker{}, entries: map[string]*entry{}, sheds: map[string]int64{},
		pending: map[string]store.Health{}, capacity: 1000}
	defer tm.probes.Wait()
	now := time.Date(2026, 12, 1, 0, 0, 0, 30_000_000, time.UTC)
	var snap store.Snapshot
	for i := range 200 {
		snap.Servers = append(snap.Servers, &store.Server{ID: fmt.Sprintf("new%03d", i), Addr: "127.0.0.1:1"})
	}
	snap.Servers = append(snap.Servers, &store.Server{ID: "known", Addr: "127.0.0.1:2"})
	tm.sync(&snap, now)
	for id, e := range tm.entries {
		if id == "known" {
			if want := phaseDue(id, now, interval); !e.due.Equal(want) || e.first {
				t.Errorf("known: due %v first %v; want its phase %v", e.due, e.first, want)
			}
			continue
		}
		if !e.first || e.due.Before(now) || e.due.Sub(now) >= interval/4 {
			t.Errorf("%s: due %v after registration (first %v); want within %v", id, e.due.Sub(now), e.first, interval/4)
		}
		// Its first probe puts it back at its phase.
		e.due = now
		heap.Fix(&tm.queue, e.index)
		tm.dispatch(context.Background(), now, 0)
		if want := phaseDue(id, now, interval); !e.due.Equal(want) || e.first {
			t.Errorf("%s: after its first turn due %v first %v; want its phase %v", id, e.due, e.first, want)
		}
	}
}

// TestProberIdleTimeoutServer: a server that closes idle connections
// after 150 ms (its links end young while it stays up) costs one notice
// probe, not one per link, and stays up.
func TestProberIdleTimeoutServer(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				time.Sleep(150 * time.Millisecond)
				c.Close()
			})
		}
	})
	e.waitSnapshot(t, e.register(t, "a", ln.Addr().String()))
	cfg := testConfig()
	cfg.Interval, cfg.Timeout = time.Second, 500*time.Millisecond
	p, _ := newTestProber(t, cfg, e.keys, e.w)
	wr := newFencedWriter(t, e.cli, "leader")
	runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })
	etcdtest.WaitFor(t, 20*time.Second, "three links closed by the server", func() bool {
		return testutil.ToFloat64(p.metrics.linkCloses) >= linkMaxFails
	})
	time.Sleep(100 * time.Millisecond) // a notice probe of the last close would have started
	if n := testutil.ToFloat64(p.metrics.noticeProbes); n != 1 {
		t.Errorf("%v notice probes for %d young links of a live server; want 1", n, linkMaxFails)
	}
	if h, ok := getHealth(t, e.cli, e.keys, "a"); !ok || !h.Healthy {
		t.Errorf("a = %+v (recorded %v); want up", h, ok)
	}
}

// TestProberRepeatedDeaths: a server that dies again and again (restarted
// each time, killed once its new link is open) is taken down by a death
// notice every time: a link that ended with its server's death does not
// count against the server's next link as one it closed while up would.
func TestProberRepeatedDeaths(t *testing.T) {
	e, srv, p, reg := linkedProber(t)
	for i := range linkMaxFails + 1 {
		waitHealth(t, e.cli, e.keys, "a", "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })
		etcdtest.WaitFor(t, 10*time.Second, "a link to a", func() bool { return gauge(t, reg, "tcpdispatch_prober_links") == 1 })
		time.Sleep(200 * time.Millisecond)
		srv.kill()
		waitHealth(t, e.cli, e.keys, "a", "down", func(h store.Health, ok bool) bool { return ok && !h.Healthy })
		if n := testutil.ToFloat64(p.metrics.deathNotices); n != float64(i+1) {
			t.Fatalf("death %d: %v death notices; want %d", i+1, n, i+1)
		}
		srv = holdingServerAt(t, srv.addr)
	}
}

// stuckBeatWriter holds every heartbeat write until its context ends, as
// an etcd that commits slowly would; other writes go through.
type stuckBeatWriter struct {
	*fencedWriter
	key   string
	stuck atomic.Int32 // heartbeat writes waiting
}

func (w *stuckBeatWriter) Txn(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	for _, op := range ops {
		if string(op.KeyBytes()) == w.key {
			w.stuck.Add(1)
			defer w.stuck.Add(-1)
			<-ctx.Done()
			return nil, ctx.Err()
		}
	}
	return w.fencedWriter.Txn(ctx, cmps, ops...)
}

// TestDeathNoticeWhileHeartbeatSlow: a heartbeat write that etcd is slow
// to commit does not hold up the probing loop, so a death notice is judged
// and written meanwhile. (The heartbeat used to be written on the loop's
// own goroutine: the down verdict then waited for it, here for the whole
// operation timeout.)
func TestDeathNoticeWhileHeartbeatSlow(t *testing.T) {
	e := newEnv(t)
	srv := newHoldingServer(t)
	e.waitSnapshot(t, e.register(t, "a", srv.addr))
	cfg := testConfig()
	cfg.Interval, cfg.Timeout = time.Second, 500*time.Millisecond
	cfg.HeartbeatInterval, cfg.OpTimeout = 0, 30*time.Second
	p, reg := newTestProber(t, cfg, e.keys, e.w)
	wr := &stuckBeatWriter{fencedWriter: newFencedWriter(t, e.cli, "leader"), key: e.keys.Heartbeat()}
	runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })
	waitHealth(t, e.cli, e.keys, "a", "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })
	etcdtest.WaitFor(t, 10*time.Second, "a link to a", func() bool { return gauge(t, reg, "tcpdispatch_prober_links") == 1 })
	etcdtest.WaitFor(t, 10*time.Second, "a heartbeat write held", func() bool { return wr.stuck.Load() == 1 })
	time.Sleep(1100 * time.Millisecond) // the link is no longer young
	killed := time.Now()
	srv.kill()
	h := waitHealth(t, e.cli, e.keys, "a", "down", func(h store.Health, ok bool) bool { return ok && !h.Healthy })
	if d := h.CheckedAt.Sub(killed); d > 500*time.Millisecond {
		t.Errorf("a went down %v after its process died, with a heartbeat write held; want a death notice's few milliseconds", d)
	}
	if n := wr.stuck.Load(); n != 1 {
		t.Errorf("%d heartbeat writes in flight; want one at a time", n)
	}
}
