package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDialUsesPickAndSendsQuery(t *testing.T) {
	srv := startEcho(t, "tcp1")
	other := startEcho(t, "tcp2")
	d := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) { writeAnswer(w, srv.server(), other.server()) })
	var events []DispatchEvent
	c := newTestClient(t, Config{
		Bootstrap: []string{d.addr()}, Key: "user-42", N: 2,
		Hooks: Hooks{OnDispatch: func(e DispatchEvent) { events = append(events, e) }},
	})
	conn, ans, err := c.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want := Answer{Server: srv.server(), Source: SourceDispatcher, Dispatcher: d.addr()}
	if ans != want {
		t.Fatalf("answer = %+v, want %+v", ans, want)
	}
	if got := roundTrip(t, conn, "hello"); got != "tcp1 hello" {
		t.Fatalf("echo = %q", got)
	}
	q := d.requests()
	if len(q) != 1 || q[0].Get("n") != "2" || q[0].Get("key") != "user-42" || q[0].Has("exclude") {
		t.Fatalf("queries = %v, want one n=2 key=user-42 without exclude", q)
	}
	if len(events) != 1 || events[0].Status != 200 || events[0].Err != nil || len(events[0].Servers) != 2 {
		t.Fatalf("dispatch events = %+v", events)
	}
}

func TestDialTriesAlternativesThenExcludes(t *testing.T) {
	live := startEcho(t, "live")
	dead := []Server{{"dead1", deadAddr(t)}, {"dead2", deadAddr(t)}, {"dead3", deadAddr(t)}}
	// The replica offers three dead servers first, then, once they are
	// excluded, the live one.
	d := newFakeDispatcher(t, func(w http.ResponseWriter, q url.Values) {
		answerExcluding(w, q, append(append([]Server{}, dead...), live.server())...)
	})
	var connects []ConnectEvent
	c := newTestClient(t, Config{
		Bootstrap: []string{d.addr()},
		Hooks:     Hooks{OnConnect: func(e ConnectEvent) { connects = append(connects, e) }},
	})
	conn, ans, err := c.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if ans.ID != "live" {
		t.Fatalf("connected to %+v, want live", ans)
	}
	q := d.requests()
	if len(q) != 2 {
		t.Fatalf("%d requests, want 2: %v", len(q), q)
	}
	if got := q[1].Get("exclude"); got != "dead1,dead2,dead3" {
		t.Fatalf("second request exclude = %q, want dead1,dead2,dead3", got)
	}
	if len(connects) != 4 {
		t.Fatalf("%d connect attempts, want 4 (3 dead, 1 live)", len(connects))
	}
}

func TestDialSkipsFaultyReplicas(t *testing.T) {
	live := startEcho(t, "live")
	faults := map[string]func(w http.ResponseWriter, q url.Values){
		"503": func(w http.ResponseWriter, _ url.Values) {
			http.Error(w, `{"error":"no snapshot yet"}`, http.StatusServiceUnavailable)
		},
		"garbage":  func(w http.ResponseWriter, _ url.Values) { w.Write([]byte("<html>hijacked</html>")) },
		"bad addr": func(w http.ResponseWriter, _ url.Values) { writeAnswer(w, Server{"x", "no-port"}) },
		"empty id": func(w http.ResponseWriter, _ url.Values) { writeAnswer(w, Server{"", live.addr}) },
		"huge": func(w http.ResponseWriter, _ url.Values) {
			w.Write([]byte(`{"id":"` + strings.Repeat("a", maxBody) + `"}`))
		},
	}
	for name, fault := range faults {
		t.Run(name, func(t *testing.T) {
			bad := newFakeDispatcher(t, fault)
			good := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) { writeAnswer(w, live.server()) })
			var errs []error
			c := newTestClient(t, Config{
				Bootstrap: []string{bad.addr(), good.addr()},
				Rand:      noShuffle, // bad first
				Hooks: Hooks{OnDispatch: func(e DispatchEvent) {
					if e.Err != nil {
						errs = append(errs, e.Err)
					}
				}},
			})
			conn, ans, err := c.Dial(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if ans.Dispatcher != good.addr() || ans.ID != "live" {
				t.Fatalf("answer %+v, want live via the good replica", ans)
			}
			if len(errs) != 1 {
				t.Fatalf("dispatch errors = %v, want exactly one", errs)
			}
			t.Logf("reported: %v", errs[0])
		})
	}
}

