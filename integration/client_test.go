package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/tcpdispatch/tcpdispatch/client"
)

// Acceptance tests of the client SDK (issue 4) against real replicas and
// tcp-servers. Helpers here are prefixed "cl" to stay apart from the
// shared harness.

// clientFlags probe fast so that a registered server is served quickly.
var clientFlags = []string{"--probe-interval", "250ms", "--probe-timeout", "200ms", "--rise", "1", "--fall", "2", "--shutdown-delay", "200ms"}

// clReconnect is the backoff of the test clients: a wait after a session of
// 1s or more is drawn from [10ms, 100ms).
var clReconnect = client.ReconnectConfig{
	BackoffBase: 100 * time.Millisecond,
	BackoffCap:  time.Second,
	MinDelay:    10 * time.Millisecond,
	ResetAfter:  time.Second,
}

func clHostPort(u string) string { return strings.TrimPrefix(u, "http://") }

func clBootstrap(rs []*replica) []string {
	var out []string
	for _, r := range rs {
		out = append(out, clHostPort(r.http))
	}
	return out
}

// clSession is one session of an echo client.
type clSession struct {
	ans         client.Answer
	start       time.Time // connected
	first, last time.Time // first and last echo
	echoes      int
	err         error // why it ended
}

// clEchoClient runs a Reconnector whose session sends a line every 50ms and
// checks the echo comes back from the server Dial named.
type clEchoClient struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan struct{}
	bounce chan struct{}

	dispatchErrs atomic.Int64 // failed dispatcher requests

	mu       sync.Mutex
	sessions []*clSession
}

func clStartEchoClient(t *testing.T, cfg client.Config) *clEchoClient {
	t.Helper()
	e := &clEchoClient{t: t, done: make(chan struct{}), bounce: make(chan struct{}, 1)}
	cfg.Hooks.OnDispatch = func(ev client.DispatchEvent) {
		if ev.Err != nil {
			e.dispatchErrs.Add(1)
		}
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.NewReconnector(c, clReconnect)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() {
		defer close(e.done)
		_ = r.Run(ctx, e.session)
	}()
	t.Cleanup(e.stop)
	return e
}

func (e *clEchoClient) session(ctx context.Context, conn net.Conn, ans client.Answer) error {
	s := &clSession{ans: ans, start: time.Now()}
	e.mu.Lock()
	e.sessions = append(e.sessions, s)
	e.mu.Unlock()
	end := func(err error) error {
		e.mu.Lock()
		s.err = err
		e.mu.Unlock()
		return err
	}
	in := bufio.NewReader(conn)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for seq := 1; ; seq++ {
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := fmt.Fprintf(conn, "seq %d\n", seq); err != nil {
			return end(err)
		}
		line, err := in.ReadString('\n')
		if err != nil {
			return end(err)
		}
		if want := fmt.Sprintf("%s seq %d\n", ans.ID, seq); line != want {
			return end(fmt.Errorf("echo %q, want %q", line, want))
		}
		now := time.Now()
		e.mu.Lock()
		if s.echoes == 0 {
			s.first = now
		}
		s.echoes++
		s.last = now
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-e.bounce:
			return end(errors.New("bounced by the test"))
		case <-tick.C:
		}
	}
}

// stop ends the client and waits for it; idempotent.
func (e *clEchoClient) stop() {
	e.cancel()
	<-e.done
}

// snapshot returns copies of the sessions so far.
func (e *clEchoClient) snapshot() []clSession {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]clSession, len(e.sessions))
	for i, s := range e.sessions {
		out[i] = *s
	}
	return out
}

// waitSession waits until session n (from 1) has at least echoes echoes.
func (e *clEchoClient) waitSession(n, echoes int, within time.Duration) clSession {
	e.t.Helper()
	var got clSession
	eventually(e.t, within, fmt.Sprintf("session %d with %d echoes", n, echoes), func() error {
		ss := e.snapshot()
		if len(ss) < n || ss[n-1].echoes < echoes {
			return fmt.Errorf("%d sessions: %+v", len(ss), ss)
		}
		got = ss[n-1]
		return nil
	})
	return got
}

// gap is the time without echoes between sessions a and b.
func clGap(a, b clSession) time.Duration { return b.first.Sub(a.last) }

