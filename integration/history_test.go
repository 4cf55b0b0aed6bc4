package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// answer is one get-tcp-ip call the load driver made.
type answer struct {
	at      time.Time
	replica string
	id      string
	addr    string
	err     error
}

// observation is one /v1/status poll.
type observation struct {
	at          time.Time
	replica     string
	incarnation int
	revision    int64
	leader      bool
	etcd        string
}

// recorder drives get-tcp-ip on every replica and polls their status,
// keeping the whole history for the checker.
type recorder struct {
	c      *cluster
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	answers []answer
	obs     []observation
	// down marks replicas the scenario has stopped or killed: their errors
	// are expected and not held against I2.
	down map[string]bool
	// spans lists [from, to) per replica while down.
	spans map[string][][2]time.Time
	// from is etcd's revision when recording started.
	from int64
	// sdkDials and sdkFailures count connections the client SDK made
	// through the dispatchers (with its retries, cache and fallbacks).
	sdkDials    int
	sdkFailures []error
}

func (c *cluster) record() *recorder {
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{c: c, cancel: cancel, down: map[string]bool{}, spans: map[string][][2]time.Time{}}
	gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
	if resp, err := c.cli.Get(gctx, c.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil {
		rec.from = resp.Header.Revision
	}
	gcancel()
	sdk, err := c.sdkClient()
	if err != nil {
		c.t.Fatalf("client SDK: %v", err)
	}
	rec.wg.Add(1)
	go func() {
		defer rec.wg.Done()
		for ctx.Err() == nil {
			dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
			conn, _, err := sdk.Dial(dctx)
			dcancel()
			if ctx.Err() != nil {
				return
			}
			rec.mu.Lock()
			rec.sdkDials++
			if err != nil {
				rec.sdkFailures = append(rec.sdkFailures, fmt.Errorf("%s: %w", time.Now().Format("15:04:05.000"), err))
			} else {
				conn.Close()
			}
			rec.mu.Unlock()
			sleepCtx(ctx, 50*time.Millisecond)
		}
	}()
	for _, r := range c.replicas {
		rec.wg.Add(2)
		go func() {
			defer rec.wg.Done()
			for ctx.Err() == nil {
				p, _, err := getTCPIP(r.http, "")
				rec.mu.Lock()
				rec.answers = append(rec.answers, answer{at: time.Now(), replica: r.name, id: p.ID, addr: p.Addr, err: err})
				rec.mu.Unlock()
				sleepCtx(ctx, 10*time.Millisecond)
			}
		}()
		go func() {
			defer rec.wg.Done()
			for ctx.Err() == nil {
				s, err := r.status()
				if err == nil {
					rec.mu.Lock()
					rec.obs = append(rec.obs, observation{at: time.Now(), replica: r.name, incarnation: r.incarnation(),
						revision: s.Revision, leader: s.IsLeader, etcd: s.Etcd})
					rec.mu.Unlock()
				}
				sleepCtx(ctx, 50*time.Millisecond)
			}
		}()
	}
	return rec
}

// markDown records that r is being stopped on purpose; markUp that it is
// expected to answer again (after its restart has had time to listen).
func (rec *recorder) markDown(r *replica) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !rec.down[r.name] {
		rec.down[r.name] = true
		rec.spans[r.name] = append(rec.spans[r.name], [2]time.Time{time.Now(), {}})
	}
}

func (rec *recorder) markUp(r *replica) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.down[r.name] {
		rec.down[r.name] = false
		sp := rec.spans[r.name]
		sp[len(sp)-1][1] = time.Now()
	}
}

func (rec *recorder) stop() {
	rec.cancel()
	rec.wg.Wait()
}

// wasDown reports whether replica was marked down at t.
func (rec *recorder) wasDown(replica string, t time.Time) bool {
	for _, sp := range rec.spans[replica] {
		if !t.Before(sp[0]) && (sp[1].IsZero() || t.Before(sp[1])) {
			return true
		}
	}
	return false
}

// violations checks the invariants over the recorded history and etcd's
// own history; registered maps each server id to its address.
func (rec *recorder) violations(ctx context.Context, registered map[string]string) []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var v []string
	// I2: every replica answered throughout, unless it was down on purpose.
	var failed []answer
	for _, a := range rec.answers {
		if a.err != nil && !rec.wasDown(a.replica, a.at) {
			failed = append(failed, a)
		}
	}
	if len(failed) > 0 {
		v = append(v, fmt.Sprintf("I2: %d of %d get-tcp-ip calls failed on live replicas; first at %s on %s: %v",
			len(failed), len(rec.answers), failed[0].at.Format("15:04:05.000"), failed[0].replica, failed[0].err))
	}
	// I2 through the SDK: with its retries over replicas, its cache and
	// at least one tcp-server up, no connect may fail.
	if len(rec.sdkFailures) > 0 {
		v = append(v, fmt.Sprintf("I2: %d of %d SDK dials failed; first: %v", len(rec.sdkFailures), rec.sdkDials, rec.sdkFailures[0]))
	}
	// I3: per process incarnation, the applied revision never decreases.
	last := map[string]int64{}
	for _, o := range rec.obs {
		k := fmt.Sprintf("%s#%d", o.replica, o.incarnation)
		if o.revision < last[k] {
			v = append(v, fmt.Sprintf("I3: %s revision went back from %d to %d", k, last[k], o.revision))
		}
		last[k] = max(last[k], o.revision)
	}
	// I5: every answer named a registered server at its address.
	for _, a := range rec.answers {
		if a.err != nil {
			continue
		}
		if addr, ok := registered[a.id]; !ok || addr != a.addr {
			v = append(v, fmt.Sprintf("I5: %s answered %s at %s, registered at %q", a.replica, a.id, a.addr, addr))
			break
		}
	}
	v = append(v, checkEpochs(ctx, rec.c, rec.from)...)
	return v
}

