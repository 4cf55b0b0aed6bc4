package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

// netLab is a set of Linux network namespaces made for one test: a hub
// holding a bridge, and one namespace per replica joined to it by a veth
// pair. Cutting a replica's veth in the hub is a real network partition of
// that replica and its embedded etcd member: nothing crosses in either
// direction, and TCP sees silence, as in a real cut. The addresses used
// (10.77.0.0/24) exist only inside these namespaces.
type netLab struct {
	t      testing.TB
	prefix string
	hub    string
	nodes  []string // namespace per replica
}

// newNetLab builds the lab. It skips the test when not run as root (ip
// netns needs it; CI runs as root) and fails it when namespaces cannot be
// made as root.
func newNetLab(t testing.TB, n int) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("network-namespace scenarios need root for ip netns; running as uid %d", os.Geteuid())
	}
	l := &netLab{t: t, prefix: fmt.Sprintf("td%04x", rand.IntN(1<<16))}
	l.hub = l.prefix + "-hub"
	t.Cleanup(l.destroy)
	l.ip("netns", "add", l.hub)
	l.ip("-n", l.hub, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.hub, "addr", "add", "10.77.0.254/24", "dev", "br0")
	// tcp-servers live on their own subnet, routed through the hub, so a
	// replica can lose its route to them and keep its route to etcd.
	l.ip("-n", l.hub, "addr", "add", serverNet+".254/24", "dev", "br0")
	l.ip("-n", l.hub, "link", "set", "br0", "up")
	l.ip("-n", l.hub, "link", "set", "lo", "up")
	for i := range n {
		ns := fmt.Sprintf("%s-n%d", l.prefix, i+1)
		l.nodes = append(l.nodes, ns)
		l.ip("netns", "add", ns)
		l.ip("-n", l.hub, "link", "add", l.veth(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
		l.ip("-n", l.hub, "link", "set", l.veth(i), "master", "br0", "up")
		l.ip("-n", ns, "addr", "add", l.addr(i)+"/24", "dev", "eth0")
		l.ip("-n", ns, "link", "set", "eth0", "up")
		l.ip("-n", ns, "link", "set", "lo", "up")
		l.ip("-n", ns, "route", "add", serverNet+".0/24", "via", "10.77.0.254")
	}
	return l
}

// serverNet is the /24 of the tcp-servers in a netLab (on the hub).
const serverNet = "10.77.1"

func (l *netLab) veth(i int) string { return fmt.Sprintf("vh%d", i+1) }
func (l *netLab) addr(i int) string { return fmt.Sprintf("10.77.0.%d", i+1) }

func (l *netLab) ip(args ...string) {
	l.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// cut partitions replica i from every other; heal undoes it.
func (l *netLab) cut(i int)  { l.ip("-n", l.hub, "link", "set", l.veth(i), "down") }
func (l *netLab) heal(i int) { l.ip("-n", l.hub, "link", "set", l.veth(i), "up") }

func (l *netLab) destroy() {
	for _, ns := range append(l.nodes, l.hub) {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}

// dialer returns a dial function whose sockets are created inside ns.
func dialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			// The thread is never unlocked: when this goroutine ends the
			// runtime discards it, namespace and all.
			runtime.LockOSThread()
			f, err := os.Open(filepath.Join("/var/run/netns", ns))
			if err != nil {
				ch <- result{nil, err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// startNetnsCluster starts n replicas, each in its own namespace with its
// embedded member on 10.77.0.i and its HTTP API on the namespace's own
// loopback, reached by the test through a namespace dialer.
func startNetnsCluster(t *testing.T, n int, extra ...string) (*cluster, *netLab) {
	lab := newNetLab(t, n)
	dir := t.TempDir()
	c := &cluster{t: t, dir: dir, prefix: "/tcpdispatch/"}
	var initial, endpoints []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("d%d=http://%s:2380", i+1, lab.addr(i)))
		endpoints = append(endpoints, fmt.Sprintf("http://%s:2379", lab.addr(i)))
	}
	for i := range n {
		name := fmt.Sprintf("d%d", i+1)
		r := &replica{http: fmt.Sprintf("http://127.0.0.1:%d", 18080+i), client: endpoints[i],
			peer: fmt.Sprintf("http://%s:2380", lab.addr(i)), dataDir: filepath.Join(dir, name+".etcd")}
		r.clientAdv, r.peerAdv = r.client, r.peer
		nsClients.Store(r.http, &http.Client{Timeout: 2 * time.Second,
			Transport: &http.Transport{DialContext: dialer(lab.nodes[i])}})
		t.Cleanup(func() { nsClients.Delete(r.http) })
		// The API listens on the namespace's every address: the test
		// reaches it on loopback, the other replicas (second opinions)
		// on 10.77.0.i.
		port := strings.TrimPrefix(r.http, "http://127.0.0.1:")
		args := append([]string{"netns", "exec", lab.nodes[i], filepath.Join(binDir, "dispatcher"),
			"--name", name, "--listen-http", "0.0.0.0:" + port, "--advertise-http", "http://" + lab.addr(i) + ":" + port,
			"--data-dir", r.dataDir,
			"--listen-client-urls", r.client, "--advertise-client-urls", r.client,
			"--listen-peer-urls", r.peer, "--initial-advertise-peer-urls", r.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "ns-" + lab.prefix,
			"--log-level", "debug"}, extra...)
		r.proc = newProc(t, dir, name, "", args...)
		r.proc.bin = "ip"
		r.start()
		c.replicas = append(c.replicas, r)
	}
	// The SDK reaches replica i's API on 127.0.0.1:18080+i inside its
	// namespace, and tcp-servers in the hub.
	nsOfPort := map[string]string{}
	for i, r := range c.replicas {
		nsOfPort[strings.TrimPrefix(r.http, "http://127.0.0.1:")] = lab.nodes[i]
	}
	c.sdkHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			ns, ok := nsOfPort[port]
			if !ok {
				return nil, fmt.Errorf("no namespace serves %s", addr)
			}
			return dialer(ns)(ctx, network, addr)
		}}}
	c.sdkDial = dialer(lab.hub)
	c.dialOpts = []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return dialer(lab.hub)(ctx, "tcp", addr)
	})}
	c.connect(endpoints)
	return c, lab
}

