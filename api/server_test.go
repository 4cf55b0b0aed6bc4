package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch"
	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// fakeSource serves a fixed snapshot, which a test may swap.
type fakeSource struct {
	snap      atomic.Pointer[store.Snapshot]
	sync      store.Sync
	age       time.Duration
	reachable bool
}

var _ Source = (*fakeSource)(nil)

func (f *fakeSource) Snapshot() *store.Snapshot { return f.snap.Load() }
func (f *fakeSource) Sync() store.Sync          { return f.sync }
func (f *fakeSource) Age() time.Duration        { return f.age }
func (f *fakeSource) Reachable() bool           { return f.reachable }

type fakeLeader bool

func (l fakeLeader) IsLeader() bool { return bool(l) }

// kv is one key under a snapshot's prefix.
type kv struct{ key, value string }

func up(t testing.TB, addr string) string {
	t.Helper()
	b, err := json.Marshal(store.Health{Addr: addr, Healthy: true, Since: time.Unix(1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func down(t testing.TB, addr string) string {
	t.Helper()
	b, err := json.Marshal(store.Health{Addr: addr, Healthy: false, Reason: "connection refused"})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// snapshotOf writes kvs under prefix in etcd and returns the snapshot a
// real store.Watcher builds of them: store offers no other way to build a
// Snapshot from outside the package.
func snapshotOf(t testing.TB, cli *clientv3.Client, prefix string, kvs []kv) *store.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rev int64
	for _, p := range kvs {
		resp, err := cli.Put(ctx, prefix+p.key, p.value)
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		rev = resp.Header.Revision
	}
	w, err := store.NewWatcher(store.Config{Prefix: prefix}, cli, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		wcancel()
		if err := <-done; err != nil {
			t.Errorf("watcher Run: %v", err)
		}
	}()
	for {
		if s := w.Snapshot(); s != nil && s.Revision >= rev {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no snapshot at revision %d", rev)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// fixtures are the snapshots the server tests answer from.
type fixtures struct {
	mixed *store.Snapshot // a, b, c eligible; d down; e bad weight (keeps the default 100, eligible); f bad addr; garbage strategy
	one   *store.Snapshot // only one eligible server
	hash  *store.Snapshot // a..e eligible, hash strategy
	none  *store.Snapshot // one server, down, config/all-down fail
	down  *store.Snapshot // two servers, down, no all-down key (serve)
}

func newFixtures(t *testing.T) fixtures {
	t.Helper()
	m := etcdtest.Start(t)
	cli := m.Client(t)
	var f fixtures
	f.mixed = snapshotOf(t, cli, "/mixed/", []kv{
		{"servers/a/addr", "10.0.0.1:9000"}, {"health/a", up(t, "10.0.0.1:9000")},
		{"servers/b/addr", "10.0.0.2:9000"}, {"health/b", up(t, "10.0.0.2:9000")},
		{"servers/c/addr", "10.0.0.3:9000"}, {"servers/c/weight", "50"}, {"health/c", up(t, "10.0.0.3:9000")},
		{"servers/d/addr", "10.0.0.4:9000"}, {"health/d", down(t, "10.0.0.4:9000")},
		{"servers/e/addr", "10.0.0.5:9000"}, {"servers/e/weight", "heavy"}, {"health/e", up(t, "10.0.0.5:9000")},
		{"servers/f/addr", "10.0.0.6"}, {"health/f", up(t, "10.0.0.6")},
		{"config/strategy", "fastest"},
		{"election/694d7c1b2a3e01", "replica-7"},
	})
	f.one = snapshotOf(t, cli, "/one/", []kv{
		{"servers/only/addr", "10.0.0.1:9000"}, {"health/only", up(t, "10.0.0.1:9000")},
		{"servers/off/addr", "10.0.0.2:9000"}, {"servers/off/weight", "0"}, {"health/off", up(t, "10.0.0.2:9000")},
	})
	hash := []kv{{"config/strategy", "hash"}}
	for i := 1; i <= 5; i++ {
		id, addr := "h"+strconv.Itoa(i), "10.0.1."+strconv.Itoa(i)+":9000"
		hash = append(hash, kv{"servers/" + id + "/addr", addr}, kv{"health/" + id, up(t, addr)})
	}
	f.hash = snapshotOf(t, cli, "/hash/", hash)
	f.none = snapshotOf(t, cli, "/none/", []kv{
		{"servers/x/addr", "10.0.0.9:9000"}, {"health/x", down(t, "10.0.0.9:9000")}, {"config/all-down", "fail"},
	})
	f.down = snapshotOf(t, cli, "/down/", []kv{
		{"servers/x/addr", "10.0.0.9:9000"}, {"health/x", down(t, "10.0.0.9:9000")},
		{"servers/y/addr", "10.0.0.8:9000"}, {"health/y", down(t, "10.0.0.8:9000")},
	})
	// Sanity checks on what the watcher built, so that failures below are
	// about the API.
	if f.mixed.Eligible() != 4 || f.one.Eligible() != 1 || f.hash.Eligible() != 5 || f.none.Eligible() != 0 || !f.down.AllDown {
		t.Fatalf("fixtures: eligible %d/%d/%d/%d; want 4/1/5/0",
			f.mixed.Eligible(), f.one.Eligible(), f.hash.Eligible(), f.none.Eligible())
	}
	return f
}

func newTestServer(t testing.TB, src Source, leader LeaderState, reg *prometheus.Registry) *Server {
	t.Helper()
	var r prometheus.Registerer
	var g prometheus.Gatherer
	if reg != nil {
		r, g = reg, reg
	}
	s, err := New(Config{Name: "replica-1"}, src, leader, nil, r, g)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// runPublic serves srv's public listener on a loopback port until the
// test ends, failing it if Run does, and returns the listener's address.
func runPublic(t testing.TB, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ln.Addr().String()
}

func sourceOf(s *store.Snapshot) *fakeSource {
	src := &fakeSource{sync: store.Sync{Revision: 42, At: time.Now()}, age: 1500 * time.Millisecond, reachable: true}
	if s != nil {
		src.snap.Store(s)
	}
	return src
}

// get serves one GET of target from remote.
func get(t testing.TB, h http.Handler, target, remote string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if remote != "" {
		req.RemoteAddr = remote
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// wantJSONError checks an error answer: code, JSON content type and an
// {"error": ...} body containing sub.
func wantJSONError(t testing.TB, rec *httptest.ResponseRecorder, code int, sub string) {
	t.Helper()
	if rec.Code != code {
		t.Fatalf("status = %d; want %d (body %s)", rec.Code, code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q; want application/json", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q is not JSON: %v", rec.Body, err)
	}
	msg, ok := body["error"].(string)
	if len(body) != 1 || !ok || !strings.Contains(msg, sub) {
		t.Fatalf("body = %s; want only {\"error\": ...} containing %q", rec.Body, sub)
	}
}

// pick decodes a get-tcp-ip JSON answer.
func pick(t testing.TB, rec *httptest.ResponseRecorder) tcpdispatch.Answer {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d; want 200 (body %s)", rec.Code, rec.Body)
	}
	var p tcpdispatch.Answer
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return p
}

func TestServer(t *testing.T) {
	f := newFixtures(t)
	const remote = "192.0.2.7:51234"

	t.Run("get-tcp-ip before the first snapshot", func(t *testing.T) {
		h := newTestServer(t, sourceOf(nil), fakeLeader(false), nil).Handler()
		wantJSONError(t, get(t, h, "/get-tcp-ip", remote), http.StatusServiceUnavailable, "no snapshot yet")
		wantJSONError(t, get(t, h, "/v1/servers", remote), http.StatusServiceUnavailable, "no snapshot yet")
	})

	t.Run("json answer is exact", func(t *testing.T) {
		h := newTestServer(t, sourceOf(f.one), fakeLeader(false), nil).Handler()
		for _, target := range []string{"/get-tcp-ip", "/get-tcp-ip?format=json", "/get-tcp-ip?key=x&_=1", "/get-tcp-ip?n=1"} {
			rec := get(t, h, target, remote)
			if rec.Code != http.StatusOK || rec.Body.String() != `{"id":"only","addr":"10.0.0.1:9000"}` {
				t.Fatalf("%s = %d %q; want 200 with the exact JSON", target, rec.Code, rec.Body)
			}
			if ct, cc := rec.Header().Get("Content-Type"), rec.Header().Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
				t.Errorf("%s headers: Content-Type %q, Cache-Control %q", target, ct, cc)
			}
		}
	})

	t.Run("text answer is the bare addr", func(t *testing.T) {
		h := newTestServer(t, sourceOf(f.one), fakeLeader(false), nil).Handler()
		rec := get(t, h, "/get-tcp-ip?format=text", remote)
		if rec.Code != http.StatusOK || rec.Body.String() != "10.0.0.1:9000" {
			t.Fatalf("text answer = %d %q; want 200 10.0.0.1:9000", rec.Code, rec.Body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("Content-Type = %q", ct)
		}
	})

	t.Run("only eligible servers are returned", func(t *testing.T) {
		h := newTestServer(t, sourceOf(f.mixed), fakeLeader(false), nil).Handler()
		seen := map[string]int{}
		for range 50 {
			seen[pick(t, get(t, h, "/get-tcp-ip", remote)).ID]++
		}
		if len(seen) != 4 || seen["a"] == 0 || seen["b"] == 0 || seen["c"] == 0 || seen["e"] == 0 {
			t.Fatalf("picks = %v; want a, b, c and e only", seen)
		}
		// wrr (the garbage strategy falls back to it): c has half the weight.
		if seen["c"] >= seen["a"] {
			t.Errorf("picks = %v; want c (weight 50) picked less than a (weight 100)", seen)
		}
	})

	t.Run("exclude skips servers", func(t *testing.T) {
		h := newTestServer(t, sourceOf(f.mixed), fakeLeader(false), nil).Handler()
		for range 10 {
			if p := pick(t, get(t, h, "/get-tcp-ip?exclude=a,%20b,e", remote)); p.ID != "c" || p.Addr != "10.0.0.3:9000" {
				t.Fatalf("exclude a,b,e picked %+v; want c", p)
			}
		}
	})

	t.Run("exclude all", func(t *testing.T) {
		h := newTestServer(t, sourceOf(f.mixed), fakeLeader(false), nil).Handler()
		rec := get(t, h, "/get-tcp-ip?exclude=a,b,c,e", remote)
		wantJSONError(t, rec, http.StatusServiceUnavailable, "no healthy server: 6 registered, 4 eligible, 4 excluded by the request")
		rec = get(t, h, "/get-tcp-ip?exclude=a,b,c,e&n=3", remote)
		wantJSONError(t, rec, http.StatusServiceUnavailable, "4 excluded by the request")
	})

	t.Run("no eligible server", func(t *testing.T) {
		h := newTestServer(t, sourceOf(f.none), fakeLeader(false), nil).Handler()
		wantJSONError(t, get(t, h, "/get-tcp-ip", remote), http.StatusServiceUnavailable, "no healthy server: 1 registered, 0 eligible")
		wantJSONError(t, get(t, h, "/get-tcp-ip?format=text&n=2", remote), http.StatusServiceUnavailable, "0 eligible")
	})

	t.Run("alternatives are distinct", func(t *testing.T) {
		h := newTestServer(t, sourceOf(f.hash), fakeLeader(false), nil).Handler()
		for _, tt := range []struct {
			target string
			want   int
		}{
			{"/get-tcp-ip?n=3&key=k1", 3},
			{"/get-tcp-ip?n=3", 3},
			{"/get-tcp-ip?n=10&key=k2", 5},
			{"/get-tcp-ip?n=3&key=k3&exclude=h1,h2,h3", 2},
		} {
			p := pick(t, get(t, h, tt.target, remote))
			got := map[string]bool{p.ID: true}
			for _, alt := range p.Alternatives {
				if got[alt.ID] || alt.Addr == "" {
					t.Fatalf("%s: alternative %+v repeats or lacks an addr: %+v", tt.target, alt, p)
				}
				got[alt.ID] = true
			}
			if len(got) != tt.want {
				t.Fatalf("%s: %d servers; want %d (%+v)", tt.target, len(got), tt.want, p)
			}
			if strings.Contains(tt.target, "exclude") && (got["h1"] || got["h2"] || got["h3"]) {
				t.Fatalf("%s returned an excluded server: %+v", tt.target, p)
			}
		}
		// The first of n is what a single pick returns for the same key.
		single := pick(t, get(t, h, "/get-tcp-ip?key=k1", remote))
		if p := pick(t, get(t, h, "/get-tcp-ip?key=k1&n=4", remote)); p.ID != single.ID {
			t.Errorf("n=4 starts with %q; a single pick gives %q", p.ID, single.ID)
		}
		// Text: one addr per line.
		rec := get(t, h, "/get-tcp-ip?n=3&key=k1&format=text", remote)
		lines := strings.Split(rec.Body.String(), "\n")
		if rec.Code != http.StatusOK || len(lines) != 3 || lines[0] != single.Addr {
			t.Errorf("text n=3 = %d %q; want three lines starting with %s", rec.Code, rec.Body, single.Addr)
		}
		// An empty alternatives list is [], not null.
		rec = get(t, h, "/get-tcp-ip?n=2&exclude=h1,h2,h3,h4", remote)
		if !strings.Contains(rec.Body.String(), `"alternatives":[]`) {
			t.Errorf("n=2 with one server left = %s; want alternatives []", rec.Body)
		}
	})

	t.Run("hash is sticky", func(t *testing.T) {
		h := newTestServer(t, sourceOf(f.hash), fakeLeader(false), nil).Handler()
		ids := map[string]bool{}
		for i := range 40 {
			key := "user-" + strconv.Itoa(i)
			first := pick(t, get(t, h, "/get-tcp-ip?key="+key, remote)).ID
			for range 5 {
				if id := pick(t, get(t, h, "/get-tcp-ip?key="+key, "198.51.100.1:1")).ID; id != first {
					t.Fatalf("key %s: %q then %q", key, first, id)
				}
			}
			ids[first] = true
		}
		if len(ids) < 3 {
			t.Errorf("40 keys landed on %d servers; want them spread", len(ids))
		}
		// Without a key, the client IP is the key: the port does not matter,
		// and a forwarded-for header is not trusted.
		first := pick(t, get(t, h, "/get-tcp-ip", "203.0.113.9:1000")).ID
		for port := 1001; port < 1010; port++ {
			req := httptest.NewRequest(http.MethodGet, "/get-tcp-ip", nil)
			req.RemoteAddr = "203.0.113.9:" + strconv.Itoa(port)
			req.Header.Set("X-Forwarded-For", "10.9.9."+strconv.Itoa(port%256))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if id := pick(t, rec).ID; id != first {
				t.Fatalf("same client IP from port %d got %q; want %q", port, id, first)
			}
		}
	})

	t.Run("bad parameters", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		h := newTestServer(t, sourceOf(f.mixed), fakeLeader(false), reg).Handler()
		for _, tt := range []struct{ query, sub string }{
			{"n=0", "n must be"},
			{"n=11", "n must be"},
			{"format=xml", "format must be"},
			{"exclude=a/b", "exclude"},
			{"key=%zz", "bad query"},
			{"exclude=" + strings.Repeat("x,", 33) + "y", "more than 32"},
		} {
			t.Run(tt.query, func(t *testing.T) {
				wantJSONError(t, get(t, h, "/get-tcp-ip?"+tt.query, remote), http.StatusBadRequest, tt.sub)
			})
		}
		// Bad requests are counted apart from answers.
		get(t, h, "/get-tcp-ip", remote)
		metrics := get(t, h, "/metrics", remote).Body.String()
		for _, want := range []string{
			`tcpdispatch_get_tcp_ip_requests_total{outcome="bad_request"} 6`,
			`tcpdispatch_get_tcp_ip_requests_total{outcome="ok"} 1`,
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %q:\n%s", want, metrics)
			}
		}
	})

	t.Run("servers", func(t *testing.T) {
		h := newTestServer(t, sourceOf(f.mixed), fakeLeader(false), nil).Handler()
		rec := get(t, h, "/v1/servers", remote)
		if rec.Code != http.StatusOK {
			t.Fatalf("status = %d", rec.Code)
		}
		var body struct {
			Name          string             `json:"name"`
			Revision      int64              `json:"revision"`
			SnapshotAgeMs int64              `json:"snapshot_age_ms"`
			Strategy      string             `json:"strategy"`
			Leader        string             `json:"leader"`
			Problems      []string           `json:"problems"`
			Servers       []store.ServerInfo `json:"servers"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if body.Name != "replica-1" || body.Revision != 42 || body.SnapshotAgeMs != 1500 || body.Strategy != "wrr" || body.Leader != "replica-7" {
			t.Errorf("servers header = %+v", body)
		}
		// The fixture's election key was put without a lease, as no
		// campaign writes it: reported as blocking elections.
		if len(body.Problems) != 2 || !strings.Contains(body.Problems[0], "fastest") || !strings.Contains(body.Problems[1], "without a lease") {
			t.Errorf("problems = %q; want the garbage strategy and the lease-less election key", body.Problems)
		}
		want := map[string]struct {
			eligible bool
			state    string
			errSub   string
		}{
			"a": {true, "up", ""}, "b": {true, "up", ""}, "c": {true, "up", ""},
			"d": {false, "down", ""}, "e": {true, "up", `weight "heavy"`}, "f": {false, "unknown", `addr "10.0.0.6"`},
		}
		if len(body.Servers) != len(want) {
			t.Fatalf("%d servers; want %d: %s", len(body.Servers), len(want), rec.Body)
		}
		for _, s := range body.Servers {
			w := want[s.ID]
			if s.Eligible != w.eligible || string(s.State) != w.state {
				t.Errorf("server %s: eligible %v state %q; want %v %q", s.ID, s.Eligible, s.State, w.eligible, w.state)
			}
			if got := strings.Join(s.Errors, "|"); (w.errSub == "") != (got == "") || !strings.Contains(got, w.errSub) {
				t.Errorf("server %s: errors %q; want %q", s.ID, s.Errors, w.errSub)
			}
		}
		if !strings.Contains(rec.Body.String(), `"reason":"connection refused"`) {
			t.Errorf("down server's reason missing: %s", rec.Body)
		}
	})

	t.Run("status", func(t *testing.T) {
		for _, tt := range []struct {
			name      string
			src       *fakeSource
			leader    bool
			wantEtcd  string
			wantAge   float64
			wantReady bool
		}{
			{"leader with snapshot", sourceOf(f.mixed), true, "ok", 1500, true},
			{"follower, etcd gone", func() *fakeSource { s := sourceOf(f.mixed); s.reachable = false; return s }(), false, "unreachable", 1500, true},
			{"no snapshot yet", func() *fakeSource { s := sourceOf(nil); s.age = -1; s.reachable = false; return s }(), false, "unreachable", -1, false},
		} {
			t.Run(tt.name, func(t *testing.T) {
				h := newTestServer(t, tt.src, fakeLeader(tt.leader), nil).Handler()
				rec := get(t, h, "/v1/status", remote)
				if rec.Code != http.StatusOK {
					t.Fatalf("status = %d", rec.Code)
				}
				var body map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
					t.Fatal(err)
				}
				for _, k := range []string{"name", "leader", "is_leader", "leader_epoch", "revision", "snapshot_age_ms", "etcd", "ready", "strategy", "servers", "eligible"} {
					if _, ok := body[k]; !ok {
						t.Errorf("status lacks %q: %s", k, rec.Body)
					}
				}
				if body["name"] != "replica-1" || body["is_leader"] != tt.leader || body["etcd"] != tt.wantEtcd ||
					body["snapshot_age_ms"] != tt.wantAge || body["ready"] != tt.wantReady || body["revision"] != float64(42) {
					t.Errorf("status = %s", rec.Body)
				}
				if tt.src.Snapshot() != nil && (body["leader"] != "replica-7" || body["leader_epoch"].(float64) <= 0 ||
					body["servers"] != float64(6) || body["eligible"] != float64(4) || body["strategy"] != "wrr") {
					t.Errorf("status snapshot fields = %s", rec.Body)
				}
			})
		}
	})

	t.Run("healthz and readyz", func(t *testing.T) {
		src := sourceOf(nil)
		h := newTestServer(t, src, fakeLeader(false), nil).Handler()
		if rec := get(t, h, "/healthz", remote); rec.Code != http.StatusOK || rec.Body.String() != "ok\n" {
			t.Errorf("/healthz = %d %q", rec.Code, rec.Body)
		}
		if rec := get(t, h, "/readyz", remote); rec.Code != http.StatusServiceUnavailable {
			t.Errorf("/readyz without a snapshot = %d %q; want 503", rec.Code, rec.Body)
		}
		src.snap.Store(f.none) // ready even with no eligible server
		if rec := get(t, h, "/readyz", remote); rec.Code != http.StatusOK || rec.Body.String() != "ok\n" {
			t.Errorf("/readyz with a snapshot = %d %q; want 200", rec.Code, rec.Body)
		}
	})

	t.Run("unknown route and method", func(t *testing.T) {
		h := newTestServer(t, sourceOf(f.one), fakeLeader(false), nil).Handler()
		wantJSONError(t, get(t, h, "/nope", remote), http.StatusNotFound, "Not Found")
		wantJSONError(t, get(t, h, "/metrics", remote), http.StatusNotFound, "Not Found") // no gatherer
		req := httptest.NewRequest(http.MethodPost, "/get-tcp-ip", strings.NewReader("x"))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		wantJSONError(t, rec, http.StatusMethodNotAllowed, "Method Not Allowed")
	})

	t.Run("allocations per request", func(t *testing.T) {
		h := newTestServer(t, sourceOf(f.mixed), fakeLeader(false), nil).Handler()
		for _, target := range []string{"/get-tcp-ip", "/get-tcp-ip?key=user-42&exclude=a", "/get-tcp-ip?format=text"} {
			allocs := allocsPerGet(t, h, target, remote)
			t.Logf("GET %s: %v allocs/request", target, allocs)
			if allocs > maxAllocs {
				t.Errorf("GET %s allocates %v times per request; want <= %d", target, allocs, maxAllocs)
			}
		}
	})
}

// maxAllocs bounds allocations per get-tcp-ip request (json, text,
// key+exclude). Measured 0 with echo v4.16, which pools its contexts, once
// handlers are wrapped at registration instead of by e.Use middleware.
const maxAllocs = 0

// allocsPerGet measures the allocations of one GET of target answered 200.
func allocsPerGet(t *testing.T, h http.Handler, target, remote string) float64 {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.RemoteAddr = remote
	w := &reusableWriter{header: make(http.Header)}
	return testing.AllocsPerRun(1000, func() {
		w.reset()
		h.ServeHTTP(w, req)
		if w.code != http.StatusOK || w.n == 0 {
			t.Fatalf("%s = %d, %d bytes", target, w.code, w.n)
		}
	})
}

// reusableWriter is an http.ResponseWriter that keeps its header map and
// discards the body, so that measuring allocations counts the handler's.
type reusableWriter struct {
	header http.Header
	code   int
	n      int
}

func (w *reusableWriter) Header() http.Header { return w.header }
func (w *reusableWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *reusableWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}

func (w *reusableWriter) reset() { w.code, w.n = 0, 0 }

func TestNewDuplicateMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, sourceOf(nil), fakeLeader(false), nil, reg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{}, sourceOf(nil), fakeLeader(false), nil, reg, nil); err == nil {
		t.Fatal("a second server registered the same metrics without an error")
	}
}

// TestRun serves on a real listener and shuts down: after cancellation
// /readyz fails for the lame-duck window while get-tcp-ip still answers,
// then Run returns nil.
func TestRun(t *testing.T) {
	for _, loop := range []bool{false, true} {
		t.Run(fmt.Sprintf("event loop %v", loop), func(t *testing.T) { testRun(t, loop) })
	}
}

func testRun(t *testing.T, loop bool) {
	f := newFixtures(t)
	const lameDuck = 200 * time.Millisecond
	s, err := New(Config{Name: "r", LameDuck: lameDuck, ShutdownTimeout: time.Second, EventLoop: loop}, sourceOf(f.one), fakeLeader(false), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	fetch := func(path string) (int, string, error) {
		resp, err := client.Get(base + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()

	if code, body, err := fetch("/readyz"); err != nil || code != http.StatusOK {
		t.Fatalf("/readyz while serving = %d %q %v; want 200", code, body, err)
	}
	cancelled := time.Now()
	cancel()
	deadline := time.Now().Add(lameDuck)
	for {
		code, _, err := fetch("/readyz")
		if err != nil {
			t.Fatalf("/readyz during lame duck: %v", err)
		}
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %v after cancellation", code, time.Since(cancelled))
		}
		time.Sleep(5 * time.Millisecond)
	}
	code, body, err := fetch("/get-tcp-ip")
	if err != nil || code != http.StatusOK || body != `{"id":"only","addr":"10.0.0.1:9000"}` {
		t.Fatalf("/get-tcp-ip during lame duck (%v after cancel) = %d %q %v; want 200", time.Since(cancelled), code, body, err)
	}
	if code, _, _ := fetch("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz during lame duck = %d; want 200", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the lame-duck window")
	}
	if d := time.Since(cancelled); d < lameDuck {
		t.Errorf("Run returned %v after cancellation; want >= lame duck %v", d, lameDuck)
	}
	if _, _, err := fetch("/healthz"); err == nil {
		t.Error("still serving after Run returned")
	}
}

// TestRunListenerError checks that Run reports a listener that fails.
func TestRunListenerError(t *testing.T) {
	s := newTestServer(t, sourceOf(nil), fakeLeader(false), nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	err = s.Run(context.Background(), ln)
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Run on a closed listener = %v; want an error wrapping net.ErrClosed", err)
	}
}
