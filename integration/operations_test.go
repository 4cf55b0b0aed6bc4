package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"
)

// goTool runs a tool the module pins (go tool etcdctl, go tool etcdutl)
// and fails the test if it fails.
func goTool(t *testing.T, tool string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"tool", tool}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("go tool %s %s: %v\n%s", tool, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// newReplica returns a replica on fresh loopback ports, not started.
func (c *cluster) newReplica(name, dataDir string) *replica {
	p := freePorts(c.t, 3)
	r := &replica{
		http:    fmt.Sprintf("http://127.0.0.1:%d", p[0]),
		client:  fmt.Sprintf("http://127.0.0.1:%d", p[1]),
		peer:    fmt.Sprintf("http://127.0.0.1:%d", p[2]),
		dataDir: dataDir,
	}
	r.clientAdv, r.peerAdv = r.client, r.peer
	return r
}

// memberID returns the hex id of the etcd member called name.
func (c *cluster) memberID(t *testing.T, name string) string {
	t.Helper()
	for _, line := range strings.Split(c.etcdctl("member", "list"), "\n") {
		// id, status, name, peer URLs, client URLs, is learner
		f := strings.Split(line, ", ")
		if len(f) >= 3 && f[2] == name {
			return f[0]
		}
	}
	t.Fatalf("no member %s in:\n%s", name, c.etcdctl("member", "list"))
	return ""
}

// waitReplicaServes waits until r reports etcd ok and n eligible servers.
func waitReplicaServes(t *testing.T, r *replica, n int) {
	t.Helper()
	eventually(t, 30*time.Second, r.name+" serves", func() error {
		s, err := r.status()
		if err != nil {
			return err
		}
		if s.Etcd != "ok" || s.Eligible != n {
			return fmt.Errorf("etcd %s, %d eligible", s.Etcd, s.Eligible)
		}
		return nil
	})
}

// TestOperationsReplicaAndBackup runs docs/OPERATIONS.md's procedures on a
// real three-replica loopback cluster with the pinned etcdctl and etcdutl:
// backup with snapshot save, adding a replica (member add, then
// --initial-cluster-state existing), removing one (stop it, member remove),
// restoring the backup into a new cluster (etcdutl snapshot restore per
// member) and a rolling restart of that cluster.
func TestOperationsReplicaAndBackup(t *testing.T) {
	c := startCluster(t, clusterOpts{replicas: 3, extra: coreFlags})
	token := "it-" + filepath.Base(c.dir)
	tcp1, tcp2 := c.startTCPServer("tcp1"), c.startTCPServer("tcp2")
	c.etcdctl("put", c.prefix+"servers/tcp1/addr", tcp1.addr)
	c.waitEligible(c.replicas, 1)

	// Backup: a snapshot from one member, checked by etcdutl.
	backup := filepath.Join(c.dir, "backup.db")
	goTool(t, "etcdctl", "--endpoints", c.replicas[0].client, "snapshot", "save", backup)
	t.Log(goTool(t, "etcdutl", "snapshot", "status", backup, "--write-out", "table"))
	// Written after the backup: the restored cluster must not have it.
	c.etcdctl("put", c.prefix+"servers/tcp2/addr", tcp2.addr)
	c.waitEligible(c.replicas, 2)

	// Add a replica: member add prints the --initial-cluster to start it with.
	d4 := c.newReplica("d4", filepath.Join(c.dir, "d4.etcd"))
	// etcd refuses a voting member ("unhealthy cluster") until every member
	// has been connected for 5s; an operator retries, so does the test.
	var out string
	eventually(t, 30*time.Second, "member add", func() (err error) {
		out, err = c.tryEtcdctl("member", "add", "d4", "--peer-urls="+d4.peer)
		return err
	})
	m := regexp.MustCompile(`ETCD_INITIAL_CLUSTER="([^"]+)"`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("member add printed no ETCD_INITIAL_CLUSTER:\n%s", out)
	}
	d4.proc = newProc(t, c.dir, "d4", "dispatcher", append(d4.args("d4", m[1], token, coreFlags...),
		"--initial-cluster-state", "existing")...)
	d4.start()
	c.replicas = append(c.replicas, d4)
	waitReplicaServes(t, d4, 2)
	if list := c.etcdctl("member", "list"); strings.Count(list, ", started, ") != 4 {
		t.Fatalf("after member add, want 4 started members:\n%s", list)
	}

	// Remove a replica: stop it first (it resigns), then remove its member
	// from a live one, then delete its data dir.
	d1 := c.replicas[0]
	id := c.memberID(t, "d1")
	d1.stop()
	c.replicas = c.replicas[1:]
	c.etcdctl("member", "remove", id)
	if err := os.RemoveAll(d1.dataDir); err != nil {
		t.Fatal(err)
	}
	if list := c.etcdctl("member", "list"); strings.Count(list, ", started, ") != 3 || strings.Contains(list, ", d1, ") {
		t.Fatalf("after member remove, want d2, d3, d4:\n%s", list)
	}
	c.etcdctl("put", c.prefix+"servers/tcp2/weight", "200") // quorum of the new membership
	// The checks OPERATIONS.md runs after every step.
	for _, args := range [][]string{
		{"member", "list", "-w", "table"},
		{"endpoint", "status", "-w", "table"},
		{"endpoint", "health", "--cluster"},
		{"get", "--prefix", c.prefix + "election/", "--write-out=fields"},
	} {
		t.Logf("etcdctl %s:\n%s", strings.Join(args, " "), c.etcdctl(args...))
	}
	for _, r := range c.replicas {
		waitReplicaServes(t, r, 2)
	}

	// Restore: stop every replica, restore the snapshot into a new data dir
	// per member, start the replicas on them.
	for _, r := range c.replicas {
		r.stop()
	}
	var restored []*replica
	var initial []string
	for i := range 3 {
		name := fmt.Sprintf("r%d", i+1)
		r := c.newReplica(name, filepath.Join(c.dir, "restored", name+".etcd"))
		restored = append(restored, r)
		initial = append(initial, name+"="+r.peer)
	}
	for _, r := range restored {
		name := strings.TrimSuffix(filepath.Base(r.dataDir), ".etcd")
		goTool(t, "etcdutl", "snapshot", "restore", backup, "--name", name,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "restored-"+token,
			"--initial-advertise-peer-urls", r.peer, "--data-dir", r.dataDir)
		r.proc = newProc(t, c.dir, name, "dispatcher", r.args(name, strings.Join(initial, ","), "restored-"+token, coreFlags...)...)
	}
	for _, r := range restored {
		r.start()
	}
	c.replicas = restored
	for _, r := range restored {
		waitReplicaServes(t, r, 1)
		v, err := r.servers()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := v.find("tcp1"); !ok || len(v.Servers) != 1 {
			t.Fatalf("%s after restore: want tcp1 only (tcp2 came after the backup), got %+v", r.name, v.Servers)
		}
	}

	// Rolling restart: one replica at a time, the next only once the
	// restarted one is ready again; the others answer meanwhile.
	for i, r := range restored {
		r.signal(syscall.SIGTERM)
		if !r.wait(20 * time.Second) {
			t.Fatalf("%s did not stop", r.name)
		}
		for j, o := range restored {
			if j == i {
				continue
			}
			if p, _, err := getTCPIP(o.http, ""); err != nil || p.ID != "tcp1" {
				t.Fatalf("%s while %s restarts: %+v %v", o.name, r.name, p, err)
			}
		}
		r.start()
		eventually(t, 30*time.Second, r.name+" ready", func() error {
			if code := readyz(r.http); code != 200 {
				return fmt.Errorf("/readyz %d", code)
			}
			return nil
		})
		waitReplicaServes(t, r, 1)
	}
}

// TestComposeRegisterScript runs the one-shot registration script of
// deploy/docker-compose.yml (its etcdctl txn syntax, its loop) against a
// real etcd. The replica uses another prefix, so the hostnames the script
// registers (tcpN:9000, valid inside compose only) are never probed.
func TestComposeRegisterScript(t *testing.T) {
	b, err := os.ReadFile("../deploy/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Entrypoint []string `yaml:"entrypoint"`
			Command    []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	reg := f.Services["register"]
	if len(reg.Entrypoint) != 2 || reg.Entrypoint[0] != "/bin/sh" || len(reg.Command) != 1 {
		t.Fatalf("register: want entrypoint [/bin/sh -ec] and one script, got %q %q", reg.Entrypoint, reg.Command)
	}
	// Compose turns $$ into $; etcdctl is the pinned one.
	script := "etcdctl() { go tool etcdctl \"$@\"; }\n" + strings.ReplaceAll(reg.Command[0], "$$", "$")

	c := startCluster(t, clusterOpts{replicas: 1, extra: []string{"--prefix", "/compose-test/"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", reg.Entrypoint[1], script)
	cmd.Env = append(os.Environ(), "ETCDCTL_ENDPOINTS="+c.replicas[0].client)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("register script: %v\n%s", err, out)
	}
	got := c.etcdctl("get", "--prefix", "/tcpdispatch/")
	for i := 1; i <= 5; i++ {
		for _, kv := range []string{
			fmt.Sprintf("/tcpdispatch/servers/tcp%d/addr\ntcp%d:9000\n", i, i),
			fmt.Sprintf("/tcpdispatch/servers/tcp%d/status-url\nhttp://tcp%d:9100/status\n", i, i),
		} {
			if !strings.Contains(got, kv) {
				t.Errorf("register script did not write %q; etcd holds:\n%s", kv, got)
			}
		}
	}
	if strings.Contains(got, "/tcpdispatch/compose/ready") {
		t.Error("the readiness marker key was left behind")
	}
	if n := strings.Count(got, "/tcpdispatch/servers/"); n != 10 {
		t.Errorf("want 10 keys under /tcpdispatch/servers/, got %d:\n%s", n, got)
	}
}
