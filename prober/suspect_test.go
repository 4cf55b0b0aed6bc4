package prober

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tcpdispatch/tcpdispatch"
	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/store"
)

func dialErr(syscallName string, errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError(syscallName, errno)}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	noRoute := func(string) error { return syscall.ENETUNREACH }
	routeOK := func(string) error { return nil }
	const timeout, slack = 100 * time.Millisecond, 50 * time.Millisecond
	tests := []struct {
		name    string
		err     error
		elapsed time.Duration
		lag     time.Duration
		route   func(string) error
		local   bool
	}{
		{"out of fds", dialErr("socket", syscall.EMFILE), 0, 0, nil, true},
		{"system out of fds", dialErr("socket", syscall.ENFILE), 0, 0, nil, true},
		{"no buffers", dialErr("connect", syscall.ENOBUFS), 0, 0, nil, true},
		{"no memory", dialErr("socket", syscall.ENOMEM), 0, 0, nil, true},
		{"no local port", dialErr("connect", syscall.EADDRNOTAVAIL), 0, 0, nil, true},
		{"local firewall", dialErr("connect", syscall.EPERM), 0, 0, nil, true},
		{"prohibit route", dialErr("connect", syscall.EACCES), 0, 0, nil, true},
		{"blackhole route", dialErr("connect", syscall.EINVAL), 0, 0, nil, true},
		{"refused", dialErr("connect", syscall.ECONNREFUSED), 0, 0, nil, false},
		{"reset", dialErr("connect", syscall.ECONNRESET), 0, 0, nil, false},
		{"no local route", dialErr("connect", syscall.ENETUNREACH), 0, 0, noRoute, true},
		{"host unreachable, local route", dialErr("connect", syscall.EHOSTUNREACH), 0, 0, noRoute, true},
		{"unreachable from a remote router", dialErr("connect", syscall.ENETUNREACH), 0, 0, routeOK, false},
		{"resolver timeout", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "timeout", Name: "a.example", IsTimeout: true}}, 0, 0, nil, true},
		{"resolver unreachable", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "server misbehaving", Name: "a.example", IsTemporary: true}}, 0, 0, nil, true},
		{"no such host", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "a.example", IsNotFound: true}}, 0, 0, nil, false},
		{"timeout on time", &net.OpError{Op: "dial", Err: timeoutErr{}}, timeout, 0, nil, false},
		{"timeout fired late: starved", &net.OpError{Op: "dial", Err: timeoutErr{}}, timeout + slack + time.Millisecond, 0, nil, true},
		{"round started late: starved", &net.OpError{Op: "dial", Err: timeoutErr{}}, timeout, slack + time.Millisecond, nil, true},
		{"context deadline", fmt.Errorf("status: %w", context.DeadlineExceeded), timeout, 0, nil, false},
		{"bad status document", fmt.Errorf("status: %w", tcpdispatch.ErrBadStatus), 0, 0, nil, false},
		{"nil", nil, 0, 0, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := classifier{timeout: timeout, slack: slack, routeCheck: tt.route}
			if tt.route == nil {
				c.routeCheck = func(string) error { t.Error("unexpected route check"); return nil }
			}
			if got := c.isLocal("10.1.2.3:80", tt.err, tt.elapsed, tt.lag); got != tt.local {
				t.Errorf("isLocal(%v) = %v; want %v", tt.err, got, tt.local)
			}
		})
	}
}

// TestCheckRealErrors probes real sockets: a refused connect is a verdict,
// a connect with no descriptor left is the prober's own fault.
func TestCheckRealErrors(t *testing.T) {
	p, _ := newTestProber(t, testConfig(), keyspace.Layout{}, nil)
	if ok, reason, local := p.check(context.Background(), deadAddr(t), 0); ok || local {
		t.Errorf("refused connect: ok %v local %v (%s); want a verdict", ok, local, reason)
	}
	live := listen(t, "")
	if ok, _, _ := p.check(context.Background(), live.addr, 0); !ok {
		t.Fatal("live listener failed its probe")
	}

	// Out of descriptors: this process may open none for a moment.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = 0
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	ok, reason, local := p.check(context.Background(), live.addr, 0)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if ok || !local {
		t.Errorf("connect without descriptors: ok %v local %v (%s); want the prober's own fault", ok, local, reason)
	}
}

