package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/proxy"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/tcpdispatch/tcpdispatch/client"
	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
)

// binDir holds bin/dispatcher and bin/tcpserver; TestMain builds them when
// TCPDISPATCH_BIN does not point at a build.
var binDir string

// proc is one process of the cluster under test, with its log kept in a
// file that is printed when the test fails.
type proc struct {
	t       testing.TB
	name    string
	bin     string
	args    []string
	logPath string

	// env is added to the process's environment (on top of the test's).
	env []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	runs int // how many times the process was started
}

// incarnation returns how many times the process was started.
func (p *proc) incarnation() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runs
}

func newProc(t testing.TB, dir, name, bin string, args ...string) *proc {
	p := &proc{t: t, name: name, bin: filepath.Join(binDir, bin), args: args, logPath: filepath.Join(dir, name+".log")}
	t.Cleanup(func() {
		p.stop()
		if b, err := os.ReadFile(p.logPath); err == nil && bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			t.Errorf("%s: the race detector reported a data race; see its log", p.name)
		}
		if t.Failed() {
			t.Logf("---- log of %s (tail, etcd's own lines left out) ----\n%s", p.name, logTail(p.logPath, 150))
		}
		if keep := os.Getenv("INTEGRATION_KEEP_LOGS"); keep != "" {
			// Whole logs of a passing run, for a closer look.
			if b, err := os.ReadFile(p.logPath); err == nil {
				_ = os.MkdirAll(keep, 0o755)
				_ = os.WriteFile(filepath.Join(keep, p.name+".log"), b, 0o644)
			}
		}
	})
	return p
}

// logTail returns the last n lines of a process log that are not etcd's
// own (all lines with TCPDISPATCH_FULL_LOGS set).
func logTail(path string, n int) string {
	b, _ := os.ReadFile(path)
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if os.Getenv("TCPDISPATCH_FULL_LOGS") != "" || !strings.Contains(line, "component=etcd") {
			keep = append(keep, line)
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "\n")
}

// start starts the process; its output is appended to its log file.
func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "==== start %s %s\n", p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	p.runs++
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// wait waits up to d for the process to exit and reports whether it did.
func (p *proc) wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
}