func TestDialSlowAndRefusedReplicas(t *testing.T) {
	live := startEcho(t, "live")
	release := make(chan struct{})
	slow := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) { <-release })
	t.Cleanup(func() { close(release) }) // before slow.srv.Close (cleanups run last-in first-out)
	good := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) { writeAnswer(w, live.server()) })
	c := newTestClient(t, Config{
		Bootstrap:      []string{deadAddr(t), slow.addr(), good.addr()},
		Rand:           noShuffle,
		RequestTimeout: 200 * time.Millisecond,
	})
	start := time.Now()
	conn, ans, err := c.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	took := time.Since(start)
	if ans.Dispatcher != good.addr() {
		t.Fatalf("answer %+v, want the good replica", ans)
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Fatalf("Dial took %v; want about one RequestTimeout (200ms) for the slow replica", took)
	}
	// Both failed replicas are now demoted: the next Dial asks the good one
	// first and returns at once.
	start = time.Now()
	conn, ans, err = c.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if took := time.Since(start); took > 150*time.Millisecond || ans.Dispatcher != good.addr() {
		t.Fatalf("second Dial took %v via %s; want the good replica first", took, ans.Dispatcher)
	}
}

func TestDialDemotionExpires(t *testing.T) {
	live := startEcho(t, "live")
	var mu sync.Mutex
	failing := true
	flaky := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		writeAnswer(w, live.server())
	})
	good := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) { writeAnswer(w, live.server()) })
	clock := newFakeClock()
	c := newTestClient(t, Config{Bootstrap: []string{flaky.addr(), good.addr()}, Rand: noShuffle, Now: clock.Now, DemoteFor: 10 * time.Second})
	dial := func() string {
		conn, ans, err := c.Dial(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		return ans.Dispatcher
	}
	if got := dial(); got != good.addr() {
		t.Fatalf("first Dial via %s", got)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	clock.Advance(9 * time.Second)
	if got := dial(); got != good.addr() {
		t.Fatalf("flaky replica asked first while demoted")
	}
	clock.Advance(2 * time.Second)
	if got := dial(); got != flaky.addr() {
		t.Fatalf("demotion did not expire: Dial via %s", got)
	}
}

func TestDialFallsBackToCacheFile(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	d := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) { writeAnswer(w, a.server(), b.server()) })
	path := filepath.Join(t.TempDir(), "lkg.json")
	c := newTestClient(t, Config{Bootstrap: []string{d.addr()}, CachePath: path})
	conn, _, err := c.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()

	var f cacheFile
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &f); err != nil || len(f.Servers) != 2 || f.Servers[0] != a.server() {
		t.Fatalf("cache file %s: %v", raw, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("temp files left next to the cache: %v", ents)
	}

	// The whole dispatcher tier is gone and a is dead: a new client (an
	// application restart) reaches b through the file.
	deadDispatcher := d.addr()
	d.srv.Close()
	a.stop()
	var sources []Source
	c2 := newTestClient(t, Config{
		Bootstrap: []string{deadDispatcher}, CachePath: path,
		Hooks: Hooks{OnConnect: func(e ConnectEvent) { sources = append(sources, e.Source) }},
	})
	conn, ans, err := c2.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if ans.Source != SourceCache || ans.ID != "b" {
		t.Fatalf("answer %+v, want b from the cache", ans)
	}
	if got := roundTrip(t, conn, "x"); got != "b x" {
		t.Fatalf("echo %q", got)
	}
	if len(sources) != 2 || sources[0] != SourceCache {
		t.Fatalf("connect sources %v, want cache (a, refused), cache (b)", sources)
	}
}

func TestDialFallsBackToStatic(t *testing.T) {
	live := startEcho(t, "s")
	d := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) {
		http.Error(w, `{"error":"no healthy server: 2 registered, 0 eligible"}`, http.StatusServiceUnavailable)
	})
	c := newTestClient(t, Config{Bootstrap: []string{d.addr()}, Static: []string{deadAddr(t), live.addr}})
	conn, ans, err := c.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if ans.Source != SourceStatic || ans.Addr != live.addr {
		t.Fatalf("answer %+v, want the live static server", ans)
	}
}

