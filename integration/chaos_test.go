package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const chaosTTL = 2 * time.Second

// chaos is a three-replica cluster with proxies on every etcd link, three
// tcp-servers, and a recorder of everything clients saw.
type chaos struct {
	*cluster
	t          *testing.T
	servers    map[string]*tcpServer
	registered map[string]string
}

func startChaos(t *testing.T) *chaos {
	c := startCluster(t, clusterOpts{replicas: 3, extra: coreFlags, proxies: true})
	ch := &chaos{cluster: c, t: t, servers: map[string]*tcpServer{}, registered: map[string]string{}}
	for _, id := range []string{"tcp1", "tcp2", "tcp3"} {
		s := c.startTCPServer(id)
		ch.servers[id] = s
		ch.registered[id] = s.addr
		ch.put(c.prefix+"servers/"+id+"/addr", s.addr)
	}
	c.waitEligible(c.replicas, 3)
	return ch
}

func (ch *chaos) put(key, value string) int64 {
	ch.t.Helper()
	resp, err := putRetry(ch.cli, key, value)
	if err != nil {
		ch.t.Fatalf("put %s: %v", key, err)
	}
	return resp.Header.Revision
}

// others returns the replicas other than r.
func (ch *chaos) others(r *replica) []*replica {
	var out []*replica
	for _, o := range ch.replicas {
		if o != r {
			out = append(out, o)
		}
	}
	return out
}

// round runs one scenario as a subtest named name, with a recorder, and
// fails it on any invariant violation; f gets the subtest's t. Select
// scenarios with -run, e.g. -run 'TestChaos/^(9|13)_' (spaces in names
// become underscores). It returns the number of violations and of errors
// clients saw (get-tcp-ip on live replicas, SDK dials; both are I2
// violations too), zero for a scenario not selected.
func (ch *chaos) round(name string, f func(t *testing.T, rec *recorder)) (violations, clientErrors int) {
	ch.t.Helper()
	parent := ch.t
	parent.Run(name, func(t *testing.T) {
		// The chaos helpers fail the scenario, not the whole test.
		ch.t = t
		defer func() { ch.t = parent }()
		rec := ch.record()
		defer rec.stop() // also when f fails the subtest; stop is idempotent
		f(t, rec)
		// Let every replica settle before the checks of I4.
		ch.converged(15 * time.Second)
		rec.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		vs := rec.violations(ctx, ch.registered)
		for _, v := range vs {
			t.Error(v)
		}
		violations, clientErrors = len(vs), rec.clientErrors()
	})
	return violations, clientErrors
}

// converged checks I4: every replica reports etcd reachable, has applied
// etcd's current revision, and shows the same servers as etcd holds.
func (ch *chaos) converged(d time.Duration) {
	ch.t.Helper()
	eventually(ch.t, d, "replicas converge on etcd's state (I4)", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := ch.cli.Get(ctx, ch.prefix+"servers/", clientv3.WithPrefix())
		if err != nil {
			return err
		}
		want := map[string]string{}
		for _, kv := range resp.Kvs {
			id, field, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), ch.prefix+"servers/"), "/")
			if field == "weight" {
				want[id] = string(kv.Value)
			}
		}
		for _, r := range ch.replicas {
			st, err := r.status()
			if err != nil {
				return err
			}
			if st.Etcd != "ok" || st.Revision < resp.Header.Revision {
				return fmt.Errorf("%s: etcd %s at revision %d, etcd at %d", r.name, st.Etcd, st.Revision, resp.Header.Revision)
			}
			v, err := r.servers()
			if err != nil {
				return err
			}
			for id, w := range want {
				s, ok := v.find(id)
				if n, err := strconv.Atoi(w); ok && err == nil && s.Weight != n {
					return fmt.Errorf("%s: %s weight %d, etcd has %s", r.name, id, s.Weight, w)
				}
			}
		}
		return nil
	})
}

// epochOf returns the leader epoch r reports.
func (ch *chaos) epochOf(r *replica) int64 {
	s, err := r.status()
	if err != nil {
		return 0
	}
	return s.LeaderEpoch
}

