package node

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
)

// startCluster3 starts a three-member embedded etcd cluster in-process and
// returns its members once all are ready.
func startCluster3(t *testing.T) []*embed.Etcd {
	t.Helper()
	type urls struct{ client, peer url.URL }
	var us []urls
	var initial []string
	for i := range 3 {
		c, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t)))
		p, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t)))
		us = append(us, urls{*c, *p})
		initial = append(initial, fmt.Sprintf("m%d=%s", i, p))
	}
	members := make([]*embed.Etcd, 3)
	errs := make(chan error, 3)
	for i := range 3 {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = t.TempDir()
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{us[i].client}, []url.URL{us[i].client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{us[i].peer}, []url.URL{us[i].peer}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "raftmove-" + t.Name()
		cfg.TickMs, cfg.ElectionMs = 25, 250
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			t.Fatalf("start member %d: %v", i, err)
		}
		members[i] = e
		t.Cleanup(func() {
			select {
			case <-e.Server.StopNotify(): // stopped by the test
			default:
				e.Close()
				<-e.Server.StopNotify()
			}
		})
		go func() {
			select {
			case <-e.Server.ReadyNotify():
				errs <- nil
			case <-time.After(20 * time.Second):
				errs <- fmt.Errorf("member %s not ready within 20s", cfg.Name)
			}
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return members
}

func clientOf(t *testing.T, e *embed.Etcd) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Config().AdvertiseClientUrls[0].String()},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestRaftMoverMovesLeadershipOff checks that Move hands raft leadership
// from the local member to a peer, and does nothing on a member that does
// not lead.
func TestRaftMoverMovesLeadershipOff(t *testing.T) {
	members := startCluster3(t)
	var lead, follower *embed.Etcd
	etcdtest.WaitFor(t, 10*time.Second, "a raft leader", func() bool {
		for _, m := range members {
			if m.Server.Leader() == m.Server.MemberID() {
				lead = m
			}
		}
		return lead != nil
	})
	for _, m := range members {
		if m != lead {
			follower = m
			break
		}
	}
	log := logrus.NewEntry(logrus.New())
	log.Logger.SetLevel(logrus.PanicLevel)

	fReg := prometheus.NewRegistry()
	fm, err := newRaftMover(clientOf(t, follower), follower, log, fReg)
	if err != nil {
		t.Fatal(err)
	}
	fm.Move(context.Background())
	if got := count(t, fm, moveNotLeader); got != 1 {
		t.Fatalf("follower's move: not_leader = %v, want 1", got)
	}
	if lead.Server.Leader() != lead.Server.MemberID() {
		t.Fatal("a follower's Move changed the raft leader")
	}

	reg := prometheus.NewRegistry()
	mv, err := newRaftMover(clientOf(t, lead), lead, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	old := lead.Server.MemberID()
	mv.Move(context.Background())
	if got := count(t, mv, moveMoved); got != 1 {
		t.Fatalf("leader's move: moved = %v, want 1 (failed %v, no_peer %v)", got,
			count(t, mv, moveFailed), count(t, mv, moveNoPeer))
	}
	etcdtest.WaitFor(t, 5*time.Second, "every member sees the new raft leader", func() bool {
		for _, m := range members {
			if l := m.Server.Leader(); l == 0 || l == old {
				return false
			}
		}
		return true
	})

	// With one peer dead (as right after the dispatcher leader's crash),
	// the move still goes to the live peer, within its bounds.
	var lead2 *embed.Etcd
	for _, m := range members {
		if m.Server.Leader() == m.Server.MemberID() {
			lead2 = m
		}
	}
	for _, m := range members {
		if m != lead2 && m != lead {
			m.Close()
			<-m.Server.StopNotify()
		}
	}
	mv2, err := newRaftMover(clientOf(t, lead2), lead2, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	mv2.Move(context.Background())
	if took := time.Since(start); took > statusTimeout+transferLimit {
		t.Errorf("move with a dead peer took %v, bound %v", took, statusTimeout+transferLimit)
	}
	if got := count(t, mv2, moveMoved); got != 1 {
		t.Fatalf("move with a dead peer: moved = %v, want 1 (no_peer %v, failed %v)", got, count(t, mv2, moveNoPeer), count(t, mv2, moveFailed))
	}
	etcdtest.WaitFor(t, 5*time.Second, "the live peer leads raft", func() bool {
		return lead.Server.Leader() == lead.Server.MemberID()
	})

	// Without a member (external mode) there is no mover, and Move on nil
	// is a no-op.
	none, err := newRaftMover(nil, nil, log, prometheus.NewRegistry())
	if err != nil || none != nil {
		t.Fatalf("external mode: %v, %v", none, err)
	}
	none.Move(context.Background())
}

// count returns the mover's counter for outcome.
func count(t *testing.T, r *raftMover, outcome moveOutcome) float64 {
	t.Helper()
	return testutil.ToFloat64(r.moves.WithLabelValues(string(outcome)))
}
