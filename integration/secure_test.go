package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tcpdispatch/tcpdispatch/etcdconn"
	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/internal/testpki"
)

// clusterPKI holds the certificates of a secure test cluster, all signed by
// one CA made for the test.
type clusterPKI struct {
	ca *testpki.CA
	// admin has CN root: once auth is on, etcd takes a client certificate's
	// CN as the user, so the test's own client acts as root.
	admin testpki.Pair
	// etcdctl is what c.etcdctl presents: admin until a test switches it.
	etcdctl testpki.Pair
	// keys is every private key issued, for the secret grep.
	keys [][]byte
}

func newClusterPKI(t testing.TB) *clusterPKI {
	p := &clusterPKI{ca: testpki.NewCA(t, "tcpdispatch-test")}
	p.admin = p.issue(t, "root")
	p.etcdctl = p.admin
	return p
}

func (p *clusterPKI) issue(t testing.TB, cn string) testpki.Pair {
	pair := p.ca.Issue(t, cn)
	p.keys = append(p.keys, pair.KeyPEM)
	return pair
}

// memberFlags are the replica's flags for client and peer mTLS.
func (p *clusterPKI) memberFlags(t testing.TB, name string) []string {
	m := p.issue(t, name)
	return []string{
		"--cert-file", m.CertFile, "--key-file", m.KeyFile, "--trusted-ca-file", p.ca.CertFile, "--client-cert-auth",
		"--peer-cert-file", m.CertFile, "--peer-key-file", m.KeyFile, "--peer-trusted-ca-file", p.ca.CertFile, "--peer-client-cert-auth",
	}
}

// etcdctlTLSFlags are etcdctl's flags for the certificate it presents.
func (c *cluster) etcdctlTLSFlags() []string {
	if c.pki == nil {
		return nil
	}
	return []string{"--cacert", c.pki.ca.CertFile, "--cert", c.pki.etcdctl.CertFile, "--key", c.pki.etcdctl.KeyFile}
}

// clientTLS is the TLS configuration of the test's own etcd clients: the
// admin certificate, or nil for a plaintext cluster.
func (c *cluster) clientTLS() *tls.Config {
	if c.pki == nil {
		return nil
	}
	cfg, err := transport.TLSInfo{CertFile: c.pki.admin.CertFile, KeyFile: c.pki.admin.KeyFile, TrustedCAFile: c.pki.ca.CertFile}.ClientConfig()
	if err != nil {
		c.t.Fatal(err)
	}
	return cfg
}

// secrets are the passwords of one secure test, random per run.
type secrets struct {
	root, replica, register string
}

func newSecrets() secrets {
	r := func() string {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		return "pw-" + hex.EncodeToString(b)
	}
	return secrets{root: r(), replica: r(), register: r()}
}

// roles are the least-privilege roles of docs/SECURITY.md under prefix:
// name → (permission, key prefix) grants.
func roles(prefix string) map[string][]struct {
	perm clientv3.PermissionType
	key  string
} {
	type grant = struct {
		perm clientv3.PermissionType
		key  string
	}
	return map[string][]grant{
		"tcpdispatch-replica":  {{clientv3.PermissionType(clientv3.PermReadWrite), prefix}},
		"tcpdispatch-operator": {{clientv3.PermissionType(clientv3.PermRead), prefix}, {clientv3.PermissionType(clientv3.PermReadWrite), prefix + "servers/"}, {clientv3.PermissionType(clientv3.PermReadWrite), prefix + "config/"}},
		"tcpdispatch-register": {{clientv3.PermissionType(clientv3.PermReadWrite), prefix + "servers/"}},
	}
}