// peerList is a fixed Peers.
type peerList []Peer

func (l peerList) Peers(context.Context) ([]Peer, error) { return l, nil }

// startPeers starts n replicas' opinion routes (real probers behind real
// HTTP servers) that check tokens against etcd like a replica does.
func startPeers(t *testing.T, e *env, n int) peerList {
	t.Helper()
	var out peerList
	for i := range n {
		name := fmt.Sprintf("peer%d", i+1)
		p, _ := newTestProber(t, testConfig(), e.keys, e.w)
		dir, err := NewDirectory(e.cli, e.keys, name, "http://127.0.0.1:1", time.Second, time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(p.OpinionHandler(name, dir, 2))
		t.Cleanup(srv.Close)
		out = append(out, Peer{Name: name, URL: srv.URL})
	}
	return out
}

// failFrom makes p's own connects fail with the errno stored in fail (0:
// connect normally): ECONNREFUSED looks like a dead server, EMFILE is the
// prober's own trouble.
func failFrom(p *Prober, fail *atomic.Int32) {
	p.dialer.Control = func(string, string, syscall.RawConn) error {
		if e := syscall.Errno(fail.Load()); e != 0 {
			return os.NewSyscallError("connect", e)
		}
		return nil
	}
}

// suspectEnv registers three live servers a, b, c.
func suspectEnv(t *testing.T) (*env, map[string]*server) {
	e := newEnv(t)
	srvs := map[string]*server{}
	var rev int64
	for _, id := range []string{"a", "b", "c"} {
		s := listen(t, "")
		srvs[id] = s
		rev = e.register(t, id, s.addr)
	}
	e.waitSnapshot(t, rev)
	return e, srvs
}

func waitUp(t *testing.T, e *env, ids ...string) {
	t.Helper()
	for _, id := range ids {
		waitHealth(t, e.cli, e.keys, id, "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })
	}
}

// TestSuspectRound walks the suspect logic with real listeners, a real
// etcd and real opinion routes of other probers.
func TestSuspectRound(t *testing.T) {
	tests := []struct {
		name string
		// peers: -1 none configured, 0 an empty list, >0 live opinion
		// routes; deadPeers adds routes nobody answers on.
		peers, deadPeers int
		// fault: 0 the servers a and b die; else the leader's connects fail
		// with this errno while every server is fine.
		fault syscall.Errno
		// want
		down       []string
		selfFault  bool
		heldMetric bool
	}{
		{name: "other replicas reach what the leader cannot: held, the leader gives up", peers: 2, fault: syscall.ECONNREFUSED, selfFault: true, heldMetric: true},
		{name: "the leader is out of descriptors: no verdict, the leader gives up", peers: 2, fault: syscall.EMFILE, selfFault: true},
		{name: "a real mass outage is confirmed by other replicas", peers: 2, down: []string{"a", "b"}},
		{name: "a lone replica applies its verdicts", peers: 0, down: []string{"a", "b"}},
		{name: "no second opinion configured: applied", peers: -1, down: []string{"a", "b"}},
		{name: "no other replica answers: held, the leader gives up", deadPeers: 2, selfFault: true, heldMetric: true},
		{name: "one of two answers: its opinion decides", peers: 1, deadPeers: 1, down: []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, srvs := suspectEnv(t)
			cfg := testConfig()
			cfg.SelfFaultRounds = 4
			p, _ := newTestProber(t, cfg, e.keys, e.w)
			var fail atomic.Int32
			failFrom(p, &fail)
			if tt.peers >= 0 {
				var peers peerList
				if tt.peers > 0 {
					peers = startPeers(t, e, tt.peers)
				}
				for i := range tt.deadPeers {
					peers = append(peers, Peer{Name: fmt.Sprintf("dead%d", i), URL: "http://" + deadAddr(t)})
				}
				p.UsePeers(peers)
			}
			wr := newFencedWriter(t, e.cli, "leader")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- p.Run(ctx, wr) }()
			waitUp(t, e, "a", "b", "c")
			etcdtest.WaitFor(t, 10*time.Second, "the snapshot to show a, b, c up", func() bool {
				s := e.w.Snapshot()
				return s.Lookup("a").State == "up" && s.Lookup("b").State == "up" && s.Lookup("c").State == "up"
			})

			if tt.fault != 0 {
				fail.Store(int32(tt.fault))
			} else {
				srvs["a"].close()
				srvs["b"].close()
			}
			var err error
			select {
			case err = <-errc:
			case <-time.After(time.Duration(3*cfg.SelfFaultRounds+2*cfg.Fall) * cfg.Interval):
				cancel()
				err = <-errc
			}
			if got := errors.Is(err, ErrSelfFault); got != tt.selfFault {
				t.Errorf("Run = %v; want ErrSelfFault %v", err, tt.selfFault)
			}
			if !tt.selfFault && err != nil {
				t.Errorf("Run = %v; want nil on cancellation", err)
			}
			for _, id := range []string{"a", "b", "c"} {
				h, _ := getHealth(t, e.cli, e.keys, id)
				wantDown := slices.Contains(tt.down, id)
				if h.Healthy == wantDown {
					t.Errorf("%s: record %+v; want down %v", id, h, wantDown)
				}
			}
			if held := testutil.ToFloat64(p.metrics.heldVerdicts); (held > 0) != tt.heldMetric {
				t.Errorf("held verdicts = %v; want some: %v", held, tt.heldMetric)
			}
		})
	}
}