func TestDialNoServer(t *testing.T) {
	c := newTestClient(t, Config{Bootstrap: []string{deadAddr(t), deadAddr(t)}, Static: []string{deadAddr(t)}})
	_, _, err := c.Dial(t.Context())
	if !errors.Is(err, ErrNoServer) {
		t.Fatalf("err = %v, want ErrNoServer", err)
	}
	if !strings.Contains(err.Error(), "2 dispatcher requests and 1 connects failed") {
		t.Fatalf("err = %v, want the counts", err)
	}
}

func TestDialHonoursContext(t *testing.T) {
	release := make(chan struct{})
	slow := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) { <-release })
	t.Cleanup(func() { close(release) })
	c := newTestClient(t, Config{Bootstrap: []string{slow.addr()}, RequestTimeout: 10 * time.Second, Static: []string{deadAddr(t)}})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := c.Dial(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Dial took %v after a 100ms deadline", took)
	}
}

func TestDialResolvesDispatcherName(t *testing.T) {
	live := startEcho(t, "live")
	d1 := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) { writeAnswer(w, live.server()) })
	host, port, _ := net.SplitHostPort(d1.addr())
	res := &fakeResolver{t: t, name: "dispatch.test"}
	// One record is dead (nothing listens on 127.0.0.3 at that port), one is
	// the fake dispatcher.
	res.set([]string{"127.0.0.3", host}, nil)
	clock := newFakeClock()
	var reported []error
	c := newTestClient(t, Config{
		Dispatcher: "dispatch.test:" + port, Resolver: res, Now: clock.Now, ResolveTTL: 30 * time.Second,
		Rand:  noShuffle, // dead record first
		Hooks: Hooks{OnError: func(err error) { reported = append(reported, err) }},
	})
	dial := func() Answer {
		t.Helper()
		conn, ans, err := c.Dial(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		return ans
	}
	if ans := dial(); ans.Dispatcher != d1.addr() {
		t.Fatalf("Dial via %q, want %q", ans.Dispatcher, d1.addr())
	}
	if n := res.lookups(); n != 1 {
		t.Fatalf("%d lookups", n)
	}
	dial()
	if n := res.lookups(); n != 1 {
		t.Fatalf("%d lookups within the TTL, want 1", n)
	}
	// After the TTL the name is resolved again; a failed lookup keeps the
	// previous records and is reported.
	clock.Advance(31 * time.Second)
	res.set(nil, errors.New("SERVFAIL"))
	if ans := dial(); ans.Dispatcher != d1.addr() {
		t.Fatalf("Dial with a failing resolver via %q", ans.Dispatcher)
	}
	if n := res.lookups(); n != 2 || len(reported) != 1 || !strings.Contains(reported[0].Error(), "SERVFAIL") {
		t.Fatalf("lookups %d, reported %v", n, reported)
	}
	// The failed lookup is retried within a second, not a TTL.
	clock.Advance(1100 * time.Millisecond)
	res.set([]string{host}, nil)
	dial()
	if n := res.lookups(); n != 3 {
		t.Fatalf("%d lookups, want a retry after the failure", n)
	}
	if got := c.resolveDispatcher(t.Context()); len(got) != 1 || got[0] != d1.addr() {
		t.Fatalf("records after renewal: %v", got)
	}
}