// bootstrapAuth does with cli (etcd's root, by certificate) what
// docs/SECURITY.md tells an operator to do with etcdctl: the root user, the
// three roles, the users replica and register (passwords) and operator (no
// password: its certificate's CN authenticates it), then auth enable.
func bootstrapAuth(t testing.TB, cli *clientv3.Client, prefix string, s secrets) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must := func(what string, err error) {
		if err != nil {
			t.Fatalf("auth bootstrap: %s: %v", what, err)
		}
	}
	_, err := cli.UserAdd(ctx, "root", s.root)
	must("user add root", err)
	_, err = cli.UserGrantRole(ctx, "root", "root")
	must("grant root", err)
	for role, grants := range roles(prefix) {
		_, err = cli.RoleAdd(ctx, role)
		must("role add "+role, err)
		for _, g := range grants {
			_, err = cli.RoleGrantPermission(ctx, role, g.key, clientv3.GetPrefixRangeEnd(g.key), g.perm)
			must("grant "+role, err)
		}
	}
	users := []struct{ name, password, role string }{
		{"replica", s.replica, "tcpdispatch-replica"},
		{"register", s.register, "tcpdispatch-register"},
		{"operator", "", "tcpdispatch-operator"},
	}
	for _, u := range users {
		if u.password == "" {
			_, err = cli.UserAddWithOptions(ctx, u.name, "", &clientv3.UserAddOptions{NoPassword: true})
		} else {
			_, err = cli.UserAdd(ctx, u.name, u.password)
		}
		must("user add "+u.name, err)
		_, err = cli.UserGrantRole(ctx, u.name, u.role)
		must("grant "+u.name, err)
	}
	_, err = cli.AuthEnable(ctx)
	must("auth enable", err)
}