// TestClientSurvivesDispatcherKill: acceptance (a). The replica that served
// the client's Dial is SIGKILLed: the session goes on untouched (it never
// depended on the dispatcher), and later reconnects use the live replicas.
func TestClientSurvivesDispatcherKill(t *testing.T) {
	c := startCluster(t, clusterOpts{replicas: 3, extra: clientFlags})
	tcp1, tcp2 := c.startTCPServer("tcp1"), c.startTCPServer("tcp2")
	clRegister(t, c, c.replicas, tcp1, tcp2)

	e := clStartEchoClient(t, client.Config{Bootstrap: clBootstrap(c.replicas), CachePath: filepath.Join(t.TempDir(), "lkg.json"), RequestTimeout: 500 * time.Millisecond})
	s1 := e.waitSession(1, 5, 10*time.Second)
	var used *replica
	for _, r := range c.replicas {
		if clHostPort(r.http) == s1.ans.Dispatcher {
			used = r
		}
	}
	if used == nil {
		t.Fatalf("session 1 came from %q, not a replica", s1.ans.Dispatcher)
	}
	killedAt := time.Now()
	used.kill()
	t.Logf("session 1 on %s via %s; SIGKILLed %s", s1.ans.ID, used.name, used.name)

	// The session continues on the same connection.
	time.Sleep(1500 * time.Millisecond)
	ss := e.snapshot()
	if len(ss) != 1 || ss[0].err != nil {
		t.Fatalf("the session broke when its dispatcher died: %+v", ss)
	}
	after := ss[0].echoes - s1.echoes
	if after < 20 || time.Since(ss[0].last) > 500*time.Millisecond {
		t.Fatalf("%d echoes in 1.5s after the kill (last %v ago), want a live session", after, time.Since(ss[0].last))
	}
	t.Logf("session 1 kept going: %d echoes in the %v after the kill", after, time.Since(killedAt).Round(time.Millisecond))

	// Reconnects from now on must go through the live replicas, whatever
	// order the shuffle gives. Each session outlives ResetAfter (22 echoes
	// take 1.1s) before the test ends it, so every reconnect waits a first
	// backoff step, < 100ms.
	var worst time.Duration
	for n := 2; n <= 4; n++ {
		e.waitSession(n-1, 22, 10*time.Second)
		e.bounce <- struct{}{}
		s := e.waitSession(n, 1, 10*time.Second)
		prev := e.snapshot()[n-2]
		if s.ans.Dispatcher == clHostPort(used.http) || s.ans.Source != client.SourceDispatcher {
			t.Fatalf("session %d: %+v", n, s.ans)
		}
		worst = max(worst, clGap(prev, s))
	}
	t.Logf("3 reconnects through the live replicas; longest gap %v; %d requests to the dead replica failed", worst.Round(time.Millisecond), e.dispatchErrs.Load())
	// Bound: the backoff (< 100ms), at most one refused request to the dead
	// replica, one good request, one connect, all on loopback; 1s leaves
	// room for a loaded machine.
	if worst > time.Second {
		t.Fatalf("longest reconnect gap %v, want < 1s", worst)
	}

	// A new client whose shuffle puts the dead replica first moves on at
	// once (loopback refuses the connection).
	bootstrap := []string{clHostPort(used.http)}
	for _, r := range c.replicas {
		if r != used {
			bootstrap = append(bootstrap, clHostPort(r.http))
		}
	}
	var failed atomic.Int64
	fresh, err := client.New(client.Config{Bootstrap: bootstrap, Rand: func(n int64) int64 { return n - 1 }, // keeps list order
		Hooks: client.Hooks{OnDispatch: func(ev client.DispatchEvent) {
			if ev.Err != nil {
				failed.Add(1)
			}
		}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	conn, ans, err := fresh.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	t.Logf("dead replica first: connected to %s via %s in %v after %d failed request", ans.ID, ans.Dispatcher, time.Since(start).Round(time.Millisecond), failed.Load())
	if failed.Load() != 1 || ans.Dispatcher != bootstrap[1] {
		t.Fatalf("want one failed request then the next replica: %+v", ans)
	}
}

// TestClientReconnectsAfterTCPServerKill: acceptance (b). The session's
// tcp-server is SIGKILLed; the client reconnects to another one within the
// backoff.
func TestClientReconnectsAfterTCPServerKill(t *testing.T) {
	c := startCluster(t, clusterOpts{replicas: 3, extra: clientFlags})
	servers := map[string]*tcpServer{}
	for _, id := range []string{"tcp1", "tcp2", "tcp3"} {
		servers[id] = c.startTCPServer(id)
	}
	clRegister(t, c, c.replicas, servers["tcp1"], servers["tcp2"], servers["tcp3"])

	e := clStartEchoClient(t, client.Config{Bootstrap: clBootstrap(c.replicas), RequestTimeout: 500 * time.Millisecond})
	for round := 1; round <= 2; round++ {
		// Let the session outlive ResetAfter, as a real one would.
		s := e.waitSession(round, 25, 15*time.Second)
		victim := servers[s.ans.ID]
		victim.kill()
		next := e.waitSession(round+1, 1, 10*time.Second)
		prev := e.snapshot()[round-1]
		gap := clGap(prev, next)
		t.Logf("round %d: SIGKILLed %s; reconnected to %s via %s after %v (ended by: %v)",
			round, s.ans.ID, next.ans.ID, next.ans.Dispatcher, gap.Round(time.Millisecond), prev.err)
		if next.ans.ID == s.ans.ID {
			t.Fatalf("reconnected to the killed server %s", s.ans.ID)
		}
		// Bound: the backoff after a session that lived >= ResetAfter is
		// < 100ms; then one request (the dead server is excluded) and a
		// connect on loopback. 1s leaves room for a loaded machine.
		if gap > time.Second {
			t.Fatalf("reconnect gap %v, want < 1s", gap)
		}
		delete(servers, s.ans.ID)
	}
}

// TestClientReconnectsFromCacheWhenDispatchersDown: acceptance (c). With
// every replica SIGKILLed, the client reconnects to a live tcp-server it
// learned earlier, from the last-known-good cache (in memory, and the file
// for a restarted application). Then, with nothing to reach at all, its
// retries stay within the backoff bound.
func TestClientReconnectsFromCacheWhenDispatchersDown(t *testing.T) {
	c := startCluster(t, clusterOpts{replicas: 3, extra: clientFlags})
	tcp1, tcp2 := c.startTCPServer("tcp1"), c.startTCPServer("tcp2")
	servers := map[string]*tcpServer{"tcp1": tcp1, "tcp2": tcp2}
	clRegister(t, c, c.replicas, tcp1, tcp2)

	cachePath := filepath.Join(t.TempDir(), "lkg.json")
	bootstrap := clBootstrap(c.replicas)
	e := clStartEchoClient(t, client.Config{Bootstrap: bootstrap, CachePath: cachePath, RequestTimeout: 500 * time.Millisecond})
	s1 := e.waitSession(1, 25, 15*time.Second)
	raw, err := os.ReadFile(cachePath)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Servers []client.Server `json:"servers"`
	}
	if err := json.Unmarshal(raw, &file); err != nil || len(file.Servers) != 2 {
		t.Fatalf("cache file %s (%v): want both servers", raw, err)
	}

	for _, r := range c.replicas {
		r.kill()
	}
	victim := servers[s1.ans.ID]
	victim.kill()
	s2 := e.waitSession(2, 5, 15*time.Second)
	gap := clGap(e.snapshot()[0], s2)
	t.Logf("all replicas and %s SIGKILLed; reconnected to %s from the %s after %v", s1.ans.ID, s2.ans.ID, s2.ans.Source, gap.Round(time.Millisecond))
	if s2.ans.Source != client.SourceCache || s2.ans.ID == s1.ans.ID {
		t.Fatalf("session 2: %+v, want the other server from the cache", s2.ans)
	}
	// Bound: backoff < 100ms, three refused requests, a refused and a good
	// connect, all on loopback.
	if gap > time.Second {
		t.Fatalf("reconnect gap %v, want < 1s", gap)
	}
	e.stop()

	// An application restarted now has only the file.
	fresh, err := client.New(client.Config{Bootstrap: bootstrap, CachePath: cachePath})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	conn, ans, err := fresh.Dial(ctx)
	cancel()
	if err != nil {
		t.Fatalf("Dial from the cache file: %v", err)
	}
	conn.Close()
	if ans.Source != client.SourceCache || ans.ID != s2.ans.ID {
		t.Fatalf("restarted client: %+v", ans)
	}

	// Nothing reachable: a client without a cache retries for 2s. Each dial
	// is at most 3 requests (one per replica); dials are MinDelay (10ms)
	// apart at the very least, so the hard bound is 3·(1+2s/10ms) = 603
	// requests; with the jitter actually drawn (waits U[0, min(1s,
	// 100ms·2^k)) ) 20 dials in 2s would need 16 U[0,1s) waits to sum under
	// 2s (probability < 1e-8), so we assert at most 3·20 = 60.
	var requests, dials atomic.Int64
	none, err := client.New(client.Config{Bootstrap: bootstrap, RequestTimeout: 500 * time.Millisecond,
		Hooks: client.Hooks{OnDispatch: func(client.DispatchEvent) { requests.Add(1) }}})
	if err != nil {
		t.Fatal(err)
	}
	rc := clReconnect
	rc.OnRetry = func(client.RetryEvent) { dials.Add(1) }
	r, err := client.NewReconnector(none, rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_ = r.Run(ctx, func(context.Context, net.Conn, client.Answer) error {
		t.Error("connected with every dispatcher and no cache")
		return nil
	})
	t.Logf("all dispatchers dead, no cache: %d dispatcher requests in %d failed dials over 2s (asserted <= 60, hard bound 603)", requests.Load(), dials.Load())
	if requests.Load() > 60 || requests.Load() > 3*dials.Load()+3 {
		t.Fatalf("%d requests, %d dials in 2s", requests.Load(), dials.Load())
	}
}

// TestClientDNSNameWithDeadReplica: acceptance (d). A DNS name resolves to
// three replicas, one of them dead; every Dial succeeds through the other
// two. The replicas listen on 127.0.0.2-4 with the same port, and a UDP DNS
// server in the test answers the name with the three addresses.
func TestClientDNSNameWithDeadReplica(t *testing.T) {
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	c, port := clStartClusterOnIPs(t, ips)
	tcp1, tcp2 := c.startTCPServer("tcp1"), c.startTCPServer("tcp2")
	clRegister(t, c, c.replicas, tcp1, tcp2)
	dead := c.replicas[0]
	dead.kill()

	dns := clStartDNS(t, "dispatch.test.", ips)
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dns.addr)
	}}
	name := fmt.Sprintf("dispatch.test:%d", port)

	// Twenty application instances each resolve the name and Dial once.
	hitDead := 0
	var slowest time.Duration
	for i := range 20 {
		var failed []string
		cl, err := client.New(client.Config{Dispatcher: name, Resolver: resolver, RequestTimeout: 500 * time.Millisecond,
			Hooks: client.Hooks{OnDispatch: func(ev client.DispatchEvent) {
				if ev.Err != nil {
					failed = append(failed, ev.Endpoint)
				}
			}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		start := time.Now()
		conn, ans, err := cl.Dial(ctx)
		took := time.Since(start)
		cancel()
		if err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
		conn.Close()
		slowest = max(slowest, took)
		if ans.Source != client.SourceDispatcher || strings.HasPrefix(ans.Dispatcher, ips[0]+":") {
			t.Fatalf("instance %d: %+v", i, ans)
		}
		for _, f := range failed {
			if !strings.HasPrefix(f, ips[0]+":") {
				t.Fatalf("instance %d: live replica %s failed", i, f)
			}
		}
		if len(failed) > 0 {
			hitDead++
		}
	}
	t.Logf("20 fresh clients: %d tried the dead record first, all connected; slowest Dial %v; %d DNS queries",
		hitDead, slowest.Round(time.Millisecond), dns.queries.Load())
	if dns.queries.Load() < 20 {
		t.Fatalf("%d DNS queries: the test resolver was not used", dns.queries.Load())
	}

	// A session through the name reconnects through the live replicas too.
	e := clStartEchoClient(t, client.Config{Dispatcher: name, Resolver: resolver, RequestTimeout: 500 * time.Millisecond})
	e.waitSession(1, 3, 10*time.Second)
	for n := 2; n <= 4; n++ {
		e.bounce <- struct{}{}
		s := e.waitSession(n, 1, 10*time.Second)
		if strings.HasPrefix(s.ans.Dispatcher, ips[0]+":") {
			t.Fatalf("session %d via the dead replica: %+v", n, s.ans)
		}
	}
}

// clDNS is a UDP DNS server answering A queries for one name.
type clDNS struct {
	addr    string
	queries atomic.Int64
}

func clStartDNS(t *testing.T, name string, ips []string) *clDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &clDNS{addr: pc.LocalAddr().String()}
	want := dnsmessage.MustNewName(name)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			resp, err := clAnswerDNS(buf[:n], want, ips)
			if err != nil {
				continue
			}
			d.queries.Add(1)
			_, _ = pc.WriteTo(resp, from)
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return d
}

// clAnswerDNS answers one query: the A records for want, no record (and no
// error) for its other types, NXDOMAIN for other names.
func clAnswerDNS(query []byte, want dnsmessage.Name, ips []string) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	if !strings.EqualFold(q.Name.String(), want.String()) {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if rh.RCode == dnsmessage.RCodeSuccess && q.Type == dnsmessage.TypeA {
		for _, ip := range ips {
			a := net.ParseIP(ip).To4()
			err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5},
				dnsmessage.AResource{A: [4]byte(a)})
			if err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// TestClientLeavesDrainingSelfRegisteredServer covers the server kit in
// bin/tcpserver: tcp2 registers itself in etcd (push mode) and serves its
// status document; on SIGTERM it deregisters at once, reports draining
// (503), refuses new connections and closes its connections within
// --drain-window, and the client's session moves to tcp1.
func TestClientLeavesDrainingSelfRegisteredServer(t *testing.T) {
	c := startCluster(t, clusterOpts{replicas: 3, extra: clientFlags})
	tcp1 := c.startTCPServer("tcp1")
	ports := freePorts(t, 2)
	addr2, status2 := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	var endpoints []string
	for _, r := range c.replicas {
		endpoints = append(endpoints, r.client)
	}
	tcp2 := &tcpServer{id: "tcp2", addr: addr2, proc: newProc(t, c.dir, "tcp2", "tcpserver", "--listen", addr2, "--id", "tcp2",
		"--status-listen", status2, "--max-conns", "100", "--drain-window", "2s",
		"--register-etcd", strings.Join(endpoints, ","), "--register-ttl", "10s")}
	tcp2.start()

	// tcp1 starts drained (weight 0), so the client lands on tcp2, which
	// nobody registered but itself.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := c.cli.Put(ctx, c.prefix+"servers/tcp1/weight", "0"); err != nil {
		t.Fatal(err)
	}
	clRegister(t, c, c.replicas, tcp1)
	e := clStartEchoClient(t, client.Config{Bootstrap: clBootstrap(c.replicas), RequestTimeout: 500 * time.Millisecond})
	s1 := e.waitSession(1, 25, 15*time.Second)
	if s1.ans.ID != "tcp2" {
		t.Fatalf("session 1 on %s, want the self-registered tcp2", s1.ans.ID)
	}
	var doc struct {
		Conns, MaxConns int
		Draining        bool
	}
	if err := getJSON("http://"+status2+"/status", &doc); err != nil || doc.Conns < 1 {
		t.Fatalf("status of tcp2: %+v %v", doc, err)
	}
	if _, err := c.cli.Put(ctx, c.prefix+"servers/tcp1/weight", "100"); err != nil {
		t.Fatal(err)
	}

	termAt := time.Now()
	tcp2.signal(syscall.SIGTERM)
	eventually(t, 2*time.Second, "tcp2 deregistered at once", func() error {
		resp, err := c.cli.Get(ctx, c.prefix+"servers/tcp2/addr")
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 0 {
			return errNotYet
		}
		return nil
	})
	deregistered := time.Since(termAt)
	resp, err := httpClient.Get("http://" + status2 + "/status")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Fatalf("status while draining: %d, want 503", resp.StatusCode)
		}
	} // else the drain already finished and the process is gone
	s2 := e.waitSession(2, 3, 10*time.Second)
	prev := e.snapshot()[0]
	if s2.ans.ID != "tcp1" {
		t.Fatalf("session 2 on %s, want tcp1", s2.ans.ID)
	}
	if !tcp2.wait(5 * time.Second) {
		t.Fatal("tcp2 did not exit after its drain window")
	}
	exited := time.Since(termAt)
	t.Logf("SIGTERM tcp2: deregistered after %v, session closed after %v, client on tcp1 after a %v gap, process exited after %v",
		deregistered.Round(time.Millisecond), prev.last.Sub(termAt).Round(time.Millisecond), clGap(prev, s2).Round(time.Millisecond), exited.Round(time.Millisecond))
	if prev.last.Sub(termAt) > 2500*time.Millisecond {
		t.Fatalf("session outlived the 2s drain window by %v", prev.last.Sub(termAt)-2*time.Second)
	}
	if clGap(prev, s2) > time.Second {
		t.Fatalf("reconnect gap %v", clGap(prev, s2))
	}
}
