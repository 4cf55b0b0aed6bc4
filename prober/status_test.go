package prober

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tcpdispatch/tcpdispatch"
	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/store"
)

func TestPullStatus(t *testing.T) {
	block := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(block) }) })
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"conns": 7, "max_conns": 10, "load": 0.1, "new_field": 1}`)
	})
	mux.HandleFunc("/draining", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"conns": 7, "max_conns": 10, "load": 0.1}`)
	})
	mux.HandleFunc("/503-garbage", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `service unavailable`)
	})
	mux.HandleFunc("/500", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{}`)
	})
	mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"conns": 1, "pad": "`+strings.Repeat("x", tcpdispatch.MaxStatusBytes)+`"}`)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer once.Do(func() { close(block) })

	p, _ := newTestProber(t, testConfig(), keyspace.Layout{}, nil)
	tests := []struct {
		path    string
		want    Status
		errPart string
	}{
		{"/ok", Status{Conns: 7, MaxConns: 10, Load: 0.1}, ""},
		{"/draining", Status{Conns: 7, MaxConns: 10, Load: 0.1, Draining: true}, ""},
		{"/503-garbage", Status{}, "HTTP 503"},
		{"/500", Status{}, "HTTP 500"},
		{"/huge", Status{}, "larger than"},
		{"/slow", Status{}, "deadline"},
		{"/redirect", Status{}, "HTTP 302"},
		{"/missing", Status{}, "HTTP 404"},
	}
	for _, tt := range tests {
		start := time.Now()
		got, err := pullStatus(context.Background(), p.http, srv.URL+tt.path, 50*time.Millisecond)
		if tt.errPart == "" && (err != nil || got != tt.want) {
			t.Errorf("%s: %+v, %v; want %+v", tt.path, got, err, tt.want)
		}
		if tt.errPart != "" && (err == nil || !strings.Contains(err.Error(), tt.errPart)) {
			t.Errorf("%s: error %v; want one containing %q", tt.path, err, tt.errPart)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: took %v despite the 50ms timeout", tt.path, d)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := pullStatus(ctx, p.http, srv.URL+"/ok", time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled pull: %v", err)
	}
}

func TestLoadTracker(t *testing.T) {
	now := time.Unix(1000, 0)
	var l loadTracker
	st := func(load float64, conns int64) *Status { return &Status{Conns: conns, MaxConns: 1000, Load: load} }
	l.observe(st(0.2, 100), now, 0.5, 0.9, 0.8)
	if !l.has || l.ewma != 0.2 || !l.dirty(now, time.Minute) {
		t.Fatalf("first sample: %+v", l)
	}
	var h store.Health
	l.fill(&h, 30*time.Second)
	l.markWritten(h)
	if l.dirty(now, time.Minute) || !h.ReportExpires.Equal(now.Add(30*time.Second)) || h.Conns != 100 {
		t.Fatalf("written: dirty, or record %+v", h)
	}
	// Small moves are not written; 5 points of smoothed load are.
	l.observe(st(0.26, 105), now, 0.5, 0.9, 0.8) // ewma 0.23
	if l.dirty(now, time.Minute) {
		t.Errorf("ewma %.3f, conns 105: dirty; want a 3-point move held back", l.ewma)
	}
	l.observe(st(0.3, 105), now, 0.5, 0.9, 0.8) // ewma 0.265
	if !l.dirty(now, time.Minute) {
		t.Errorf("ewma %.3f: not dirty; want a 6.5-point move written", l.ewma)
	}
	l.markWritten(func() store.Health { var h store.Health; l.fill(&h, time.Minute); return h }())
	// Conns move by 5% (at least 10) of the written value.
	l.observe(st(0.265, 115), now, 0.5, 0.9, 0.8)
	if !l.dirty(now, time.Minute) {
		t.Errorf("conns 105 -> 115: not dirty")
	}
	// The refresh rewrites an unchanged report.
	l.markWritten(func() store.Health { var h store.Health; l.fill(&h, time.Minute); return h }())
	if l.dirty(now.Add(59*time.Second), time.Minute) || !l.dirty(now.Add(time.Minute), time.Minute) {
		t.Errorf("refresh: dirty before or clean after the refresh interval")
	}
	// Overload hysteresis on the raw value: on at 0.9, off below 0.8.
	for _, step := range []struct {
		load float64
		want bool
	}{{0.89, false}, {0.9, true}, {0.85, true}, {0.8, true}, {0.79, false}, {0.5, false}} {
		l.observe(st(step.load, 0), now, 0.5, 0.9, 0.8)
		if l.overloaded != step.want {
			t.Errorf("load %v: overloaded %v; want %v", step.load, l.overloaded, step.want)
		}
	}
	// conns at max_conns is overload whatever the reported load.
	l.observe(st(0, 1000), now, 0.5, 0.9, 0.8)
	if !l.overloaded {
		t.Errorf("conns at max_conns: not overloaded")
	}
	// A failed pull drops the report, which must be written.
	l.markWritten(func() store.Health { var h store.Health; l.fill(&h, time.Minute); return h }())
	l.observe(nil, now, 0.5, 0.9, 0.8)
	if l.has || l.overloaded || !l.dirty(now, time.Minute) {
		t.Errorf("after a failed pull: %+v", l)
	}
}