// firstWriteOf waits for a health write carrying an epoch above old and
// returns when it was seen.
func (ch *chaos) firstWriteAfter(ctx context.Context, old int64, from int64) (time.Time, int64) {
	wch := ch.cli.Watch(ctx, ch.prefix+"health/", clientv3.WithPrefix(), clientv3.WithRev(from))
	for resp := range wch {
		for _, ev := range resp.Events {
			if ev.Type != mvccpb.PUT {
				continue
			}
			var h struct {
				Epoch int64 `json:"epoch"`
			}
			if json.Unmarshal(ev.Kv.Value, &h) == nil && h.Epoch > old {
				return time.Now(), h.Epoch
			}
		}
	}
	return time.Time{}, 0
}

func (ch *chaos) currentRev() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := ch.cli.Get(ctx, ch.prefix, clientv3.WithCountOnly(), clientv3.WithPrefix())
	if err != nil {
		ch.t.Fatal(err)
	}
	return resp.Header.Revision
}

// killLeader is fault 1: SIGKILL the leader, restart it on its data dir.
// It returns the time to the new leader's first fenced write. With
// keepRaft, etcd's raft leadership is first moved to another replica's
// member, so that the kill costs no raft election (whose lease extension
// would add about two election timeouts to the failover).
func (ch *chaos) killLeader(rec *recorder, keepRaft bool) time.Duration {
	l := ch.waitLeader(ch.t, ch.replicas)
	if keepRaft {
		ch.moveRaftLeader(ch.t, ch.others(l)[0])
		// A new raft leader extends every lease by an election timeout
		// until its next renewal; let the leader's keep-alives renew it.
		time.Sleep(chaosTTL / 2)
	}
	old := ch.epochOf(l)
	from := ch.currentRev()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rec.markDown(l)
	l.kill()
	killed := time.Now()
	at, epoch := ch.firstWriteAfter(ctx, old, from)
	if epoch == 0 {
		ch.t.Fatalf("no fenced write of a new epoch within 20s of killing %s", l.name)
	}
	took := at.Sub(killed)
	l.start()
	ch.waitReady(l)
	rec.markUp(l)
	return took
}

// waitReady waits until r answers get-tcp-ip again after a restart.
func (ch *chaos) waitReady(r *replica) {
	eventually(ch.t, 30*time.Second, r.name+" answers again", func() error {
		_, _, err := getTCPIP(r.http, "")
		return err
	})
}

// stopLeader is fault 3 (d > TTL) and 4 (d < TTL): SIGSTOP the leader for
// d, then SIGCONT. It reports whether leadership changed.
func (ch *chaos) stopLeader(rec *recorder, d time.Duration) (changed bool) {
	l := ch.waitLeader(ch.t, ch.replicas)
	old := ch.epochOf(l)
	rec.markDown(l)
	l.signal(syscall.SIGSTOP)
	time.Sleep(d)
	l.signal(syscall.SIGCONT)
	ch.waitReady(l)
	rec.markUp(l)
	// Exactly one leader afterwards, and the old one knows whether it
	// still leads.
	var now *replica
	eventually(ch.t, 15*time.Second, "exactly one leader", func() error {
		var leaders []string
		for _, r := range ch.replicas {
			if s, err := r.status(); err == nil && s.IsLeader {
				leaders = append(leaders, r.name)
				now = r
			}
		}
		if len(leaders) != 1 {
			return fmt.Errorf("leaders: %v", leaders)
		}
		return nil
	})
	return ch.epochOf(now) != old
}