// stop ends the process: SIGTERM, then SIGKILL after 10s.
func (p *proc) stop() {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGTERM)
	if !p.wait(10 * time.Second) {
		p.kill()
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago,
// below the kernel's ephemeral range (see etcdtest.FreePorts).
func freePorts(t testing.TB, n int) []int { return etcdtest.FreePorts(t, n) }

// replica is one bin/dispatcher process.
type replica struct {
	*proc
	http, client, peer string // URLs the replica listens on
	// admin is its admin listener (--listen-admin) when the cluster
	// has them; adminURL is where its operator routes are.
	admin                    string
	clientAdv, peerAdv       string // URLs it advertises: proxies when the cluster has them
	clientProxy, peerProxy   proxy.Server
	clientShaper, peerShaper *shaper
	dataDir                  string
}

// clusterOpts configures a test cluster.
type clusterOpts struct {
	replicas int
	extra    []string // flags given to every replica
	// proxies puts a fault-injecting TCP proxy (etcd's pkg/v3/proxy, then
	// a shaper) in front of every member's client URL (between a replica's
	// own etcd client and its member) and peer URL (all raft traffic into
	// it).
	proxies bool
	// secure gives every member client and peer mTLS with certificates of
	// a CA made for the test (secure_test.go); the test's own client and
	// etcdctl then present an admin certificate.
	secure bool
	env    []string // environment given to every replica
	// admin gives every replica an admin listener (--listen-admin): the
	// operator routes and /debug/pprof/ move there (replica.admin).
	admin bool
}

// cluster is N replicas forming an N-member embedded etcd cluster.
type cluster struct {
	t        testing.TB
	dir      string
	replicas []*replica
	cli      *clientv3.Client // talks to the members directly, never via a proxy
	prefix   string
	dialOpts []grpc.DialOption // how the test reaches members (network namespaces)
	// sdkHTTP and sdkDial, when set, are how the client SDK reaches the
	// replicas and the tcp-servers (network namespaces).
	sdkHTTP *http.Client
	sdkDial func(ctx context.Context, network, addr string) (net.Conn, error)
	pki     *clusterPKI // certificates, when the cluster is secure
}

func startCluster(t testing.TB, o clusterOpts) *cluster {
	t.Helper()
	dir := t.TempDir()
	ports := freePorts(t, 8*o.replicas)
	c := &cluster{t: t, dir: dir, prefix: "/tcpdispatch/"}
	scheme := "http"
	if o.secure {
		scheme, c.pki = "https", newClusterPKI(t)
	}
	var initial []string
	for i := range o.replicas {
		p := ports[8*i : 8*i+8]
		r := &replica{
			http:   fmt.Sprintf("http://127.0.0.1:%d", p[0]),
			client: fmt.Sprintf("%s://127.0.0.1:%d", scheme, p[1]),
			peer:   fmt.Sprintf("%s://127.0.0.1:%d", scheme, p[2]),
		}
		if o.admin {
			r.admin = fmt.Sprintf("http://127.0.0.1:%d", p[7])
		}
		r.clientAdv, r.peerAdv = r.client, r.peer
		if o.proxies {
			r.clientAdv = fmt.Sprintf("http://127.0.0.1:%d", p[3])
			r.peerAdv = fmt.Sprintf("http://127.0.0.1:%d", p[4])
			// advertised → etcd's proxy (pause) → shaper (delay, loss) → member
			cShaper, pShaper := fmt.Sprintf("127.0.0.1:%d", p[5]), fmt.Sprintf("127.0.0.1:%d", p[6])
			r.clientShaper = startShaper(t, cShaper, strings.TrimPrefix(r.client, "http://"))
			r.peerShaper = startShaper(t, pShaper, strings.TrimPrefix(r.peer, "http://"))
			r.clientProxy = startProxy(t, r.clientAdv, "http://"+cShaper)
			r.peerProxy = startProxy(t, r.peerAdv, "http://"+pShaper)
		}
		c.replicas = append(c.replicas, r)
		initial = append(initial, fmt.Sprintf("d%d=%s", i+1, r.peerAdv))
	}
	var endpoints []string
	for i, r := range c.replicas {
		name := fmt.Sprintf("d%d", i+1)
		r.dataDir = filepath.Join(dir, name+".etcd")
		args := r.args(name, strings.Join(initial, ","), "it-"+filepath.Base(dir), o.extra...)
		if r.admin != "" {
			args = append(args, "--listen-admin", strings.TrimPrefix(r.admin, "http://"))
		}
		if c.pki != nil {
			args = append(args, c.pki.memberFlags(t, name)...)
		}
		r.proc = newProc(t, dir, name, "dispatcher", args...)
		r.env = o.env
		r.start()
		endpoints = append(endpoints, r.client)
	}
	c.connect(endpoints)
	return c
}

// args returns the flags that run r as the embedded member name of the
// cluster initial ("name=peerURL,...") with token, then extra.
func (r *replica) args(name, initial, token string, extra ...string) []string {
	return append([]string{
		"--name", name,
		"--listen-http", strings.TrimPrefix(r.http, "http://"),
		"--data-dir", r.dataDir,
		"--listen-client-urls", r.client, "--advertise-client-urls", r.clientAdv,
		"--listen-peer-urls", r.peer, "--initial-advertise-peer-urls", r.peerAdv,
		"--initial-cluster", initial,
		"--initial-cluster-token", token,
		"--log-level", "debug",
	}, extra...)
}

// connect gives the cluster a test client of etcd at endpoints, closed when
// the test ends, and waits until etcd accepts writes.
func (c *cluster) connect(endpoints []string) {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: c.dialOpts, TLS: c.clientTLS()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	c.cli = cli
	eventually(c.t, 30*time.Second, "etcd cluster serves writes", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := cli.Put(ctx, c.prefix+"probe-ready", "1")
		return err
	})
}

// startProxy forwards from to to until the test ends.
func startProxy(t testing.TB, from, to string) proxy.Server {
	t.Helper()
	fu, err := url.Parse(from)
	if err != nil {
		t.Fatal(err)
	}
	tu, err := url.Parse(to)
	if err != nil {
		t.Fatal(err)
	}
	p := proxy.NewServer(proxy.ServerConfig{Logger: zap.NewNop(), From: *fu, To: *tu, DialTimeout: time.Second})
	select {
	case <-p.Ready():
	case err := <-p.Error():
		t.Fatalf("proxy %s -> %s: %v", from, to, err)
	}
	// The proxy reports every failed dial and read on Error(); it blocks
	// until someone takes them.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-p.Error():
			case <-p.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		p.Close()
		<-done
	})
	return p
}

