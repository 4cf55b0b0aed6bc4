package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/internal/testnet"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/node"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cluster is a real embedded etcd and a client to inspect it.
type cluster struct {
	t   *testing.T
	m   *etcdtest.Member
	cli *clientv3.Client
}

func newCluster(t *testing.T) *cluster {
	m := etcdtest.Start(t)
	return &cluster{t: t, m: m, cli: m.Client(t)}
}

// ctl runs dispatchctl against the cluster with environ (no process
// environment leaks in) and returns the exit code and outputs.
func (c *cluster) ctlEnv(environ []string, args ...string) (int, string, string) {
	c.t.Helper()
	var out, errOut syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, append([]string{"--endpoints", c.m.ClientURL}, args...), &out, &errOut, environ)
	return code, out.String(), errOut.String()
}

func (c *cluster) ctl(args ...string) (int, string, string) {
	c.t.Helper()
	return c.ctlEnv(nil, args...)
}

// ok runs dispatchctl and fails the test unless it exits 0.
func (c *cluster) ok(args ...string) string {
	c.t.Helper()
	code, out, errOut := c.ctl(args...)
	if code != exitOK {
		c.t.Fatalf("dispatchctl %q: exit %d, stderr %q", args, code, errOut)
	}
	return out
}

// okJSON runs dispatchctl -o json and decodes its output into v.
func (c *cluster) okJSON(v any, args ...string) {
	c.t.Helper()
	out := c.ok(append([]string{"-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("dispatchctl %q -o json: %v in %q", args, err, out)
	}
}

func (c *cluster) rev() int64 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.cli.Get(ctx, "any")
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.Header.Revision
}

// get returns the value of key and whether it exists.
func (c *cluster) get(key string) (string, bool) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.cli.Get(ctx, key)
	if err != nil {
		c.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

const p = keyspace.DefaultPrefix

func healthJSON(t *testing.T, addr string) string {
	b, err := json.Marshal(store.Health{Addr: addr, Healthy: true, Since: time.Now().Add(-time.Hour), CheckedAt: time.Now(), Epoch: 1, Leader: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServersLifecycle(t *testing.T) {
	c := newCluster(t)
	c.ok("servers", "add", "tcp1", "127.0.0.1:9001", "--weight", "50", "--status-url", "http://127.0.0.1:9101/status")
	c.ok("servers", "add", "tcp10", "127.0.0.1:9010")
	if v, _ := c.get(p + "servers/tcp1/weight"); v != "50" {
		t.Errorf("weight key %q", v)
	}
	if _, ok := c.get(p + "servers/tcp10/weight"); ok {
		t.Error("add without --weight wrote a weight")
	}
	etcdtest.Put(t, c.cli, p+"health/tcp1", healthJSON(t, "127.0.0.1:9001"))
	etcdtest.Put(t, c.cli, p+"health/tcp10", healthJSON(t, "127.0.0.1:9010"))

	var ls serversDoc
	c.okJSON(&ls, "servers", "ls")
	if len(ls.Servers) != 2 || ls.Servers[0].ID != "tcp1" || ls.Servers[0].Weight != 50 || ls.Servers[0].State != "up" ||
		ls.Servers[0].StatusURL != "http://127.0.0.1:9101/status" || ls.Servers[1].Weight != keyspace.DefaultWeight || !ls.Servers[1].Eligible {
		t.Fatalf("ls: %+v", ls)
	}

	var ch changeDoc
	c.okJSON(&ch, "servers", "weight", "tcp1", "300")
	if v, _ := c.get(p + "servers/tcp1/weight"); v != "300" || ch.Revision != c.rev() {
		t.Errorf("weight: key %q, answer %+v", v, ch)
	}

	before := time.Now().UTC().Truncate(time.Second)
	c.ok("servers", "drain", "tcp1", "--reason", "kernel upgrade", "--by", "ops@test")
	if v, _ := c.get(p + "servers/tcp1/drain"); v != "true" {
		t.Errorf("drain key %q", v)
	}
	raw, _ := c.get(p + "servers/tcp1/drain-reason")
	note := keyspace.ParseDrainNote(raw)
	if note.Reason != "kernel upgrade" || note.By != "ops@test" || note.At.Before(before) || note.At.After(time.Now()) {
		t.Errorf("drain-reason %q parsed as %+v", raw, note)
	}
	out := c.ok("servers", "ls")
	if !strings.Contains(out, "kernel upgrade (by ops@test") || !strings.Contains(out, "DRAIN") {
		t.Errorf("ls does not show the drain reason:\n%s", out)
	}
	c.okJSON(&ls, "servers", "ls")
	if s := ls.Servers[0]; !s.Draining || s.Eligible || s.DrainReason == nil || s.DrainReason.By != "ops@test" {
		t.Errorf("drained server in ls -o json: %+v", s)
	}
	// The default "by" is user@host.
	c.ok("servers", "drain", "tcp10")
	if raw, _ := c.get(p + "servers/tcp10/drain-reason"); !strings.Contains(keyspace.ParseDrainNote(raw).By, "@") {
		t.Errorf("default by in %q", raw)
	}

	c.ok("servers", "undrain", "tcp1")
	for _, k := range []string{"servers/tcp1/drain", "servers/tcp1/drain-reason"} {
		if _, ok := c.get(p + k); ok {
			t.Errorf("undrain left %s", k)
		}
	}

	// rm tcp1 deletes exactly tcp1's keys and health record, never tcp10's.
	c.okJSON(&ch, "servers", "rm", "tcp1")
	if len(ch.Deleted) != 4 { // addr, weight, status-url, health
		t.Errorf("rm deleted %q", ch.Deleted)
	}
	for _, k := range ch.Deleted {
		if strings.Contains(k, "tcp10") {
			t.Errorf("rm tcp1 deleted %s", k)
		}
	}
	for _, k := range []string{"servers/tcp10/addr", "servers/tcp10/drain", "health/tcp10"} {
		if _, ok := c.get(p + k); !ok {
			t.Errorf("rm tcp1 removed %s", k)
		}
	}
	if _, ok := c.get(p + "health/tcp1"); ok {
		t.Error("rm tcp1 left its health record")
	}
	out = c.ok("servers", "ls")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "tcp10 ") {
		t.Errorf("ls after rm:\n%s", out)
	}
}

// TestBadInputWritesNothing checks that every refused command exits 2 with
// a message and leaves the etcd revision where it was.
func TestBadInputWritesNothing(t *testing.T) {
	c := newCluster(t)
	c.ok("servers", "add", "tcp1", "127.0.0.1:9001")
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"servers", "add", "tcp 2", "127.0.0.1:1"}, `server id "tcp 2"`},
		{[]string{"servers", "add", "tcp2/x", "127.0.0.1:1"}, `not allowed`},
		{[]string{"servers", "add", "tcp2", "127.0.0.1"}, `want host:port`},
		{[]string{"servers", "add", "tcp2", "127.0.0.1:1", "--weight", "abc"}, `weight "abc"`},
		{[]string{"servers", "add", "tcp2", "127.0.0.1:1", "--weight", "20000"}, `must be in 0..10000`},
		{[]string{"servers", "add", "tcp2", "127.0.0.1:1", "--status-url", "ftp://127.0.0.1/x"}, `status-url`},
		{[]string{"servers", "add", "tcp1", "127.0.0.1:2"}, `already registered`},
		{[]string{"servers", "add", "tcp2"}, `accepts 2 arg`},
		{[]string{"servers", "weight", "tcp1", "-1"}, `unknown shorthand flag`},
		{[]string{"servers", "weight", "tcp1", "--", "-1"}, `weight -1: must be in 0..10000`},
		{[]string{"servers", "weight", "tcp1", "1.5"}, `not an integer`},
		{[]string{"servers", "weight", "tcp9", "5"}, `tcp9 is not registered`},
		{[]string{"servers", "drain", "tcp9"}, `tcp9 is not registered`},
		{[]string{"servers", "drain", "tcp1", "--reason", "a\x01b"}, `control characters`},
		{[]string{"servers", "undrain", "tcp9"}, `tcp9 is not registered`},
		{[]string{"servers", "rm", "tcp"}, `no keys under /tcpdispatch/servers/tcp/`},
		{[]string{"servers", "rm", "tcp1/"}, `not allowed`},
		{[]string{"servers", "rm", ""}, `must be 1..128 bytes`},
		{[]string{"servers", "bogus"}, `unknown command "bogus"`},
		{[]string{"strategy", "set", "fastest"}, `fastest`},
		{[]string{"config", "set", "slow-start", "forever"}, `slow-start "forever"`},
		{[]string{"config", "set", "slow_start", "1s"}, `unknown setting`},
		{[]string{"config", "set", "overload-recover", "0.95"}, `not below overload-threshold`},
		{[]string{"config", "get", "nope"}, `unknown setting`},
		{[]string{"config", "unset", "nope"}, `unknown setting`},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"servers", "ls", "--no-such-flag"}, `unknown flag`},
		{[]string{"-o", "yaml", "servers", "ls"}, `want table or json`},
		{[]string{"--prefix", "nope", "servers", "ls"}, `must start with /`},
		{[]string{"--cert", "x.pem", "servers", "ls"}, `--cert and --key`},
	} {
		before := c.rev()
		code, out, errOut := c.ctl(tc.args...)
		if code != exitRefused || !strings.Contains(errOut, tc.want) {
			t.Errorf("dispatchctl %q: exit %d, stderr %q, stdout %q; want exit 2 and %q", tc.args, code, errOut, out, tc.want)
		}
		if after := c.rev(); after != before {
			t.Errorf("dispatchctl %q wrote: revision %d -> %d", tc.args, before, after)
		}
	}
	// A refused write after an accepted one still leaves the first intact.
	if v, _ := c.get(p + "servers/tcp1/addr"); v != "127.0.0.1:9001" {
		t.Errorf("tcp1 addr %q", v)
	}
}