// TestSuspectHoldKeepsUpVerdicts: while down-verdicts are held for lack of
// an answer, a server that comes up is still written up.
func TestSuspectHoldKeepsUpVerdicts(t *testing.T) {
	e, srvs := suspectEnv(t)
	cfg := testConfig()
	cfg.SelfFaultRounds = 1000
	// With d up, 2 of 4 must still be a suspect share.
	cfg.SuspectShare = 0.4
	p, _ := newTestProber(t, cfg, e.keys, e.w)
	p.UsePeers(peerList{{Name: "dead", URL: "http://" + deadAddr(t)}})
	wr := newFencedWriter(t, e.cli, "leader")
	runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })
	waitUp(t, e, "a", "b", "c")
	etcdtest.WaitFor(t, 10*time.Second, "the snapshot to show a, b, c up", func() bool {
		s := e.w.Snapshot()
		return s.Lookup("a").State == "up" && s.Lookup("b").State == "up" && s.Lookup("c").State == "up"
	})
	srvs["a"].close()
	srvs["b"].close()
	// A server that comes up meanwhile (a new addr: its first probe
	// decides) is written up.
	waitRounds(t, p, 3)
	d := listen(t, "")
	e.register(t, "d", d.addr)
	waitUp(t, e, "d")
	waitRounds(t, p, 5)
	for _, id := range []string{"a", "b"} {
		if h, _ := getHealth(t, e.cli, e.keys, id); !h.Healthy {
			t.Errorf("%s marked down with no replica to confirm: %+v", id, h)
		}
	}
}