// tcpServer is one bin/tcpserver process.
type tcpServer struct {
	*proc
	id, addr string
}

func (c *cluster) startTCPServer(id string) *tcpServer {
	c.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePorts(c.t, 1)[0])
	s := &tcpServer{proc: newProc(c.t, c.dir, id, "tcpserver", "--listen", addr, "--id", id), id: id, addr: addr}
	s.start()
	eventually(c.t, 10*time.Second, id+" accepts", func() error {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	return s
}

// etcdctl runs the pinned etcdctl (go tool etcdctl) against the cluster
// and fails the test if it fails.
func (c *cluster) etcdctl(args ...string) string {
	c.t.Helper()
	out, err := c.tryEtcdctl(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// tryEtcdctl runs the pinned etcdctl against the cluster.
func (c *cluster) tryEtcdctl(args ...string) (string, error) {
	eps := map[string]bool{}
	var list []string
	for _, r := range c.replicas {
		if !eps[r.client] {
			eps[r.client] = true
			list = append(list, r.client)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append(append([]string{"tool", "etcdctl", "--endpoints", strings.Join(list, ","),
		"--dial-timeout", "3s", "--command-timeout", "5s"}, c.etcdctlTLSFlags()...), args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// nsClients maps the base URL of a replica that lives in a network
// namespace to an HTTP client that dials into that namespace.
var nsClients sync.Map

// clientFor returns the HTTP client that reaches url.
func clientFor(url string) *http.Client {
	var best *http.Client
	nsClients.Range(func(k, v any) bool {
		if strings.HasPrefix(url, k.(string)) {
			best = v.(*http.Client)
			return false
		}
		return true
	})
	if best != nil {
		return best
	}
	return httpClient
}

type pick struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// getTCPIP asks r for a server.
func getTCPIP(base, query string) (pick, int, error) {
	var p pick
	resp, err := clientFor(base).Get(base + "/get-tcp-ip" + query)
	if err != nil {
		return p, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return p, resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return p, resp.StatusCode, fmt.Errorf("get-tcp-ip: %d %s", resp.StatusCode, b)
	}
	return p, resp.StatusCode, json.Unmarshal(b, &p)
}

type status struct {
	Name          string `json:"name"`
	Leader        string `json:"leader"`
	IsLeader      bool   `json:"is_leader"`
	LeaderEpoch   int64  `json:"leader_epoch"`
	Revision      int64  `json:"revision"`
	SnapshotAgeMs int64  `json:"snapshot_age_ms"`
	Etcd          string `json:"etcd"`
	Eligible      int    `json:"eligible"`
}

func getJSON(url string, v any) error {
	resp, err := clientFor(url).Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// adminURL is where r serves its operator routes (/v1/status, /metrics,
// /debug/pprof/ when apart).
func (r *replica) adminURL() string {
	if r.admin != "" {
		return r.admin
	}
	return r.http
}

func (r *replica) status() (status, error) {
	var s status
	err := getJSON(r.adminURL()+"/v1/status", &s)
	return s, err
}

type serverView struct {
	ID       string    `json:"id"`
	Addr     string    `json:"addr"`
	Weight   int       `json:"weight"`
	Healthy  bool      `json:"healthy"`
	Eligible bool      `json:"eligible"`
	Since    time.Time `json:"since"`
	Errors   []string  `json:"errors"`
}

type serversView struct {
	Revision int64        `json:"revision"`
	Servers  []serverView `json:"servers"`
}

func (r *replica) servers() (serversView, error) {
	var v serversView
	err := getJSON(r.adminURL()+"/v1/servers", &v)
	return v, err
}

func (v serversView) find(id string) (serverView, bool) {
	for _, s := range v.Servers {
		if s.ID == id {
			return s, true
		}
	}
	return serverView{}, false
}

// leader returns the replica that reports is_leader, or nil.
func (c *cluster) leader(among []*replica) *replica {
	for _, r := range among {
		if s, err := r.status(); err == nil && s.IsLeader {
			return r
		}
	}
	return nil
}

// eventually polls f until it returns nil or d passes.
func eventually(t testing.TB, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")

// The cluster helpers the scenarios share: waiting for a state, reading
// a replica or etcd, registering servers, generating load.

// waitEligible waits until every replica in rs serves n eligible servers.
func (c *cluster) waitEligible(rs []*replica, n int) {
	c.t.Helper()
	eventually(c.t, 30*time.Second, fmt.Sprintf("%d eligible servers", n), func() error {
		for _, r := range rs {
			s, err := r.status()
			if err != nil {
				return err
			}
			if s.Eligible != n {
				return fmt.Errorf("%s: %d eligible", r.name, s.Eligible)
			}
		}
		return nil
	})
}

// waitNotServed polls every replica until none returns id.
func (c *cluster) waitNotServed(t *testing.T, id string, d time.Duration) {
	t.Helper()
	eventually(t, d, id+" not served", func() error {
		for _, r := range c.replicas {
			for range 12 {
				p, _, err := getTCPIP(r.http, "")
				if err != nil {
					return err
				}
				if p.ID == id {
					return fmt.Errorf("%s still returns %s", r.name, id)
				}
			}
		}
		return nil
	})
}

// servedBy reports an error unless every replica in rs returns id within a
// few calls.
func (c *cluster) servedBy(rs []*replica, id string) error {
	for _, r := range rs {
		seen := false
		for range 30 {
			p, _, err := getTCPIP(r.http, "")
			if err != nil {
				return err
			}
			seen = seen || p.ID == id
		}
		if !seen {
			return fmt.Errorf("%s does not return %s", r.name, id)
		}
	}
	return nil
}

func (c *cluster) waitLeader(t *testing.T, rs []*replica) *replica {
	t.Helper()
	var l *replica
	eventually(t, 15*time.Second, "a leader", func() error {
		if l = c.leader(rs); l == nil {
			return errNotYet
		}
		return nil
	})
	return l
}

func (c *cluster) mustStatus(t *testing.T, r *replica) status {
	t.Helper()
	s, err := r.status()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type healthRecord struct {
	Addr    string `json:"addr"`
	Healthy bool   `json:"healthy"`
	Epoch   int64  `json:"epoch"`
	Leader  string `json:"leader"`
}

// health reads a health record straight from etcd.
func (c *cluster) health(id string) (healthRecord, error) {
	var h healthRecord
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.prefix+"health/"+id)
	if err != nil {
		return h, err
	}
	if len(resp.Kvs) == 0 {
		return h, fmt.Errorf("no health record for %s", id)
	}
	return h, json.Unmarshal(resp.Kvs[0].Value, &h)
}

// moveRaftLeader makes r's embedded member the etcd raft leader.
func (c *cluster) moveRaftLeader(t testing.TB, r *replica) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.cli.Status(ctx, r.client)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader == st.Header.MemberId {
		return
	}
	leaderCli, err := clientv3.New(clientv3.Config{Endpoints: c.endpointOf(st.Leader), DialTimeout: 5 * time.Second,
		DialOptions: c.dialOpts, TLS: c.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer leaderCli.Close()
	if _, err := leaderCli.MoveLeader(ctx, st.Header.MemberId); err != nil {
		t.Fatalf("move raft leadership to %s: %v", r.name, err)
	}
	eventually(t, 5*time.Second, "raft leader moved", func() error {
		st, err := c.cli.Status(ctx, r.client)
		if err != nil {
			return err
		}
		if st.Leader != st.Header.MemberId {
			return errNotYet
		}
		return nil
	})
}

// endpointOf returns the client URL of the member with id.
func (c *cluster) endpointOf(id uint64) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, r := range c.replicas {
		st, err := c.cli.Status(ctx, r.client)
		if err == nil && st.Header.MemberId == id {
			return []string{r.client}
		}
	}
	return nil
}

// load calls get-tcp-ip on a set of replicas continuously and records
// every error.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
	total  atomic.Int64
}

func startLoad(rs []*replica) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for _, r := range rs {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				_, _, err := getTCPIP(r.http, "")
				l.total.Add(1)
				if err != nil {
					l.mu.Lock()
					l.errs = append(l.errs, fmt.Errorf("%s: %w", r.name, err))
					l.mu.Unlock()
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) stop() ([]error, int64) {
	l.cancel()
	l.wg.Wait()
	return l.errs, l.total.Load()
}

// put writes key (relative to the prefix) through the test's etcd client.
func (c *cluster) put(t testing.TB, key, value string) {
	t.Helper()
	if _, err := putRetry(c.cli, c.prefix+key, value); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// putRetry puts key=value as an operator's script would: it retries, for up
// to 15 s, the errors etcd returns while its raft leadership moves (a new
// dispatcher leader hands raft leadership away from its own member, see
// node/raftmove.go) or a member is starved: the put is then dropped or its
// outcome unknown, and writing the same value again is harmless.
func putRetry(cli *clientv3.Client, key, value string) (*clientv3.PutResponse, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := cli.Put(ctx, key, value)
		cancel()
		if err == nil || !transientEtcdError(err) || time.Now().After(deadline) {
			return resp, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// transientEtcdError reports whether err is one etcd returns while its
// raft leadership changes or a member is too slow.
func transientEtcdError(err error) bool {
	for _, e := range []error{rpctypes.ErrLeaderChanged, rpctypes.ErrNoLeader, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return true
		}
	}
	// etcd's "raft proposal dropped" has no client-side error value.
	return strings.Contains(err.Error(), "proposal dropped") || strings.Contains(err.Error(), "request timed out")
}

// sdkClient returns a client SDK instance that bootstraps from every
// replica, as an application would.
func (c *cluster) sdkClient() (*client.Client, error) {
	var boot []string
	for _, r := range c.replicas {
		boot = append(boot, strings.TrimPrefix(r.http, "http://"))
	}
	cfg := client.Config{Bootstrap: boot, CachePath: filepath.Join(c.dir, "sdk-cache.json"),
		RequestTimeout: time.Second, ConnectTimeout: time.Second}
	if c.sdkHTTP != nil {
		cfg.HTTPClient = c.sdkHTTP
	}
	if c.sdkDial != nil {
		cfg.DialContext = c.sdkDial
	}
	return client.New(cfg)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// clRegister registers tcp-servers with the cluster's etcd and waits until
// every replica in among serves all of them.
func clRegister(t *testing.T, c *cluster, among []*replica, servers ...*tcpServer) {
	t.Helper()
	for _, s := range servers {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := c.cli.Put(ctx, c.prefix+"servers/"+s.id+"/addr", s.addr)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range among {
		eventually(t, 20*time.Second, r.name+" serves every server", func() error {
			st, err := r.status()
			if err != nil {
				return err
			}
			if st.Eligible != len(servers) {
				return fmt.Errorf("%d eligible, want %d", st.Eligible, len(servers))
			}
			return nil
		})
	}
}

// clStartClusterOnIPs starts one replica per IP, each with its HTTP API on
// ip:P for one shared port P (etcd on 127.0.0.1), forming a cluster.
func clStartClusterOnIPs(t *testing.T, ips []string) (*cluster, int) {
	t.Helper()
	for _, ip := range ips {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("cannot bind %s (loopback aliases 127.0.0.0/8 are needed): %v", ip, err)
		}
		ln.Close()
	}
	dir := t.TempDir()
	var port int
	for try := 0; ; try++ {
		port = freePorts(t, 1)[0]
		if clPortFreeOn(ips, port) {
			break
		}
		if try == 10 {
			t.Fatal("no port free on every IP")
		}
	}
	ports := freePorts(t, 2*len(ips))
	c := &cluster{t: t, dir: dir, prefix: "/tcpdispatch/"}
	var initial []string
	for i, ip := range ips {
		r := &replica{
			http:   fmt.Sprintf("http://%s:%d", ip, port),
			client: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			peer:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		c.replicas = append(c.replicas, r)
		initial = append(initial, fmt.Sprintf("d%d=%s", i+1, r.peer))
	}
	var endpoints []string
	for i, r := range c.replicas {
		name := fmt.Sprintf("d%d", i+1)
		args := append([]string{
			"--name", name,
			"--listen-http", clHostPort(r.http),
			"--data-dir", filepath.Join(dir, name+".etcd"),
			"--listen-client-urls", r.client, "--advertise-client-urls", r.client,
			"--listen-peer-urls", r.peer, "--initial-advertise-peer-urls", r.peer,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", "cl-" + filepath.Base(dir),
		}, clientFlags...)
		r.proc = newProc(t, dir, name, "dispatcher", args...)
		r.start()
		endpoints = append(endpoints, r.client)
	}
	c.connect(endpoints)
	return c, port
}

func clPortFreeOn(ips []string, port int) bool {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for _, ip := range ips {
		l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
		if err != nil {
			return false
		}
		ls = append(ls, l)
	}
	return true
}