// secureClient dials endpoints with etcdconn, as the programs do.
func secureClient(t testing.TB, cfg etcdconn.Config) *clientv3.Client {
	t.Helper()
	cfg.DialTimeout = 3 * time.Second
	cli, err := etcdconn.Dial(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func tryPut(cli *clientv3.Client, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := cli.Put(ctx, key, "100")
	return err
}

// writePasswordFile writes pw into a 0600 file under dir.
func writePasswordFile(t testing.TB, dir, name, pw string) string {
	t.Helper()
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSecureCore runs the replicated-core behaviours on a three-replica
// cluster with client and peer mTLS and etcd auth on, every replica its
// own etcd user "replica" (password from the environment), operator writes
// through etcdctl with the operator's certificate and role, and checks
// what must be refused and that no secret reaches a log or an HTTP answer.
func TestSecureCore(t *testing.T) {
	s := newSecrets()
	c := startCluster(t, clusterOpts{replicas: 3, secure: true,
		env:   []string{etcdconn.PasswordEnv + "=" + s.replica},
		extra: append(slices.Clone(coreFlags), "--etcd-user", "replica", "--etcd-log-level", "debug")})
	start := time.Now()
	bootstrapAuth(t, c.cli, c.prefix, s)
	t.Logf("auth enabled %v after the cluster served writes", time.Since(start).Round(time.Millisecond))
	operator := c.pki.issue(t, "operator")
	register := c.pki.issue(t, "register")
	c.pki.etcdctl = operator // every etcdctl call below is the operator's
	endpoints := make([]string, len(c.replicas))
	for i, r := range c.replicas {
		endpoints[i] = r.client
	}
	wrongPassword := "wrong-" + s.replica
	asUser := func(user, pw string, pair testpki.Pair) etcdconn.Config {
		return etcdconn.Config{Endpoints: endpoints, CACert: c.pki.ca.CertFile, Cert: pair.CertFile, Key: pair.KeyFile, User: user, Password: etcdconn.Secret(pw)}
	}

	t.Run("refused", func(t *testing.T) {
		other := testpki.NewCA(t, "other")
		stranger := other.Issue(t, "root")
		plain := make([]string, len(endpoints))
		for i, ep := range endpoints {
			plain[i] = strings.Replace(ep, "https://", "http://", 1)
		}
		if err := tryPut(secureClient(t, etcdconn.Config{Endpoints: plain, User: "replica", Password: etcdconn.Secret(s.replica)}), c.prefix+"servers/x/weight"); err == nil {
			t.Error("a plaintext client was served")
		}
		if err := tryPut(secureClient(t, etcdconn.Config{Endpoints: endpoints, CACert: c.pki.ca.CertFile, Cert: stranger.CertFile, Key: stranger.KeyFile}), c.prefix+"servers/x/weight"); err == nil {
			t.Error("a client certificate of another CA was accepted")
		}
		if err := tryPut(secureClient(t, asUser("replica", wrongPassword, operator)), c.prefix+"servers/x/weight"); !errors.Is(err, rpctypes.ErrAuthFailed) {
			t.Errorf("wrong password: %v, want %v", err, rpctypes.ErrAuthFailed)
		}
		if out, err := c.tryEtcdctl("--cert", stranger.CertFile, "--key", stranger.KeyFile, "put", c.prefix+"config/strategy", "hash"); err == nil {
			t.Errorf("etcdctl with another CA's certificate was served: %s", out)
		}
	})

	t.Run("least privilege", func(t *testing.T) {
		op := secureClient(t, etcdconn.Config{Endpoints: endpoints, CACert: c.pki.ca.CertFile, Cert: operator.CertFile, Key: operator.KeyFile})
		reg := secureClient(t, asUser("register", s.register, register))
		rep := secureClient(t, asUser("replica", s.replica, register))
		for _, tc := range []struct {
			who  string
			cli  *clientv3.Client
			key  string
			okay bool
		}{
			{"operator", op, c.prefix + "servers/x/weight", true},
			{"operator", op, c.prefix + "config/strategy-test", true},
			{"operator", op, c.prefix + "health/x", false},
			{"operator", op, c.prefix + "election/x", false},
			{"register", reg, c.prefix + "servers/x/addr", true},
			{"register", reg, c.prefix + "config/strategy", false},
			{"register", reg, c.prefix + "health/x", false},
			{"replica", rep, c.prefix + "health/test", true},
			{"replica", rep, "/elsewhere/x", false},
		} {
			err := tryPut(tc.cli, tc.key)
			if tc.okay && err != nil {
				t.Errorf("%s put %s: %v", tc.who, tc.key, err)
			}
			if !tc.okay && !errors.Is(err, rpctypes.ErrPermissionDenied) {
				t.Errorf("%s put %s: %v, want permission denied", tc.who, tc.key, err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := op.Get(ctx, c.prefix, clientv3.WithPrefix()); err != nil {
			t.Errorf("operator reads the prefix: %v", err)
		}
		if _, err := reg.Get(ctx, c.prefix+"health/", clientv3.WithPrefix()); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("register reads health/: %v, want permission denied", err)
		}
		_, err := c.cli.Delete(ctx, c.prefix+"servers/x", clientv3.WithPrefix())
		if err == nil {
			_, err = c.cli.Delete(ctx, c.prefix+"health/test")
		}
		if err == nil {
			_, err = c.cli.Delete(ctx, c.prefix+"config/strategy-test")
		}
		if err != nil {
			t.Fatal(err)
		}
	})

	replicatedCore(t, c)

	t.Run("push registration with the register role", func(t *testing.T) {
		addr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
		pw := writePasswordFile(t, c.dir, "register.pw", s.register)
		p := newProc(t, c.dir, "push1", "tcpserver", "--listen", addr, "--id", "push1", "--register-ttl", "2s",
			"--register-etcd", strings.Join(endpoints, ","), "--etcd-cacert", c.pki.ca.CertFile,
			"--etcd-cert", register.CertFile, "--etcd-key", register.KeyFile, "--etcd-user", "register", "--etcd-password-file", pw)
		p.start()
		eventually(t, 20*time.Second, "push1 served by every replica", func() error { return c.servedBy(c.replicas, "push1") })
		p.stop()
		c.waitNotServed(t, "push1", 10*time.Second)
	})

	t.Run("no secret in any log or HTTP answer", func(t *testing.T) {
		needles := map[string]string{"root password": s.root, "replica password": s.replica,
			"register password": s.register, "wrong password": wrongPassword}
		for i, k := range c.pki.keys {
			for j, line := range bytes.Split(k, []byte("\n")) {
				if len(line) >= 32 && !bytes.HasPrefix(line, []byte("-----")) {
					needles[fmt.Sprintf("key %d line %d", i, j)] = string(line)
				}
			}
		}
		var haystacks []string
		logs, _ := filepath.Glob(filepath.Join(c.dir, "*.log"))
		haystacks = append(haystacks, logs...)
		for _, r := range c.replicas {
			for _, path := range []string{"/v1/status", "/v1/servers", "/metrics", "/get-tcp-ip?bad=%zz", "/v1/nope"} {
				resp, err := httpClient.Get(r.http + path)
				if err != nil {
					t.Fatalf("GET %s%s: %v", r.http, path, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				f := filepath.Join(c.dir, fmt.Sprintf("http-%s%s.out", r.name, strings.NewReplacer("/", "_", "?", "_").Replace(path)))
				if err := os.WriteFile(f, b, 0o600); err != nil {
					t.Fatal(err)
				}
				haystacks = append(haystacks, f)
			}
		}
		var scanned int
		for _, h := range haystacks {
			b, err := os.ReadFile(h)
			if err != nil {
				t.Fatal(err)
			}
			scanned += len(b)
			for what, n := range needles {
				if bytes.Contains(b, []byte(n)) {
					t.Errorf("%s leaked into %s", what, filepath.Base(h))
				}
			}
		}
		// Control: the scan sees what the logs do hold (the password
		// file's path is on push1's command line).
		if b, _ := os.ReadFile(filepath.Join(c.dir, "push1.log")); !bytes.Contains(b, []byte(filepath.Join(c.dir, "register.pw"))) {
			t.Error("control failed: push1.log does not name its password file")
		}
		t.Logf("scanned %d files (%d process logs), %d bytes, for %d secrets", len(haystacks), len(logs), scanned, len(needles))
		if len(logs) < 5 || scanned < 100_000 {
			t.Errorf("too little scanned to mean anything: %d logs, %d bytes", len(logs), scanned)
		}
	})
}

// TestSecureExternalEtcd runs two replicas with --etcd-endpoints against a
// separately started etcd with client mTLS and auth on.
func TestSecureExternalEtcd(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "external")
	srv := ca.Issue(t, "etcd")
	m := etcdtest.Start(t, etcdtest.WithClientTLS(srv.CertFile, srv.KeyFile, ca.CertFile))
	s := newSecrets()
	c := &cluster{t: t, dir: dir, prefix: "/tcpdispatch/", pki: &clusterPKI{ca: ca, admin: ca.Issue(t, "root")}}
	c.pki.etcdctl = ca.Issue(t, "operator")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: c.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	c.cli = cli
	bootstrapAuth(t, cli, c.prefix, s)

	replicaCert := ca.Issue(t, "replica-client")
	pw := writePasswordFile(t, dir, "replica.pw", s.replica)
	ports := freePorts(t, 2)
	for i, port := range ports {
		name := fmt.Sprintf("x%d", i+1)
		r := &replica{http: fmt.Sprintf("http://127.0.0.1:%d", port), client: m.ClientURL}
		r.proc = newProc(t, dir, name, "dispatcher", append([]string{"--name", name,
			"--listen-http", strings.TrimPrefix(r.http, "http://"), "--etcd-endpoints", m.ClientURL,
			"--etcd-cacert", ca.CertFile, "--etcd-cert", replicaCert.CertFile, "--etcd-key", replicaCert.KeyFile,
			"--etcd-user", "replica", "--etcd-password-file", pw}, coreFlags...)...)
		r.start()
		c.replicas = append(c.replicas, r)
	}
	s1, s2 := c.startTCPServer("tcp1"), c.startTCPServer("tcp2")
	c.etcdctl("put", c.prefix+"servers/tcp1/addr", s1.addr) // the operator's certificate and role
	c.etcdctl("put", c.prefix+"servers/tcp2/addr", s2.addr)
	c.etcdctl("put", c.prefix+"servers/tcp2/weight", "300")
	c.waitEligible(c.replicas, 2)
	old := c.waitLeader(t, c.replicas)
	for _, r := range c.replicas {
		counts := map[string]int{}
		for range 400 {
			p, _, err := getTCPIP(r.http, "")
			if err != nil {
				t.Fatal(err)
			}
			counts[p.ID]++
		}
		for id, want := range map[string]float64{"tcp1": 100, "tcp2": 300} {
			if got := float64(counts[id]); got < 0.9*want || got > 1.1*want {
				t.Errorf("%s: %s got %v of 400 calls, want %v ±10%%", r.name, id, got, want)
			}
		}
	}
	// The standby takes over with its own authenticated session.
	old.kill()
	killed := time.Now()
	var survivor *replica
	for _, r := range c.replicas {
		if r != old {
			survivor = r
		}
	}
	c.replicas = []*replica{survivor}
	c.waitLeader(t, c.replicas)
	t.Logf("%s leads %v after SIGKILL of %s", survivor.name, time.Since(killed).Round(time.Millisecond), old.name)
	s2.kill()
	c.waitNotServed(t, "tcp2", 10*time.Second)
}
