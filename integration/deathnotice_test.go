package integration

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"
)

const revokedMetric = `tcpdispatch_leader_death_notices_total{outcome="revoked"}`

// revokedNotices sums, over rs, the death notices that revoked a lease.
func revokedNotices(t *testing.T, rs []*replica) float64 {
	t.Helper()
	sum := 0.0
	for _, r := range rs {
		v, err := metricValue(r.http+"/metrics", revokedMetric)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		sum += v
	}
	return sum
}

// waitNewLeader waits up to d for a replica of rs to lead a term after
// epoch old, and returns it with the time it was seen.
func (c *cluster) waitNewLeader(t *testing.T, rs []*replica, old int64, d time.Duration) (*replica, time.Time) {
	t.Helper()
	var l *replica
	eventually(t, d, "a new leader", func() error {
		for _, r := range rs {
			if s, err := r.status(); err == nil && s.IsLeader && s.LeaderEpoch > old {
				l = r
				return nil
			}
		}
		return errNotYet
	})
	return l, time.Now()
}

func others(rs []*replica, not *replica) []*replica {
	return slices.DeleteFunc(slices.Clone(rs), func(r *replica) bool { return r == not })
}

// TestLeaderDeathNotice: at the shipped defaults (leader TTL 3s), a
// SIGKILLed leader is replaced well inside the TTL because a survivor's
// link to its member's peer URL ended and a connect was refused; a
// SIGSTOPped leader (sockets open, nothing refused) is replaced only once
// its lease expires, with no death-notice revoke.
func TestLeaderDeathNotice(t *testing.T) {
	c := startCluster(t, clusterOpts{replicas: 3})
	c.waitEligible(c.replicas, 0)
	l := c.waitLeader(t, c.replicas)
	old := mustEpoch(t, l)
	time.Sleep(2 * time.Second) // the followers' links are open

	rest := others(c.replicas, l)
	before := revokedNotices(t, rest)
	l.kill()
	killed := time.Now()
	next, at := c.waitNewLeader(t, rest, old, 10*time.Second)
	took := at.Sub(killed)
	t.Logf("SIGKILL of %s: %s leads after %v", l.name, next.name, took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("SIGKILL: new leader after %v; the TTL is 3s and a death notice should take far less", took)
	}
	if after := revokedNotices(t, rest); after <= before {
		t.Errorf("SIGKILL: %s did not grow (%v → %v)", revokedMetric, before, after)
	}
	l.start()
	eventually(t, 60*time.Second, l.name+" back with etcd", func() error {
		s, err := l.status()
		if err != nil {
			return err
		}
		if s.Etcd != "ok" {
			return fmt.Errorf("etcd %s", s.Etcd)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // links to the new leader are open; leases renewed

	l = c.waitLeader(t, c.replicas)
	old = mustEpoch(t, l)
	rest = others(c.replicas, l)
	before = revokedNotices(t, rest)
	l.signal(syscall.SIGSTOP)
	stopped := time.Now()
	next, at = c.waitNewLeader(t, rest, old, 15*time.Second)
	took = at.Sub(stopped)
	l.signal(syscall.SIGCONT)
	t.Logf("SIGSTOP of %s: %s leads after %v", l.name, next.name, took.Round(time.Millisecond))
	// The lease was renewed at most a third of the TTL before the stop.
	if took < 2*time.Second {
		t.Errorf("SIGSTOP: new leader after %v, before the 3s lease could expire", took)
	}
	if after := revokedNotices(t, rest); after != before {
		t.Errorf("SIGSTOP: %s changed (%v → %v): a paused leader was taken for dead", revokedMetric, before, after)
	}
	eventually(t, 10*time.Second, l.name+" knows it no longer leads", func() error {
		s, err := l.status()
		if err != nil {
			return err
		}
		if s.IsLeader {
			return errNotYet
		}
		return nil
	})
}