func TestStrategyAndConfig(t *testing.T) {
	c := newCluster(t)
	var s settingDoc
	c.okJSON(&s, "strategy", "get")
	if s.InForce != "wrr" || s.Set {
		t.Errorf("default strategy %+v", s)
	}
	c.ok("strategy", "set", "hash")
	c.okJSON(&s, "strategy", "get")
	if s.InForce != "hash" || s.Value != "hash" || !s.Set {
		t.Errorf("strategy after set: %+v", s)
	}
	c.ok("config", "set", "slow-start", "10s")
	c.ok("config", "set", "overload-threshold", "0.8")
	c.ok("config", "set", "overload-recover", "0.7")
	var all []settingDoc
	c.okJSON(&all, "config", "get")
	got := map[string]settingDoc{}
	for _, d := range all {
		got[d.Key] = d
	}
	if len(all) != 1+len(store.ConfigNames()) || got["slow-start"].InForce != "10s" || got["overload-recover"].InForce != "0.7" ||
		got["panic-threshold"].Set || got["panic-threshold"].InForce != "0.5" {
		t.Errorf("config get: %+v", all)
	}
	// A bad value written by etcdctl is shown with the replicas' verdict.
	etcdtest.Put(t, c.cli, p+"config/mass-removal", "sometimes")
	out := c.ok("config", "get")
	if !strings.Contains(out, `mass-removal "sometimes": want apply or hold`) {
		t.Errorf("config get does not show the bad value:\n%s", out)
	}
	c.ok("config", "unset", "slow-start")
	if _, ok := c.get(p + "config/slow-start"); ok {
		t.Error("unset left the key")
	}
	c.okJSON(&s, "config", "get", "slow-start")
	if s.Set || s.InForce != "30s" {
		t.Errorf("slow-start after unset: %+v", s)
	}
}