// startNetnsChaos starts a three-replica cluster in network namespaces with
// three tcp-servers in the hub, reachable from every replica until a cut.
func startNetnsChaos(t *testing.T) (*chaos, *netLab) {
	c, lab := startNetnsCluster(t, 3, coreFlags...)
	ch := &chaos{cluster: c, t: t, servers: map[string]*tcpServer{}, registered: map[string]string{}}
	ids := []string{"tcp1", "tcp2", "tcp3"}
	var statusURLs []string // with CHAOS_REBALANCE=on (rebalance_chaos_test.go)
	for i, id := range ids {
		addr := fmt.Sprintf("%s.254:%d", serverNet, 19001+i)
		args := []string{"netns", "exec", lab.hub, filepath.Join(binDir, "tcpserver"), "--listen", addr, "--id", id}
		if chaosRebalanceOn() {
			args = append(args, "--status-listen", chaosStatusAddr(i), "--idle-timeout", "1h")
			statusURLs = append(statusURLs, "http://"+chaosStatusAddr(i)+"/status")
		}
		s := &tcpServer{proc: newProc(t, c.dir, id, "", args...), id: id, addr: addr}
		s.proc.bin = "ip"
		s.start()
		ch.servers[id] = s
		ch.registered[id] = addr
		eventually(t, 10*time.Second, id+" accepts", func() error {
			conn, err := dialer(lab.hub)(context.Background(), "tcp", addr)
			if err == nil {
				conn.Close()
			}
			return err
		})
		ch.put(c.prefix+"servers/"+id+"/addr", addr)
		if chaosRebalanceOn() {
			ch.put(c.prefix+"servers/"+id+"/status-url", statusURLs[i])
		}
	}
	c.waitEligible(c.replicas, 3)
	if chaosRebalanceOn() {
		ch.startChaosRebalance(t, lab, ids, statusURLs)
	}
	return ch, lab
}

// partitionLeader is fault 6: the leading replica, whose member is made
// etcd's raft leader first, is cut off from the others for d. It returns
// how long the majority took to elect a new leader.
func (ch *chaos) partitionLeader(lab *netLab, d time.Duration) time.Duration {
	t := ch.t
	l := ch.waitLeader(t, ch.replicas)
	ch.moveRaftLeader(t, l)
	idx := 0
	for i, r := range ch.replicas {
		if r == l {
			idx = i
		}
	}
	old := ch.epochOf(l)
	lab.cut(idx)
	cut := time.Now()
	defer lab.heal(idx)
	ch.waitOtherLeads(l, old, "majority elects a new leader")
	took := time.Since(cut)
	eventually(t, 15*time.Second, "minority steps down and reports its stale snapshot", func() error {
		s, err := l.status()
		if err != nil {
			return err
		}
		if s.IsLeader || s.Etcd != "unreachable" {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	s := ch.mustStatus(t, l)
	t.Logf("6: majority led %v after the cut; minority %s: etcd %s, snapshot age %dms", took.Round(time.Millisecond), l.name, s.Etcd, s.SnapshotAgeMs)
	for range 20 {
		if _, _, err := getTCPIP(l.http, ""); err != nil {
			t.Fatalf("6: minority stopped answering: %v", err)
		}
	}
	time.Sleep(time.Until(cut.Add(d)))
	return took
}

// TestMinorityPartition is fault 6: the replica that leads, whose embedded
// member is also etcd's raft leader, is cut off from the other two. The
// majority elects a new leader; the minority keeps answering get-tcp-ip
// from its stale snapshot and reports its age; after healing all converge.
func TestMinorityPartition(t *testing.T) {
	ch, lab := startNetnsChaos(t)
	ch.round("6 minority partition", func(t *testing.T, rec *recorder) {
		ch.partitionLeader(lab, 8*time.Second)
	})
}