// statusServer serves a status document whose values the test sets.
type statusServer struct {
	mu   sync.Mutex
	st   Status
	code int
	srv  *httptest.Server
}

func newStatusServer(t testing.TB) *statusServer {
	s := &statusServer{code: http.StatusOK}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		w.WriteHeader(s.code)
		fmt.Fprintf(w, `{"conns":%d,"max_conns":%d,"load":%v,"draining":%v}`, s.st.Conns, s.st.MaxConns, s.st.Load, s.st.Draining)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *statusServer) set(st Status, code int) {
	s.mu.Lock()
	s.st, s.code = st, code
	s.mu.Unlock()
}

// TestProberLoadReports runs a prober against etcd and a status endpoint:
// the report lands in the health record, small changes are not written,
// overload and a failing endpoint are.
func TestProberLoadReports(t *testing.T) {
	e := newEnv(t)
	ss := newStatusServer(t)
	ss.set(Status{Conns: 100, MaxConns: 1000, Load: 0.2}, http.StatusOK)
	addr := strings.TrimPrefix(ss.srv.URL, "http://")
	e.register(t, "a", addr)
	e.waitSnapshot(t, etcdtest.Put(t, e.cli, e.keys.ServerField("a", keyspace.FieldStatusURL), ss.srv.URL+"/status"))

	cfg := testConfig()
	cfg.LoadRefresh, cfg.ReportTTL, cfg.LoadSmoothing = time.Hour, 2*time.Hour, 1
	p, _ := newTestProber(t, cfg, e.keys, e.w)
	wr := newFencedWriter(t, e.cli, "leader-1")
	stop, _ := runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })

	h := waitHealth(t, e.cli, e.keys, "a", "a report", func(h store.Health, ok bool) bool { return ok && h.HasReport() })
	if !h.Healthy || h.Conns != 100 || h.MaxConns != 1000 || h.Load != 0.2 || h.Overloaded || h.ReportExpires.Sub(h.ReportedAt) != 2*time.Hour {
		t.Fatalf("record = %+v", h)
	}
	etcdtest.WaitFor(t, 10*time.Second, "the snapshot to hold the report", func() bool { return e.w.Snapshot().Lookup("a").Report == "fresh" })
	waitRounds(t, p, 1)

	t.Run("small change is not written", func(t *testing.T) {
		ss.set(Status{Conns: 105, MaxConns: 1000, Load: 0.22}, http.StatusOK)
		rev := currentRev(t, e.cli)
		waitRounds(t, p, 4)
		if got := currentRev(t, e.cli); got != rev {
			t.Errorf("revision %d -> %d after a 2-point change; want no write", rev, got)
		}
	})
	t.Run("overload is written", func(t *testing.T) {
		ss.set(Status{Conns: 950, MaxConns: 1000, Load: 0.3}, http.StatusOK)
		h := waitHealth(t, e.cli, e.keys, "a", "overloaded", func(h store.Health, ok bool) bool { return ok && h.Overloaded })
		if !h.Healthy || h.Conns != 950 {
			t.Errorf("record = %+v", h)
		}
		ss.set(Status{Conns: 700, MaxConns: 1000, Load: 0.3}, http.StatusOK)
		waitHealth(t, e.cli, e.keys, "a", "recovered", func(h store.Health, ok bool) bool { return ok && !h.Overloaded && h.Conns == 700 })
	})
	t.Run("draining is healthy and draining", func(t *testing.T) {
		ss.set(Status{Conns: 700, MaxConns: 1000, Load: 0.3}, http.StatusServiceUnavailable)
		h := waitHealth(t, e.cli, e.keys, "a", "draining", func(h store.Health, ok bool) bool { return ok && h.Draining })
		if !h.Healthy {
			t.Errorf("draining record = %+v; want healthy", h)
		}
	})
	t.Run("failing status endpoint takes the server down", func(t *testing.T) {
		ss.set(Status{}, http.StatusInternalServerError)
		h := waitHealth(t, e.cli, e.keys, "a", "down", func(h store.Health, ok bool) bool { return ok && !h.Healthy })
		if h.HasReport() || !strings.Contains(h.Reason, "HTTP 500") {
			t.Errorf("record = %+v; want no report and the HTTP status as reason", h)
		}
		if testutil.ToFloat64(p.metrics.statusFailures) < 2 {
			t.Errorf("status failures not counted")
		}
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