func TestDialSendsHostHeaderForDNSRecords(t *testing.T) {
	live := startEcho(t, "live")
	d := newFakeDispatcher(t, func(w http.ResponseWriter, _ url.Values) { writeAnswer(w, live.server()) })
	host, port, _ := net.SplitHostPort(d.addr())
	c := newTestClient(t, Config{Dispatcher: "dispatch.test:" + port, Resolver: &fakeResolver{t: t, name: "dispatch.test", addrs: []string{host}}})
	conn, _, err := c.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if got := d.hostHeaders(); len(got) != 1 || got[0] != "dispatch.test:"+port {
		t.Fatalf("Host headers = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"bootstrap", Config{Bootstrap: []string{"10.0.0.1:8080"}}, true},
		{"dns name", Config{Dispatcher: "dispatch.example.com"}, true},
		{"dns name and port", Config{Dispatcher: "dispatch.example.com:8080"}, true},
		{"static only", Config{Static: []string{"10.0.0.1:9000"}}, true},
		{"nothing", Config{}, false},
		{"bootstrap without port", Config{Bootstrap: []string{"10.0.0.1"}}, false},
		{"static port 0", Config{Static: []string{"10.0.0.1:0"}}, false},
		{"bad dispatcher port", Config{Dispatcher: "d:x"}, false},
		{"N too big", Config{Bootstrap: []string{"a:1"}, N: 11}, false},
		{"negative timeout", Config{Bootstrap: []string{"a:1"}, RequestTimeout: -1}, false},
		{"long key", Config{Bootstrap: []string{"a:1"}, Key: strings.Repeat("k", 257)}, false},
		{"ftp", Config{Bootstrap: []string{"a:1"}, Scheme: "ftp"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if _, err := New(tc.cfg); (err == nil) != tc.ok {
				t.Fatalf("New() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestCorruptCacheIsReportedAndIgnored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lkg.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	var reported []error
	c := newTestClient(t, Config{Static: []string{"127.0.0.1:1"}, CachePath: path, Hooks: Hooks{OnError: func(err error) { reported = append(reported, err) }}})
	if len(reported) != 1 || len(c.cache.servers()) != 0 {
		t.Fatalf("reported %v, cache %v", reported, c.cache.servers())
	}
}

func TestCacheRemember(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lkg.json")
	c, err := loadCache(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s := func(id, addr string) Server { return Server{id, addr} }
	steps := []struct {
		got  []Server
		want []Server
	}{
		{[]Server{s("a", "h:1"), s("b", "h:2")}, []Server{s("a", "h:1"), s("b", "h:2")}},
		{[]Server{s("b", "h:2"), s("a", "h:1")}, []Server{s("a", "h:1"), s("b", "h:2")}}, // known: unchanged
		{[]Server{s("c", "h:3")}, []Server{s("c", "h:3"), s("a", "h:1"), s("b", "h:2")}},
		{[]Server{s("a", "h:9")}, []Server{s("a", "h:9"), s("c", "h:3"), s("b", "h:2")}}, // a moved
	}
	for i, st := range steps {
		now = now.Add(cacheWriteEvery)
		if err := c.remember(st.got, now); err != nil {
			t.Fatal(err)
		}
		if got := c.servers(); !equalServers(got, st.want) {
			t.Fatalf("step %d: %v, want %v", i, got, st.want)
		}
		reloaded, err := loadCache(path)
		if err != nil || !equalServers(reloaded.servers(), st.want) {
			t.Fatalf("step %d: file holds %v (%v)", i, reloaded.servers(), err)
		}
	}
	// Within cacheWriteEvery of the last write the file waits; the next
	// answer after it, even a known one, writes the change.
	want := []Server{s("d", "h:4"), s("a", "h:9"), s("c", "h:3"), s("b", "h:2")}
	if err := c.remember([]Server{s("d", "h:4")}, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if reloaded, _ := loadCache(path); equalServers(reloaded.servers(), want) {
		t.Fatal("file rewritten within cacheWriteEvery of the last write")
	}
	if err := c.remember([]Server{s("d", "h:4")}, now.Add(cacheWriteEvery)); err != nil {
		t.Fatal(err)
	}
	if reloaded, _ := loadCache(path); !equalServers(reloaded.servers(), want) {
		t.Fatalf("file holds %v after the interval, want %v", reloaded.servers(), want)
	}
	var many []Server
	for i := range 40 {
		many = append(many, Server{ID: fmt.Sprintf("s%d", i), Addr: fmt.Sprintf("h:%d", 1000+i)})
	}
	_ = c.remember(many[:20], now)
	if n := len(c.servers()); n > cacheSize {
		t.Fatalf("cache holds %d servers, max %d", n, cacheSize)
	}
}

func equalServers(a, b []Server) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDialDemotesDeadReplicaEvenWithExcludes(t *testing.T) {
	live := startEcho(t, "live")
	good := newFakeDispatcher(t, func(w http.ResponseWriter, q url.Values) { answerExcluding(w, q, live.server()) })
	dead := deadAddr(t)
	var asked []string
	c := newTestClient(t, Config{Bootstrap: []string{dead, good.addr()}, Rand: noShuffle,
		Hooks: Hooks{OnDispatch: func(e DispatchEvent) { asked = append(asked, e.Endpoint) }}})
	for range 2 {
		conn, _, err := c.dialAvoiding(t.Context(), []string{"gone"}) // as the Reconnector does after a session
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	want := []string{dead, good.addr(), good.addr()}
	if strings.Join(asked, " ") != strings.Join(want, " ") {
		t.Fatalf("asked %v, want %v: the dead replica must be demoted after one failure", asked, want)
	}
}