// cutLeader is fault 5: the leader's etcd client link is blackholed (its
// member still takes part in raft) for d; it must lose leadership.
func (ch *chaos) cutLeader(rec *recorder, d time.Duration) (lostAfter time.Duration) {
	l := ch.waitLeader(ch.t, ch.replicas)
	l.clientProxy.PauseTx()
	l.clientProxy.PauseRx()
	cut := time.Now()
	eventually(ch.t, 15*time.Second, "cut-off leader steps down and another leads", func() error {
		if s, err := l.status(); err != nil || s.IsLeader {
			return fmt.Errorf("%s still leads (%v)", l.name, err)
		}
		if ch.leader(ch.others(l)) == nil {
			return errNotYet
		}
		return nil
	})
	lostAfter = time.Since(cut)
	// A replica cut off from etcd keeps answering from its snapshot and
	// says it is stale.
	eventually(ch.t, 10*time.Second, "cut-off replica reports etcd unreachable", func() error {
		s, err := l.status()
		if err != nil {
			return err
		}
		if s.Etcd != "unreachable" {
			return fmt.Errorf("etcd %q, age %dms", s.Etcd, s.SnapshotAgeMs)
		}
		return nil
	})
	time.Sleep(max(0, d-time.Since(cut)))
	l.clientProxy.UnpauseTx()
	l.clientProxy.UnpauseRx()
	return lostAfter
}

