package prober

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// gatedWriter holds every transaction while its gate is shut, and fails
// the next fail transactions let through.
type gatedWriter struct {
	*fencedWriter
	mu   sync.Mutex
	gate chan struct{} // nil: open
	held int           // transactions that waited at the gate
	fail int
}

func (w *gatedWriter) Txn(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	w.mu.Lock()
	gate := w.gate
	if gate != nil {
		w.held++
	}
	w.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	w.mu.Lock()
	fail := w.fail > 0
	if fail {
		w.fail--
	}
	w.mu.Unlock()
	if fail {
		return nil, errors.New("injected write failure")
	}
	return w.fencedWriter.Txn(ctx, cmps, ops...)
}

func (w *gatedWriter) shut() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gate, w.held = make(chan struct{}), 0
}

// open lets the held transactions through, the next fail of them failing.
func (w *gatedWriter) open(fail int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fail = fail
	close(w.gate)
	w.gate = nil
}

func (w *gatedWriter) heldTxns() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.held
}

// runGated runs a prober without links, writing through a gatedWriter.
func runGated(t *testing.T, e *env) (*Prober, *gatedWriter) {
	cfg := testConfig()
	cfg.DisableLinks = true
	p, _ := newTestProber(t, cfg, e.keys, e.w)
	wr := &gatedWriter{fencedWriter: newFencedWriter(t, e.cli, "leader")}
	runInBackground(t, "prober", func(ctx context.Context) error { return p.Run(ctx, wr) })
	return p, wr
}

// TestProberProbesWhileWriting: a write that etcd is slow to commit holds
// up neither the probes nor the verdicts due meanwhile; they are written
// after it, one flush at a time.
func TestProberProbesWhileWriting(t *testing.T) {
	e := newEnv(t)
	a, b := listen(t, ""), listen(t, "")
	e.register(t, "a", a.addr)
	e.waitSnapshot(t, e.register(t, "b", b.addr))
	p, wr := runGated(t, e)
	for _, id := range []string{"a", "b"} {
		waitHealth(t, e.cli, e.keys, id, "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })
	}

	wr.shut()
	before := testutil.ToFloat64(p.metrics.transitions)
	a.close()
	etcdtest.WaitFor(t, 10*time.Second, "a's down record to be in flight", func() bool { return wr.heldTxns() > 0 })
	b.close()
	etcdtest.WaitFor(t, 10*time.Second, "b judged down while a's record is being written", func() bool {
		return testutil.ToFloat64(p.metrics.transitions) >= before+2
	})
	if n := wr.heldTxns(); n != 1 {
		t.Errorf("%d transactions in flight at once; want one flush at a time", n)
	}
	wr.open(0)
	for _, id := range []string{"a", "b"} {
		waitHealth(t, e.cli, e.keys, id, "down", func(h store.Health, ok bool) bool { return ok && !h.Healthy })
	}
}

// TestProberFailedWriteKeepsNewer: a record whose write failed is written
// again, unless a newer verdict replaced it meanwhile: then the newer one
// is written and the failed one never is.
func TestProberFailedWriteKeepsNewer(t *testing.T) {
	e := newEnv(t)
	a := listen(t, "")
	e.waitSnapshot(t, e.register(t, "a", a.addr))
	p, wr := runGated(t, e)
	up := waitHealth(t, e.cli, e.keys, "a", "up", func(h store.Health, ok bool) bool { return ok && h.Healthy })

	// Every record of a from here on.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wch := e.cli.Watch(ctx, e.keys.Health("a"), clientv3.WithRev(currentRev(t, e.cli)+1))

	wr.shut()
	a.close()
	etcdtest.WaitFor(t, 10*time.Second, "a's down record to be in flight", func() bool { return wr.heldTxns() > 0 })
	before := testutil.ToFloat64(p.metrics.transitions)
	listen(t, a.addr) // a again, on the same addr
	etcdtest.WaitFor(t, 10*time.Second, "a judged up again while its down record is in flight", func() bool {
		return testutil.ToFloat64(p.metrics.transitions) >= before+1
	})
	wr.open(1) // the down record's write fails
	last := waitHealth(t, e.cli, e.keys, "a", "up, after the failed write", func(h store.Health, ok bool) bool {
		return ok && h.Healthy && h.CheckedAt.After(up.CheckedAt)
	})
	// Another interval for a stray down record to show.
	time.Sleep(3 * interval)
	cancel()
	for resp := range wch {
		for _, ev := range resp.Events {
			var h store.Health
			if err := json.Unmarshal(ev.Kv.Value, &h); err != nil {
				t.Fatal(err)
			}
			if !h.Healthy {
				t.Errorf("a written down (%+v) after its newer up verdict %+v", h, last)
			}
		}
	}
}
