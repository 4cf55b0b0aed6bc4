package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExternalEtcd runs two replicas with --etcd-endpoints against an etcd
// they do not embed: the embedded member of a separate process, which
// itself dispatches under another prefix so it takes no part.
func TestExternalEtcd(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 5)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	host := newProc(t, dir, "etcd-host", "dispatcher", "--name", "etcdhost", "--prefix", "/other/",
		"--listen-http", fmt.Sprintf("127.0.0.1:%d", ports[2]), "--data-dir", filepath.Join(dir, "host.etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL)
	host.start()

	c := &cluster{t: t, dir: dir, prefix: "/tcpdispatch/"}
	for i, port := range ports[3:] {
		name := fmt.Sprintf("x%d", i+1)
		r := &replica{http: fmt.Sprintf("http://127.0.0.1:%d", port), client: etcdURL}
		r.proc = newProc(t, dir, name, "dispatcher", append([]string{"--name", name,
			"--listen-http", strings.TrimPrefix(r.http, "http://"), "--etcd-endpoints", etcdURL}, coreFlags...)...)
		r.start()
		c.replicas = append(c.replicas, r)
	}
	s1, s2 := c.startTCPServer("tcp1"), c.startTCPServer("tcp2")
	eventually(t, 30*time.Second, "external etcd serves", func() error {
		_, err := c.tryEtcdctl("put", c.prefix+"servers/tcp1/addr", s1.addr)
		return err
	})
	c.etcdctl("put", c.prefix+"servers/tcp2/addr", s2.addr)
	c.waitEligible(c.replicas, 2)
	if l := c.waitLeader(t, c.replicas); l == nil {
		t.Fatal("no leader")
	}
	for _, r := range c.replicas {
		if err := c.servedBy([]*replica{r}, "tcp1"); err != nil {
			t.Fatal(err)
		}
		if err := c.servedBy([]*replica{r}, "tcp2"); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing was embedded: the external replicas opened no etcd ports.
	for _, r := range c.replicas {
		st := c.mustStatus(t, r)
		if st.Etcd != "ok" {
			t.Errorf("%s: etcd %q", r.name, st.Etcd)
		}
	}
}