// TestChaos runs a short version of every fault scenario on one cluster,
// checking the invariants after each.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos scenarios take about two minutes")
	}
	ch := startChaos(t)

	ch.round("1 SIGKILL leader", func(t *testing.T, rec *recorder) {
		took := ch.killLeader(rec, true)
		t.Logf("1: new leader's first fenced write %v after SIGKILL (TTL %v + interval %v)", took.Round(time.Millisecond), chaosTTL, probeInterval)
		// etcd's lessor looks for expired leases every 500ms, which can
		// come on top of the TTL.
		if bound := chaosTTL + probeInterval + 500*time.Millisecond; took > bound {
			t.Errorf("1: failover took %v, want <= TTL + one probe interval + etcd's 500ms expiry check = %v", took, bound)
		}
	})

	ch.round("2 SIGTERM leader", func(t *testing.T, rec *recorder) {
		l := ch.waitLeader(t, ch.replicas)
		rec.markDown(l)
		l.signal(syscall.SIGTERM)
		sent := time.Now()
		eventually(t, 5*time.Second, "handover", func() error {
			if ch.leader(ch.others(l)) == nil {
				return errNotYet
			}
			return nil
		})
		took := time.Since(sent)
		t.Logf("2: handover %v after SIGTERM", took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("2: handover took %v, want < 1s", took)
		}
		l.wait(15 * time.Second)
		l.start()
		ch.waitReady(l)
		rec.markUp(l)
	})

	ch.round("3 SIGSTOP leader beyond TTL", func(t *testing.T, rec *recorder) {
		if !ch.stopLeader(rec, chaosTTL+2*time.Second) {
			t.Error("3: leadership did not change while the leader was stopped past its TTL")
		}
	})

	ch.round("4 SIGSTOP leader within TTL", func(t *testing.T, rec *recorder) {
		if ch.stopLeader(rec, 600*time.Millisecond) {
			t.Error("4: leadership changed after a pause shorter than the TTL")
		}
	})

	ch.round("5 leader cut off from etcd", func(t *testing.T, rec *recorder) {
		lost := ch.cutLeader(rec, 6*time.Second)
		t.Logf("5: cut-off leader stepped down and another led %v after the cut", lost.Round(time.Millisecond))
	})

	ch.round("7 quorum loss", func(t *testing.T, rec *recorder) {
		a, b, kept := ch.replicas[0], ch.replicas[1], ch.replicas[2]
		rec.markDown(a)
		rec.markDown(b)
		a.kill()
		b.kill()
		eventually(t, 10*time.Second, "survivor reports etcd unreachable", func() error {
			s, err := kept.status()
			if err != nil {
				return err
			}
			if s.Etcd != "unreachable" {
				return fmt.Errorf("etcd %q", s.Etcd)
			}
			return nil
		})
		// The survivor answers throughout from its last snapshot (I2).
		for range 50 {
			if _, _, err := getTCPIP(kept.http, ""); err != nil {
				t.Fatalf("7: survivor without quorum: %v", err)
			}
		}
		a.start()
		b.start()
		ch.waitReady(a)
		ch.waitReady(b)
		rec.markUp(a)
		rec.markUp(b)
	})

	ch.round("8 restart without quorum", func(t *testing.T, rec *recorder) {
		for _, r := range ch.replicas {
			rec.markDown(r)
			r.kill()
		}
		r := ch.replicas[0]
		r.start()
		// It answers from the snapshot saved on its disk, and says how old.
		eventually(t, 10*time.Second, "restarted replica answers from its saved snapshot", func() error {
			p, _, err := getTCPIP(r.http, "")
			if err != nil {
				return err
			}
			if ch.registered[p.ID] != p.Addr {
				return fmt.Errorf("answer %+v not registered", p)
			}
			return nil
		})
		s := ch.mustStatus(t, r)
		t.Logf("8: without quorum the restarted replica serves its saved snapshot: etcd %s, age %dms", s.Etcd, s.SnapshotAgeMs)
		if s.Etcd != "unreachable" || s.SnapshotAgeMs <= 0 {
			t.Errorf("8: status %+v; want etcd unreachable and the snapshot's age", s)
		}
		for _, o := range ch.replicas[1:] {
			o.start()
		}
		for _, o := range ch.replicas {
			ch.waitReady(o)
			rec.markUp(o)
		}
	})

	ch.round("9 watch reset and compaction while disconnected", func(t *testing.T, rec *recorder) {
		// Pausing (not dropping) the link is what a partition does to TCP:
		// bytes are late, never lost. It lasts past the client's keepalive
		// timeout (5s + 2s), so the watch stream is torn down and resumed.
		r := ch.replicas[1]
		r.clientProxy.PauseTx()
		r.clientProxy.PauseRx()
		paused := time.Now()
		var rev int64
		for i := range 20 {
			rev = ch.put(ch.prefix+"servers/tcp2/weight", fmt.Sprint(100+i))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := ch.cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
			t.Fatalf("compact: %v", err)
		}
		cancel()
		time.Sleep(9*time.Second - time.Since(paused))
		r.clientProxy.UnpauseTx()
		r.clientProxy.UnpauseRx()
		eventually(t, 20*time.Second, "disconnected replica catches up", func() error {
			v, err := r.servers()
			if err != nil {
				return err
			}
			if s, _ := v.find("tcp2"); s.Weight != 119 {
				return fmt.Errorf("tcp2 weight %d", s.Weight)
			}
			return nil
		})
		ch.put(ch.prefix+"servers/tcp2/weight", "100")
	})
	// History before the compaction is gone; I1 checks from here on read
	// what remains.

	ch.round("10 election key deleted, garbage in operator keys", func(t *testing.T, rec *recorder) {
		l := ch.waitLeader(t, ch.replicas)
		old := ch.epochOf(l)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := ch.cli.Delete(ctx, ch.prefix+"election/", clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "exactly one new leader", func() error {
			var n int
			var epoch int64
			for _, r := range ch.replicas {
				if s, err := r.status(); err == nil && s.IsLeader {
					n++
					epoch = s.LeaderEpoch
				}
			}
			if n != 1 || epoch <= old {
				return fmt.Errorf("%d leaders, epoch %d (was %d)", n, epoch, old)
			}
			return nil
		})
		for _, id := range []string{"tcp1", "tcp2", "tcp3"} {
			ch.put(ch.prefix+"servers/"+id+"/weight", "heavy")
			ch.put(ch.prefix+"servers/"+id+"/addr", "no-port")
		}
		ch.put(ch.prefix+"config/strategy", "fastest")
		eventually(t, 5*time.Second, "garbage reported", func() error {
			for _, r := range ch.replicas {
				v, err := r.servers()
				if err != nil {
					return err
				}
				for _, s := range v.Servers {
					if len(s.Errors) < 2 || !s.Eligible {
						return fmt.Errorf("%s: %s errors %v eligible %v", r.name, s.ID, s.Errors, s.Eligible)
					}
				}
			}
			return nil
		})
		for _, id := range []string{"tcp1", "tcp2", "tcp3"} {
			ch.put(ch.prefix+"servers/"+id+"/weight", "100")
			ch.put(ch.prefix+"servers/"+id+"/addr", ch.registered[id])
		}
		ch.put(ch.prefix+"config/strategy", "wrr")
	})

	ch.round("11 operator puts during leader churn", func(t *testing.T, rec *recorder) {
		from := ch.currentRev()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var puts atomic.Int64
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				if _, err := ch.cli.Put(pctx, ch.prefix+"servers/tcp3/weight", fmt.Sprint(100+i%50)); err == nil {
					puts.Add(1)
				}
				pcancel()
				time.Sleep(20 * time.Millisecond)
			}
		}()
		for range 2 {
			l := ch.waitLeader(t, ch.replicas)
			rec.markDown(l)
			l.signal(syscall.SIGTERM)
			l.wait(15 * time.Second)
			l.start()
			ch.waitReady(l)
			rec.markUp(l)
		}
		cancel()
		wg.Wait()
		// Every write to an operator key in this window was ours.
		hctx, hcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer hcancel()
		resp := ch.cli.Watch(hctx, ch.prefix+"servers/", clientv3.WithPrefix(), clientv3.WithRev(from))
		end := ch.put(ch.prefix+"servers/tcp3/weight", "100")
		var seen int
	loop:
		for wr := range resp {
			for _, ev := range wr.Events {
				if ev.Kv.ModRevision >= end {
					break loop
				}
				seen++
				n, err := strconv.Atoi(string(ev.Kv.Value))
				if string(ev.Kv.Key) != ch.prefix+"servers/tcp3/weight" || err != nil || n < 100 || n >= 150 {
					t.Errorf("11: operator key %s = %q written by someone else", ev.Kv.Key, ev.Kv.Value)
				}
			}
		}
		t.Logf("11: %d operator puts during two leader changes, %d seen in history, none overwritten", puts.Load(), seen)
	})

	ch.round("12 flapping backend", func(t *testing.T, rec *recorder) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		flap := startFlapper(ln, 300*time.Millisecond)
		from := ch.put(ch.prefix+"servers/flap/addr", addr)
		ch.registered["flap"] = addr
		time.Sleep(6 * time.Second)
		flap.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		transitions, writes := healthTransitions(ctx, ch.cluster, "flap", from)
		probes := int(6*time.Second/probeInterval) + 1
		t.Logf("12: flapping every 300ms for 6s: %d transitions in %d health writes (%d probes; rise=fall=2)", transitions, writes, probes)
		if bound := probes/2 + 1; transitions > bound {
			t.Errorf("12: %d transitions, hysteresis allows at most %d", transitions, bound)
		}
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		if _, err := ch.cli.Delete(dctx, ch.prefix+"servers/flap/", clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
	})

	ch.round("13 slow, lossy etcd links", func(t *testing.T, rec *recorder) {
		l := ch.waitLeader(t, ch.replicas)
		old := ch.epochOf(l)
		// 75±50ms each way and 10% loss on every client and peer link; see
		// shaper for how loss looks to TCP.
		for _, r := range ch.replicas {
			r.clientShaper.set(shape{delay: 75 * time.Millisecond, jitter: 50 * time.Millisecond, loss: 0.1})
			r.peerShaper.set(shape{delay: 75 * time.Millisecond, jitter: 50 * time.Millisecond, loss: 0.1})
		}
		time.Sleep(10 * time.Second)
		for _, r := range ch.replicas {
			r.clientShaper.set(shape{})
			r.peerShaper.set(shape{})
		}
		if now := ch.waitLeader(t, ch.replicas); now != l || ch.epochOf(now) != old {
			t.Errorf("13: leadership flapped under 75±50ms delay and 10%% loss: %s epoch %d -> %s epoch %d", l.name, old, now.name, ch.epochOf(now))
		}
	})
}

