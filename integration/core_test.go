package integration

import (
	"fmt"
	"math"
	"syscall"
	"testing"
	"time"
)

const (
	probeInterval = 500 * time.Millisecond
	fall          = 2
)

// coreFlags are the replica flags of the core test: the acceptance's 2s
// leader TTL and a faster probe interval to keep the test short.
var coreFlags = []string{"--leader-ttl", "2s", "--probe-interval", probeInterval.String(), "--probe-timeout", "250ms",
	"--rise", "2", "--fall", fmt.Sprint(fall), "--shutdown-delay", "500ms"}

// TestReplicatedCore walks the acceptance list of the replicated core on one
// three-replica cluster (three-member embedded etcd) with three tcp-servers.
func TestReplicatedCore(t *testing.T) {
	c := startCluster(t, clusterOpts{replicas: 3, extra: coreFlags})
	replicatedCore(t, c)
}

// replicatedCore checks the replicated-core behaviours on a fresh
// three-replica cluster c: weights, a dead tcp-server, a weight change,
// garbage values, SIGKILL and SIGTERM of the leader.
func replicatedCore(t *testing.T, c *cluster) {
	weights := map[string]int{"tcp1": 100, "tcp2": 200, "tcp3": 300}
	servers := map[string]*tcpServer{}
	for _, id := range []string{"tcp1", "tcp2", "tcp3"} {
		servers[id] = c.startTCPServer(id)
		c.etcdctl("put", c.prefix+"servers/"+id+"/addr", servers[id].addr)
		c.etcdctl("put", c.prefix+"servers/"+id+"/weight", fmt.Sprint(weights[id]))
	}
	c.waitEligible(c.replicas, 3)

	t.Run("weights", func(t *testing.T) {
		for _, r := range c.replicas {
			counts := map[string]int{}
			const calls = 1200
			for range calls {
				p, _, err := getTCPIP(r.http, "")
				if err != nil {
					t.Fatalf("%s: %v", r.name, err)
				}
				counts[p.ID]++
			}
			for id, w := range weights {
				want := float64(calls) * float64(w) / 600
				if got := float64(counts[id]); math.Abs(got-want) > 0.10*want {
					t.Errorf("%s: %s got %v of %d calls, want %v ±10%%", r.name, id, got, calls, want)
				}
			}
			t.Logf("%s: %v", r.name, counts)
		}
	})

	t.Run("killed tcp-server leaves every replica", func(t *testing.T) {
		servers["tcp3"].kill()
		killed := time.Now()
		bound := probeInterval*fall + time.Second
		c.waitNotServed(t, "tcp3", bound+2*time.Second)
		took := time.Since(killed)
		t.Logf("tcp3 gone from all replicas %v after SIGKILL (bound interval×fall+1s = %v)", took.Round(time.Millisecond), bound)
		if took > bound {
			t.Errorf("took %v, want <= %v", took, bound)
		}
	})

	t.Run("weight change reaches every replica", func(t *testing.T) {
		c.etcdctl("put", c.prefix+"servers/tcp1/weight", "700")
		eventually(t, 5*time.Second, "weight 700 everywhere", func() error {
			for _, r := range c.replicas {
				v, err := r.servers()
				if err != nil {
					return err
				}
				if s, _ := v.find("tcp1"); s.Weight != 700 {
					return fmt.Errorf("%s: weight %d", r.name, s.Weight)
				}
			}
			return nil
		})
	})

	t.Run("garbage values are reported and change nothing", func(t *testing.T) {
		before, err := c.replicas[0].servers()
		if err != nil {
			t.Fatal(err)
		}
		c.etcdctl("put", c.prefix+"servers/tcp1/weight", "abc")
		c.etcdctl("put", c.prefix+"servers/tcp2/addr", "127.0.0.1")
		eventually(t, 5*time.Second, "errors reported", func() error {
			for _, r := range c.replicas {
				v, err := r.servers()
				if err != nil {
					return err
				}
				s1, _ := v.find("tcp1")
				s2, _ := v.find("tcp2")
				if len(s1.Errors) == 0 || len(s2.Errors) == 0 {
					return fmt.Errorf("%s: errors not reported yet: %v %v", r.name, s1.Errors, s2.Errors)
				}
				if s1.Weight != 700 || !s1.Eligible || s2.Addr != servers["tcp2"].addr || !s2.Eligible {
					return fmt.Errorf("%s: garbage changed the view: %+v %+v", r.name, s1, s2)
				}
			}
			return nil
		})
		for _, r := range c.replicas {
			for range 20 {
				if _, _, err := getTCPIP(r.http, ""); err != nil {
					t.Fatalf("%s after garbage: %v", r.name, err)
				}
			}
		}
		t.Logf("before: %+v", before.Servers)
		c.etcdctl("put", c.prefix+"servers/tcp1/weight", "100")
		c.etcdctl("put", c.prefix+"servers/tcp2/addr", servers["tcp2"].addr)
	})

	t.Run("SIGKILL of the leader holding raft leadership", func(t *testing.T) {
		old := c.waitLeader(t, c.replicas)
		oldEpoch := c.mustStatus(t, old).LeaderEpoch
		c.moveRaftLeader(t, old)
		var survivors []*replica
		for _, r := range c.replicas {
			if r != old {
				survivors = append(survivors, r)
			}
		}
		load := startLoad(survivors)
		old.kill()
		killed := time.Now()
		// tcp3 recovers while the leader is dead.
		servers["tcp3"].start()

		var newLeader *replica
		eventually(t, 10*time.Second, "new leader", func() error {
			if newLeader = c.leader(survivors); newLeader == nil {
				return errNotYet
			}
			return nil
		})
		took := time.Since(killed)
		newEpoch := c.mustStatus(t, newLeader).LeaderEpoch
		t.Logf("new leader %s (epoch %d, was %d) %v after SIGKILL of %s", newLeader.name, newEpoch, oldEpoch, took.Round(time.Millisecond), old.name)
		if took > 4*time.Second {
			t.Errorf("failover took %v, want < 4s with --leader-ttl 2s", took)
		}
		if newEpoch <= oldEpoch {
			t.Errorf("epoch did not increase: %d -> %d", oldEpoch, newEpoch)
		}
		// The new leader's first fenced write lands: tcp3's record, written
		// with the new epoch, makes it servable again.
		eventually(t, 10*time.Second, "tcp3 served again with a record of the new epoch", func() error {
			h, err := c.health("tcp3")
			if err != nil {
				return err
			}
			if h.Epoch != newEpoch || !h.Healthy {
				return fmt.Errorf("tcp3 record %+v", h)
			}
			return c.servedBy(survivors, "tcp3")
		})
		errs, total := load.stop()
		t.Logf("load on survivors during failover: %d requests, %d errors", total, len(errs))
		if len(errs) > 0 {
			t.Errorf("survivors failed get-tcp-ip %d times, first: %v", len(errs), errs[0])
		}

		t.Run("restart on its data dir rejoins", func(t *testing.T) {
			old.start()
			eventually(t, 20*time.Second, old.name+" rejoined and current", func() error {
				s, err := old.status()
				if err != nil {
					return err
				}
				want := c.mustStatus(t, newLeader).Revision
				if s.Etcd != "ok" || s.Revision < want || s.Eligible != 3 {
					return fmt.Errorf("%+v (leader at revision %d)", s, want)
				}
				return nil
			})
		})
	})

	t.Run("SIGTERM of the leader hands over in under a second", func(t *testing.T) {
		old := c.waitLeader(t, c.replicas)
		var others []*replica
		for _, r := range c.replicas {
			if r != old {
				others = append(others, r)
			}
		}
		old.signal(syscall.SIGTERM)
		sent := time.Now()
		eventually(t, 5*time.Second, "handover", func() error {
			if c.leader(others) == nil {
				return errNotYet
			}
			return nil
		})
		took := time.Since(sent)
		t.Logf("handover %v after SIGTERM of %s", took.Round(time.Millisecond), old.name)
		if took > time.Second {
			t.Errorf("handover took %v, want < 1s", took)
		}
		if !old.wait(10 * time.Second) {
			t.Errorf("%s did not exit within 10s of SIGTERM", old.name)
		}
		old.start()
		c.waitEligible([]*replica{old}, 3)
	})
}