func TestWatch(t *testing.T) {
	c := newCluster(t)
	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"--endpoints", c.m.ClientURL, "watch"}, &out, &errOut, nil)
	}()
	etcdtest.WaitFor(t, 10*time.Second, "watch to start", func() bool { return strings.Contains(errOut.String(), "watching /tcpdispatch/") })
	c.ok("servers", "add", "tcp1", "127.0.0.1:9001")
	etcdtest.Put(t, c.cli, p+"servers/tcp1/weight", "lots")
	c.ok("servers", "rm", "tcp1")
	etcdtest.WaitFor(t, 10*time.Second, "the changes", func() bool {
		s := out.String()
		return strings.Contains(s, `PUT    servers/tcp1/addr = "127.0.0.1:9001"`) &&
			strings.Contains(s, `servers/tcp1/weight = "lots"  REJECTED BY REPLICAS: weight "lots": not an integer`) &&
			strings.Contains(s, `DELETE servers/tcp1/addr (was "127.0.0.1:9001")`)
	})
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("watch exit %d after interrupt, stderr %q", code, errOut.String())
	}

	// -o json: one object per line.
	var jout syncBuffer
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	var jerr syncBuffer
	go func() {
		done <- run(ctx, []string{"--endpoints", c.m.ClientURL, "-o", "json", "watch"}, &jout, &jerr, nil)
	}()
	etcdtest.WaitFor(t, 10*time.Second, "json watch to start", func() bool { return strings.Contains(jerr.String(), "watching") })
	etcdtest.Put(t, c.cli, p+"config/strategy", "nope")
	etcdtest.WaitFor(t, 10*time.Second, "a json event", func() bool { return strings.Contains(jout.String(), "\n") })
	var ev eventDoc
	if err := json.Unmarshal([]byte(strings.SplitN(jout.String(), "\n", 2)[0]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "PUT" || ev.Key != "config/strategy" || ev.Value != "nope" || ev.Invalid == "" || ev.Revision == 0 {
		t.Errorf("json event %+v", ev)
	}
	cancel()
	<-done
}

// TestStatus runs a real replica (in-process, on the test's etcd) and
// reads it through etcd and its HTTP status.
func TestStatus(t *testing.T) {
	c := newCluster(t)
	cfg := node.DefaultConfig()
	cfg.Name = "d1"
	cfg.EtcdEndpoints = []string{c.m.ClientURL}
	cfg.ListenHTTP = fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t))
	cfg.SnapshotFile = "-"
	cfg.LeaderTTL = time.Second
	cfg.API.LameDuck = 10 * time.Millisecond
	log := logrus.New()
	log.Out = os.Stderr
	log.Level = logrus.WarnLevel
	n, err := node.New(cfg, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replica: %v", err)
		}
	})
	url := "http://" + cfg.ListenHTTP
	c.ok("servers", "add", "tcp1", "127.0.0.1:9001")
	etcdtest.WaitFor(t, 20*time.Second, "the replica to lead and see tcp1", func() bool {
		resp, err := http.Get(url + "/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st replicaStatus
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.IsLeader && st.Leader == "d1" && st.Ready && st.Servers == 1
	})

	dead := "http://" + testnet.DeadAddr(t)
	var doc statusDoc
	c.okJSON(&doc, "status", "--dispatchers", url+","+dead)
	if doc.Leader != "d1" || doc.Epoch == 0 || len(doc.Candidates) != 1 || doc.Candidates[0].Name != "d1" ||
		doc.Candidates[0].CreateRevision != doc.Epoch || doc.Servers != 1 || len(doc.Etcd) != 1 || doc.Etcd[0].Error != "" {
		t.Errorf("status: %+v", doc)
	}
	if len(doc.Replicas) != 2 {
		t.Fatalf("replicas %+v", doc.Replicas)
	}
	r := doc.Replicas[0]
	if r.Name != "d1" || !r.IsLeader || r.LeaderEpoch != doc.Epoch || r.Revision == 0 || r.Etcd != "ok" || r.Error != "" {
		t.Errorf("replica %+v", r)
	}
	if doc.Replicas[1].Error == "" || !containsPrefix(doc.Problems, "replica "+dead+": unreachable") {
		t.Errorf("dead replica not reported: %+v, problems %q", doc.Replicas[1], doc.Problems)
	}
	out := c.ok("status", "--dispatchers", url)
	for _, want := range []string{"leader: d1 (epoch ", "REPLICA", "d1 (self)", "1 servers"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	// With etcd unreachable, status still shows the replicas, and exits 1.
	var sout, serr syncBuffer
	code := run(context.Background(), []string{"--endpoints", testnet.DeadAddr(t), "--dial-timeout", "200ms", "--command-timeout", "500ms",
		"status", "--dispatchers", url}, &sout, &serr, nil)
	if code != exitFailed || !strings.Contains(sout.String(), "d1 (self)") || !strings.Contains(sout.String(), "etcd: cannot read the keys") {
		t.Errorf("status with etcd down: exit %d\n%s\n%s", code, sout.String(), serr.String())
	}
	// The replica shows the drain reason in /v1/servers.
	c.ok("servers", "drain", "tcp1", "--reason", "disk swap", "--by", "ops@test")
	etcdtest.WaitFor(t, 10*time.Second, "drain_reason in /v1/servers", func() bool {
		resp, err := http.Get(url + "/v1/servers")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Servers []store.ServerInfo `json:"servers"`
		}
		return json.NewDecoder(resp.Body).Decode(&body) == nil && len(body.Servers) == 1 &&
			body.Servers[0].DrainReason != nil && body.Servers[0].DrainReason.Reason == "disk swap"
	})
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func TestEnvironmentFileVersionCompletion(t *testing.T) {
	c := newCluster(t)
	var out, errOut syncBuffer
	ctx := context.Background()
	// etcdctl's variable works on its own.
	if code := run(ctx, []string{"servers", "ls"}, &out, &errOut, []string{"ETCDCTL_ENDPOINTS=" + c.m.ClientURL}); code != 0 {
		t.Errorf("ETCDCTL_ENDPOINTS: exit %d, %s", code, errOut.String())
	}
	// So does the dispatcher's own variable, and it wins over etcdctl's.
	out = syncBuffer{}
	if code := run(ctx, []string{"-o", "json", "status"}, &out, &errOut, []string{
		"TCPDISPATCH_ETCD_ENDPOINTS=" + c.m.ClientURL, "ETCDCTL_ENDPOINTS=" + testnet.DeadAddr(t)}); code != 0 || !strings.Contains(out.String(), c.m.ClientURL) {
		t.Errorf("TCPDISPATCH_ETCD_ENDPOINTS: exit %d, %s %s", code, out.String(), errOut.String())
	}
	// A config file sets the prefix; the flag wins over it.
	file := filepath.Join(t.TempDir(), "ctl.yaml")
	if err := os.WriteFile(file, []byte("prefix: /other/\noutput: json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("--config", file, "servers", "add", "tcp1", "127.0.0.1:9001")
	if _, ok := c.get("/other/servers/tcp1/addr"); !ok {
		t.Error("--config prefix not used")
	}
	code, _, stderr := c.ctlEnv([]string{"TCPDISPATCH_PREFX=/x/"}, "servers", "ls")
	var cout syncBuffer
	if code != exitRefused || !strings.Contains(stderr, "TCPDISPATCH_PREFX") || !strings.Contains(stderr, "TCPDISPATCH_PREFIX") {
		t.Errorf("misspelled variable: exit %d, %q", code, stderr)
	}
	for _, args := range [][]string{{"--version"}, {"servers", "ls", "--version"}} {
		var vout syncBuffer
		if code := run(ctx, args, &vout, &errOut, nil); code != 0 || !strings.HasPrefix(vout.String(), "dispatchctl ") {
			t.Errorf("%q: exit %d, %q", args, code, vout.String())
		}
	}
	for _, shell := range []string{"bash", "zsh"} {
		cout = syncBuffer{}
		if code := run(ctx, []string{"completion", shell}, &cout, &errOut, nil); code != 0 || !strings.Contains(cout.String(), "dispatchctl") {
			t.Errorf("completion %s: exit %d", shell, code)
		}
	}
	// Dynamic completion lists the registered ids.
	cout = syncBuffer{}
	code = run(ctx, []string{"__complete", "--endpoints", c.m.ClientURL, "--prefix", "/other/", "servers", "drain", ""}, &cout, &errOut, nil)
	if code != 0 || !strings.HasPrefix(cout.String(), "tcp1\n") {
		t.Errorf("__complete: exit %d %q", code, cout.String())
	}
	// etcd down: exit 1, not 2.
	errOut = syncBuffer{}
	code = run(ctx, []string{"--endpoints", testnet.DeadAddr(t), "--dial-timeout", "200ms", "--command-timeout", "500ms", "servers", "ls"}, &out, &errOut, nil)
	if stderr = errOut.String(); code != exitFailed || stderr == "" {
		t.Errorf("dead etcd: exit %d, %q", code, stderr)
	}
}

func TestCredentials(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f        etcdFlags
		env      []string
		user, pw string
		err      bool
	}{
		{f: etcdFlags{user: "root:inline"}, user: "root", pw: "inline"},
		{f: etcdFlags{user: "root", passwordFile: pw}, env: []string{envPassword + "=env"}, user: "root", pw: "s3cret"},
		{f: etcdFlags{user: "root"}, env: []string{envEtcdctlPassword + "=second", envPassword + "=first"}, user: "root", pw: "first"},
		{f: etcdFlags{user: "root"}, env: []string{envEtcdctlPassword + "=etcdctl"}, user: "root", pw: "etcdctl"},
		{f: etcdFlags{user: "root"}, err: true},
		{f: etcdFlags{user: "root", passwordFile: pw + ".missing"}, err: true},
	} {
		cfg, err := c.f.clientConfig(c.env)
		if (err != nil) != c.err || err == nil && (cfg.Username != c.user || cfg.Password != c.pw) {
			t.Errorf("%+v %q: user %q pw %q err %v", c.f, c.env, cfg.Username, cfg.Password, err)
		}
	}
	if _, err := (&etcdFlags{cacert: "/nonexistent/ca.pem"}).clientConfig(nil); err == nil {
		t.Error("a missing CA file must be an error")
	}
}