func TestOpinionHandler(t *testing.T) {
	p, _ := newTestProber(t, testConfig(), keyspace.Layout{}, nil)
	h := p.OpinionHandler("r1", staticToken("s3cret"), 1).(*opinionHandler)
	live, dead := listen(t, ""), deadAddr(t)
	do := func(method, token, body string) (int, string) {
		req := httptest.NewRequest(method, OpinionPath, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, req)
		return rr.Code, rr.Body.String()
	}
	many := make([]string, MaxOpinionAddrs+1)
	for i := range many {
		many[i] = live.addr
	}
	tooMany, _ := json.Marshal(OpinionRequest{Addrs: many})
	tests := []struct {
		name, method, token, body string
		code                      int
	}{
		{"no token", http.MethodPost, "", `{"addrs":["` + live.addr + `"]}`, http.StatusUnauthorized},
		{"wrong token", http.MethodPost, "guess", `{"addrs":["` + live.addr + `"]}`, http.StatusUnauthorized},
		{"GET", http.MethodGet, "s3cret", "", http.StatusMethodNotAllowed},
		{"not JSON", http.MethodPost, "s3cret", "addrs", http.StatusBadRequest},
		{"empty list", http.MethodPost, "s3cret", `{"addrs":[]}`, http.StatusBadRequest},
		{"too many", http.MethodPost, "s3cret", string(tooMany), http.StatusBadRequest},
		{"bad addr", http.MethodPost, "s3cret", `{"addrs":["no-port"]}`, http.StatusBadRequest},
		{"ok", http.MethodPost, "s3cret", `{"addrs":["` + live.addr + `","` + dead + `"]}`, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(tt.method, tt.token, tt.body)
			if code != tt.code {
				t.Fatalf("%s: %d %s; want %d", tt.name, code, body, tt.code)
			}
			if code != http.StatusOK {
				return
			}
			var resp OpinionResponse
			if err := json.Unmarshal([]byte(body), &resp); err != nil {
				t.Fatal(err)
			}
			if resp.Replica != "r1" || len(resp.Opinions) != 2 || resp.Opinions[0].Result != OpinionUp || resp.Opinions[1].Result != OpinionDown {
				t.Errorf("answer %+v; want %s up, %s down", resp, live.addr, dead)
			}
		})
	}
	t.Run("too many in flight", func(t *testing.T) {
		h.sem <- struct{}{}
		defer func() { <-h.sem }()
		if code, body := do(http.MethodPost, "s3cret", `{"addrs":["`+live.addr+`"]}`); code != http.StatusTooManyRequests {
			t.Errorf("%d %s; want 429", code, body)
		}
	})
}

type staticToken string

func (s staticToken) Token(context.Context, bool) (string, error) { return string(s), nil }

// switchPeers lists its peers while on is set; it is called from one
// goroutine.
type switchPeers struct {
	peers peerList
	on    bool
}

func (s *switchPeers) Peers(context.Context) ([]Peer, error) {
	if s.on {
		return s.peers, nil
	}
	return nil, nil
}

// TestListPeersRemembers: a replica list that empties (announcement leases
// expired while etcd was slow) does not make the leader a lone replica for
// peerMemory.
func TestListPeersRemembers(t *testing.T) {
	now := time.Unix(1000, 0)
	cfg := testConfig()
	cfg.Now = func() time.Time { return now }
	p, _ := newTestProber(t, cfg, keyspace.Layout{}, nil)
	sp := &switchPeers{peers: peerList{{Name: "b", URL: "http://127.0.0.1:1"}}}
	p.UsePeers(sp)
	ctx := context.Background()
	if got, _ := p.listPeers(ctx); len(got) != 0 {
		t.Fatalf("never seen any: %v; want none", got)
	}
	sp.on = true
	if got, _ := p.listPeers(ctx); len(got) != 1 {
		t.Fatalf("listed: %v; want b", got)
	}
	sp.on = false
	now = now.Add(peerMemory - time.Second)
	if got, _ := p.listPeers(ctx); len(got) != 1 || got[0].Name != "b" {
		t.Errorf("list emptied within the memory: %v; want b remembered", got)
	}
	if !p.hasPeers(ctx) {
		t.Error("hasPeers = false within the memory")
	}
	now = now.Add(2 * time.Second)
	if got, _ := p.listPeers(ctx); len(got) != 0 {
		t.Errorf("list empty past the memory: %v; want none", got)
	}
}

