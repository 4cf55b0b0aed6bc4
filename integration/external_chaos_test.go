package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startExternalCluster starts a three-member etcd cluster hosted by three
// processes of their own (dispatchers that embed a member and dispatch
// under another prefix, so they take no part), and n replicas that embed
// nothing and use it through --etcd-endpoints.
func startExternalCluster(t *testing.T, n int, extra ...string) *cluster {
	dir := t.TempDir()
	ports := freePorts(t, 3*3+n)
	var initial, endpoints []string
	for i := range 3 {
		initial = append(initial, fmt.Sprintf("e%d=http://127.0.0.1:%d", i+1, ports[3*i+1]))
		endpoints = append(endpoints, fmt.Sprintf("http://127.0.0.1:%d", ports[3*i]))
	}
	for i := range 3 {
		name := fmt.Sprintf("e%d", i+1)
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+1])
		host := newProc(t, dir, "etcd-"+name, "dispatcher", "--name", name, "--prefix", "/etcdhost/",
			"--listen-http", fmt.Sprintf("127.0.0.1:%d", ports[3*i+2]), "--data-dir", filepath.Join(dir, name+".etcd"),
			"--listen-client-urls", endpoints[i], "--advertise-client-urls", endpoints[i],
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "ext-"+filepath.Base(dir))
		host.start()
	}
	c := &cluster{t: t, dir: dir, prefix: "/tcpdispatch/"}
	for i := range n {
		name := fmt.Sprintf("x%d", i+1)
		r := &replica{http: fmt.Sprintf("http://127.0.0.1:%d", ports[9+i])}
		r.proc = newProc(t, dir, name, "dispatcher", append([]string{"--name", name,
			"--listen-http", strings.TrimPrefix(r.http, "http://"),
			"--etcd-endpoints", strings.Join(endpoints, ","), "--log-level", "debug"}, extra...)...)
		r.start()
		c.replicas = append(c.replicas, r)
	}
	c.connect(endpoints)
	return c
}

// TestChaosExternalEtcd runs the process faults against replicas that use
// an external etcd cluster (--etcd-endpoints) instead of embedded members.
func TestChaosExternalEtcd(t *testing.T) {
	c := startExternalCluster(t, 3, coreFlags...)
	ch := &chaos{cluster: c, t: t, servers: map[string]*tcpServer{}, registered: map[string]string{}}
	for _, id := range []string{"tcp1", "tcp2", "tcp3"} {
		s := c.startTCPServer(id)
		ch.servers[id] = s
		ch.registered[id] = s.addr
		ch.put(c.prefix+"servers/"+id+"/addr", s.addr)
	}
	c.waitEligible(c.replicas, 3)
	ch.round("external 1 SIGKILL leader", func(t *testing.T, rec *recorder) {
		took := ch.killLeader(rec, false)
		t.Logf("external 1: new leader's first fenced write %v after SIGKILL", took.Round(time.Millisecond))
		if took > chaosTTL+probeInterval+2*time.Second {
			t.Errorf("external 1: failover took %v", took)
		}
	})
	ch.round("external 3 SIGSTOP leader beyond TTL", func(t *testing.T, rec *recorder) {
		if !ch.stopLeader(rec, chaosTTL+2*time.Second) {
			t.Error("external 3: leadership did not change while the leader was stopped past its TTL")
		}
	})
}