// healthTransitions counts the changes of id's healthy flag in etcd's
// history from revision from, and the health writes.
func healthTransitions(ctx context.Context, c *cluster, id string, from int64) (transitions, writes int) {
	mark, err := c.cli.Put(ctx, c.prefix+"history-mark", "x")
	if err != nil {
		return 0, 0
	}
	var last *bool
	for wr := range c.cli.Watch(ctx, c.prefix+"health/"+id, clientv3.WithRev(from)) {
		for _, ev := range wr.Events {
			var h struct {
				Healthy bool `json:"healthy"`
			}
			if ev.Type == mvccpb.PUT && json.Unmarshal(ev.Kv.Value, &h) == nil {
				writes++
				if last != nil && *last != h.Healthy {
					transitions++
				}
				last = &h.Healthy
			}
		}
		if wr.Header.Revision >= mark.Header.Revision {
			break
		}
	}
	return transitions, writes
}

// flapper alternates a listener between accepting and refusing.
type flapper struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func startFlapper(ln net.Listener, period time.Duration) *flapper {
	ctx, cancel := context.WithCancel(context.Background())
	f := &flapper{cancel: cancel, done: make(chan struct{})}
	addr := ln.Addr().String()
	go func() {
		defer close(f.done)
		for up := true; ; up = !up {
			if up {
				if ln == nil {
					var err error
					if ln, err = net.Listen("tcp", addr); err != nil {
						ln = nil
					}
				}
				if ln != nil {
					go acceptAll(ln)
				}
			} else if ln != nil {
				ln.Close()
				ln = nil
			}
			select {
			case <-ctx.Done():
				if ln != nil {
					ln.Close()
				}
				return
			case <-time.After(period):
			}
		}
	}()
	return f
}