// judgeEnv is suspectEnv with a prober whose suspect rounds ask two real
// peers, a fenced writer and the term's opinion token.
func judgeEnv(t *testing.T) (map[string]*server, *Prober, *fencedWriter, string) {
	e, srvs := suspectEnv(t)
	p, _ := newTestProber(t, testConfig(), e.keys, e.w)
	p.UsePeers(startPeers(t, e, 2))
	wr := newFencedWriter(t, e.cli, "leader")
	token, err := p.writeToken(context.Background(), wr)
	if err != nil {
		t.Fatal(err)
	}
	return srvs, p, wr, token
}

// TestJudgeSilentLinks: links that time out count as a failure before
// their notice probe's, so when a leader's links all go silent at once
// (its own route to the servers lost, while other replicas reach them)
// the batch is suspect and held, not applied as two failures each.
func TestJudgeSilentLinks(t *testing.T) {
	srvs, p, _, token := judgeEnv(t)
	ctx := context.Background()
	trackers := map[string]*tracker{}
	for id, s := range srvs {
		trackers[id] = &tracker{addr: s.addr, status: statusUp}
	}
	targets := []target{
		{id: "a", addr: srvs["a"].addr, notice: true, linkLost: true, reason: "i/o timeout"},
		{id: "b", addr: srvs["b"].addr, notice: true, linkLost: true, reason: "i/o timeout"},
	}
	fault, _ := p.judge(ctx, targets, trackers, token)
	if fault == "" {
		t.Errorf("judge found no fault of the leader's; want the contradicted verdicts counted against it")
	}
	for _, tg := range targets {
		if !tg.skip {
			t.Errorf("%s: verdict applied; want held, other replicas reach it", tg.id)
		}
	}
}

// TestJudgeRemembersHeld: the CI failure of 2026-12-02 (TestChaosLoop,
// route-loss-leader). A leader whose route to the fleet is lost has its
// first failures held by a suspect round; the next server's failure,
// arriving alone in a later batch, must still be judged against those
// held failures, not applied as if it were the only server failing.
func TestJudgeRemembersHeld(t *testing.T) {
	srvs, p, wr, token := judgeEnv(t)
	ctx := context.Background()
	tm := &term{p: p, w: wr, log: p.log, token: token, snap: &store.Snapshot{},
		trackers: map[string]*tracker{}, loads: map[string]*loadTracker{}, entries: map[string]*entry{},
		pending: map[string]store.Health{}, rb: newRebalancer()}
	for id, s := range srvs {
		tm.trackers[id] = &tracker{addr: s.addr, status: statusUp}
		tm.entries[id] = &entry{id: id, addr: s.addr}
		tm.loads[id] = &loadTracker{}
	}
	// c failed once already; a and b's links go silent together.
	tm.trackers["c"].streak = 1
	now := time.Now()
	tm.apply(ctx, []target{
		{id: "a", addr: srvs["a"].addr, notice: true, linkLost: true, timedOut: true, reason: "i/o timeout"},
		{id: "b", addr: srvs["b"].addr, notice: true, linkLost: true, timedOut: true, reason: "i/o timeout"},
	}, now)
	for _, id := range []string{"a", "b"} {
		if tr := tm.trackers[id]; tr.status != statusUp || !tr.held {
			t.Fatalf("%s after the first batch: status %v held %v; want up and held", id, tr.status, tr.held)
		}
	}
	// c's connect probe times out, alone in its batch.
	tm.apply(ctx, []target{{id: "c", addr: srvs["c"].addr, timedOut: true, reason: "dial tcp: i/o timeout"}}, now.Add(interval/3))
	if tr := tm.trackers["c"]; tr.status != statusUp {
		t.Errorf("c went down on the word of a leader whose other servers' failures were held; want held too")
	}
	if len(tm.pending) != 0 {
		t.Errorf("records to write %v; want none, every verdict held", tm.pending)
	}
	// A good result clears held.
	tm.apply(ctx, []target{{id: "a", addr: srvs["a"].addr, ok: true}}, now.Add(interval/2))
	if tm.trackers["a"].held {
		t.Errorf("a still held after a good probe")
	}
}