// clientErrors counts what clients saw fail: get-tcp-ip errors on live
// replicas and failed SDK dials.
func (rec *recorder) clientErrors() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := len(rec.sdkFailures)
	for _, a := range rec.answers {
		if a.err != nil && !rec.wasDown(a.replica, a.at) {
			n++
		}
	}
	return n
}

// checkEpochs reads etcd's history of the prefix since the recorder
// started and checks I1: every health write carries the epoch of an
// election key that existed when it was written, and epochs never decrease
// along the revision order. If that history was compacted, the check starts
// at the compaction revision.
func checkEpochs(ctx context.Context, c *cluster, from int64) []string {
	initial, events, err := history(ctx, c, from)
	if err != nil {
		return []string{"I1: read etcd history: " + err.Error()}
	}
	var v []string
	alive := map[int64]bool{} // election keys by create revision
	byKey := map[string]int64{}
	var lastEpoch int64
	apply := func(typ mvccpb.Event_EventType, kv *mvccpb.KeyValue) {
		key := string(kv.Key)
		switch {
		case strings.HasPrefix(key, c.prefix+"election/"):
			if typ == mvccpb.DELETE {
				delete(alive, byKey[key])
				delete(byKey, key)
			} else {
				alive[kv.CreateRevision] = true
				byKey[key] = kv.CreateRevision
			}
		case strings.HasPrefix(key, c.prefix+"health/") && typ == mvccpb.PUT:
			var h struct {
				Epoch int64 `json:"epoch"`
			}
			if err := json.Unmarshal(kv.Value, &h); err != nil {
				v = append(v, fmt.Sprintf("I1: undecodable health write at revision %d", kv.ModRevision))
				return
			}
			if kv.ModRevision > from && !alive[h.Epoch] {
				v = append(v, fmt.Sprintf("I1: health write at revision %d carries epoch %d whose leader key was gone", kv.ModRevision, h.Epoch))
			}
			if h.Epoch < lastEpoch && kv.ModRevision > from {
				v = append(v, fmt.Sprintf("I1: epoch went back from %d to %d at revision %d", lastEpoch, h.Epoch, kv.ModRevision))
			}
			lastEpoch = max(lastEpoch, h.Epoch)
		}
	}
	for _, kv := range initial {
		apply(mvccpb.PUT, kv)
	}
	for _, ev := range events {
		apply(ev.Type, ev.Kv)
	}
	return v
}

// history returns the prefix's keys at revision from and every event after
// it up to now; from moves up to the compaction revision if needed.
func history(ctx context.Context, c *cluster, from int64) ([]*mvccpb.KeyValue, []*clientv3.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	// A mark under the prefix bounds the history: the watch ends at it.
	mark, err := c.cli.Put(ctx, c.prefix+"history-mark", time.Now().String())
	if err != nil {
		return nil, nil, err
	}
	end := mark.Header.Revision
	for {
		base, err := c.cli.Get(ctx, c.prefix, clientv3.WithPrefix(), clientv3.WithRev(from))
		if errors.Is(err, rpctypes.ErrCompacted) {
			from = compactRevision(ctx, c, from)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		var events []*clientv3.Event
		for resp := range c.cli.Watch(ctx, c.prefix, clientv3.WithPrefix(), clientv3.WithRev(from+1)) {
			if resp.CompactRevision != 0 {
				from = resp.CompactRevision
				events = nil
				break
			}
			if err := resp.Err(); err != nil {
				return nil, nil, err
			}
			events = append(events, resp.Events...)
			if len(resp.Events) > 0 && resp.Events[len(resp.Events)-1].Kv.ModRevision >= end {
				return base.Kvs, events, nil
			}
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
	}
}

// compactRevision finds the oldest revision still readable at or after
// from, by a watch from it that reports the compaction.
func compactRevision(ctx context.Context, c *cluster, from int64) int64 {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The first response says whether from was compacted.
	if resp, ok := <-c.cli.Watch(wctx, c.prefix+"history-mark", clientv3.WithRev(from)); ok && resp.CompactRevision != 0 {
		return resp.CompactRevision
	}
	return from
}
