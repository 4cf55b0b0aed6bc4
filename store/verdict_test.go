package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
)

func heartbeatJSON(t testing.TB, hb Heartbeat) string {
	t.Helper()
	b, err := json.Marshal(hb)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHeartbeatConfirms checks that a heartbeat of a record's own epoch
// confirms its verdict and keeps its load report in use, that one of
// another epoch confirms nothing, and that a heartbeat arriving after the
// build moves the age on without a rebuild.
func TestHeartbeatConfirms(t *testing.T) {
	m := newTestModel(t)
	rec := func(addr string, epoch int64, checked time.Time) string {
		return healthJSON(t, Health{Addr: addr, Healthy: true, CheckedAt: checked, Epoch: epoch,
			Load: 0.5, Conns: 10, ReportedAt: checked, ReportExpires: checked.Add(30 * time.Second)})
	}
	apply(t, m, []op{
		put("servers/a/addr", "10.0.0.1:1"), put("health/a", rec("10.0.0.1:1", 7, at.Add(-time.Hour))),
		put("servers/b/addr", "10.0.0.2:1"), put("health/b", rec("10.0.0.2:1", 7, at.Add(-time.Minute))),
	})
	s := buildAt(t, m, at)
	if got := s.OldestVerdictAge(at); got != time.Hour {
		t.Errorf("age without heartbeat = %v; want 1h (a's checked_at)", got)
	}
	if s.Lookup("a").Report != "expired" {
		t.Errorf("a's report = %s without heartbeat; want expired", s.Lookup("a").Report)
	}

	apply(t, m, []op{put("leader/heartbeat", heartbeatJSON(t, Heartbeat{Epoch: 7, Leader: "r1", At: at.Add(-time.Second)}))})
	s = buildAt(t, m, at)
	if got := s.OldestVerdictAge(at); got != time.Second {
		t.Errorf("age with a heartbeat of the records' epoch = %v; want 1s", got)
	}
	if a := s.Lookup("a"); a.Report != "fresh" || a.Load != 0.5 {
		t.Errorf("a's report = %s (load %v) with a heartbeat of its epoch; want fresh", a.Report, a.Load)
	}
	if !s.RebuildAt.Equal(at.Add(29 * time.Second)) {
		t.Errorf("RebuildAt = %v; want the heartbeat + the reports' 30s", s.RebuildAt)
	}

	// A newer heartbeat seen by the watcher after the build.
	var live atomic.Pointer[Heartbeat]
	s.verdicts.live = &live
	live.Store(&Heartbeat{Epoch: 7, At: at.Add(10 * time.Second)})
	if got := s.OldestVerdictAge(at.Add(11 * time.Second)); got != time.Second {
		t.Errorf("age after a later heartbeat = %v; want 1s", got)
	}
	// A new term's heartbeat confirms nothing of the old term's records.
	live.Store(&Heartbeat{Epoch: 8, At: at.Add(10 * time.Second)})
	if got := s.OldestVerdictAge(at); got != time.Hour {
		t.Errorf("age under another epoch's heartbeat = %v; want 1h", got)
	}

	apply(t, m, []op{put("leader/heartbeat", heartbeatJSON(t, Heartbeat{Epoch: 8, At: at}))})
	s = buildAt(t, m, at)
	if got := s.OldestVerdictAge(at); got != time.Hour {
		t.Errorf("age under another epoch's heartbeat after a rebuild = %v; want 1h", got)
	}
	apply(t, m, []op{del("leader/heartbeat"), put("leader/heartbeat", "not json")})
	if s = buildAt(t, m, at); s.Heartbeat() != (Heartbeat{}) {
		t.Errorf("heartbeat from a bad value = %+v; want none", s.Heartbeat())
	}
}

// TestWatcherHeartbeatNoRebuild checks that the watcher takes a heartbeat
// in without publishing a snapshot, and that the served age follows it.
func TestWatcherHeartbeatNoRebuild(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	now := time.Now().UTC()
	etcdtest.Put(t, cli, testPrefix+"servers/a/addr", "127.0.0.1:1001")
	rev := etcdtest.Put(t, cli, testPrefix+"health/a", healthJSON(t, Health{Addr: "127.0.0.1:1001", Healthy: true,
		CheckedAt: now.Add(-time.Hour), Epoch: 3}))
	w := newTestWatcher(t, cli, Config{ProgressInterval: 100 * time.Millisecond}, nil)
	runWatcher(t, w)
	s := waitRev(t, w, rev)
	if age := w.OldestVerdictAge(); age < time.Hour {
		t.Fatalf("age before any heartbeat = %v; want >= 1h", age)
	}
	changed := w.Changed()
	hbRev := etcdtest.Put(t, cli, testPrefix+"leader/heartbeat", heartbeatJSON(t, Heartbeat{Epoch: 3, Leader: "r1", At: time.Now()}))
	etcdtest.WaitFor(t, 10*time.Second, "the heartbeat to count", func() bool {
		return w.Sync().Revision >= hbRev && w.OldestVerdictAge() < time.Minute
	})
	select {
	case <-changed:
		t.Error("a heartbeat published a new snapshot; want none")
	default:
	}
	if w.Snapshot() != s {
		t.Error("a heartbeat replaced the snapshot")
	}
	path := t.TempDir() + "/snap.json"
	if err := SaveSnapshot(path, w.Snapshot(), time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	got, _, err := LoadSnapshot(path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if age := got.OldestVerdictAge(time.Now()); age > time.Minute {
		t.Errorf("age of the restored snapshot = %v; want the heartbeat's, under a minute", age)
	}
}

// TestWatcherReportsNoSpace fills a member past its quota: the NOSPACE
// alarm shows in the snapshot's problems and in tcpdispatch_etcd_alarms.
func TestWatcherReportsNoSpace(t *testing.T) {
	m := etcdtest.Start(t, etcdtest.WithQuota(1<<20))
	cli := m.Client(t)
	reg := prometheus.NewRegistry()
	w := newTestWatcher(t, cli, Config{ProgressInterval: 100 * time.Millisecond, ResolveInterval: 100 * time.Millisecond}, reg)
	runWatcher(t, w)
	waitRev(t, w, etcdtest.Put(t, cli, testPrefix+"servers/a/addr", "127.0.0.1:1001"))
	big := strings.Repeat("x", 100<<10)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cli.Put(ctx, fmt.Sprintf("/filler/%d", i), big)
		cancel()
		if err != nil {
			if !errors.Is(err, rpctypes.ErrNoSpace) {
				t.Fatalf("put %d: %v; want NOSPACE", i, err)
			}
			break
		}
		if i > 200 {
			t.Fatal("no NOSPACE after 20 MB against a 1 MB quota")
		}
	}
	etcdtest.WaitFor(t, 10*time.Second, "the NOSPACE alarm in the problems", func() bool {
		s := w.Snapshot()
		return slices.ContainsFunc(s.Problems, func(p string) bool { return strings.Contains(p, "NOSPACE") })
	})
	if v := testutil.ToFloat64(w.alarms.WithLabelValues("NOSPACE")); v != 1 {
		t.Errorf("tcpdispatch_etcd_alarms{alarm=NOSPACE} = %v; want 1", v)
	}
}