func (f *flapper) stop() {
	f.cancel()
	<-f.done
}

func acceptAll(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// TestChaosLoop is make chaos: CHAOS_ROUNDS rounds (default 3 in make
// test) of a fault drawn with CHAOS_SEED from SIGKILL of the leader (1),
// SIGSTOP beyond the TTL (3), a minority partition of the leader (6) and
// the leader's host losing its route to the tcp-servers only (15), on
// a cluster in network namespaces, with every invariant checked after each
// round and a summary table at the end.
func TestChaosLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos loop")
	}
	rounds, seed := 3, uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("CHAOS_ROUNDS=%q: want a whole number of rounds, at least 1", v)
		}
		rounds = n
	}
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: want an unsigned integer", v)
		}
		seed = n
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	ch, lab := startNetnsChaos(t)
	faults := map[string]int{}
	var failovers int
	var maxFailover time.Duration
	var violations, clientErrors int
	for i := range rounds {
		kind := []string{"sigkill-leader", "sigstop-leader", "partition-leader", "route-loss-leader"}[rng.IntN(4)]
		faults[kind]++
		v, e := ch.round(fmt.Sprintf("round %d (%s)", i+1, kind), func(t *testing.T, rec *recorder) {
			switch kind {
			case "sigkill-leader":
				d := ch.killLeader(rec, false)
				failovers++
				maxFailover = max(maxFailover, d)
			case "sigstop-leader":
				start := time.Now()
				if ch.stopLeader(rec, chaosTTL+time.Second) {
					failovers++
					maxFailover = max(maxFailover, time.Since(start))
				}
			case "partition-leader":
				d := ch.partitionLeader(lab, 6*time.Second)
				failovers++
				maxFailover = max(maxFailover, d)
			case "route-loss-leader":
				// Alternately deleted and through a dead gateway.
				d := ch.routeLossLeader(lab, faults[kind]%2 == 0, 6*time.Second)
				failovers++
				maxFailover = max(maxFailover, d)
			}
		})
		violations += v
		clientErrors += e
	}
	var kinds []string
	for k, n := range faults {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(kinds)
	t.Logf("\n| rounds | seed | faults injected | failovers | max failover | client errors | invariant violations |\n"+
		"|---|---|---|---|---|---|---|\n| %d | %d | %s | %d | %v | %d | %d |",
		rounds, seed, strings.Join(kinds, " "), failovers, maxFailover.Round(time.Millisecond), clientErrors, violations)
	// Each is also reported by its round; this makes the table's figures
	// the test's verdict.
	if clientErrors != 0 || violations != 0 {
		t.Errorf("%d client errors and %d invariant violations in %d rounds (seed %d); want none", clientErrors, violations, rounds, seed)
	}
}
