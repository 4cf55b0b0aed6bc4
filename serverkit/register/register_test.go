package register

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// poll calls f every 20ms until it returns true or d passes.
func poll(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunRegistersReregistersAndRevokes(t *testing.T) {
	m := etcdtest.Start(t)
	cli := m.Client(t)
	const key = "/p/servers/tcp1/addr"

	var mu sync.Mutex
	var leases []clientv3.LeaseID
	var failures []error
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cli, "/p/", "tcp1", "10.0.0.1:9000", time.Second,
			WithOnRegister(func(l clientv3.LeaseID) { mu.Lock(); leases = append(leases, l); mu.Unlock() }),
			WithOnError(func(err error) { mu.Lock(); failures = append(failures, err); mu.Unlock() }))
	}()
	get := func() *clientv3.GetResponse {
		gctx, gcancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer gcancel()
		resp, err := cli.Get(gctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	registered := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			r := get()
			return len(leases) == n && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "10.0.0.1:9000" &&
				clientv3.LeaseID(r.Kvs[0].Lease) == leases[n-1]
		}
	}
	poll(t, 5*time.Second, "registered under a lease", registered(1))

	// The key outlives several TTLs while the process lives.
	time.Sleep(2500 * time.Millisecond)
	if len(get().Kvs) != 1 {
		t.Fatal("key expired although the lease is kept alive")
	}

	// Losing the lease (here: revoked behind Run's back) registers again.
	mu.Lock()
	first := leases[0]
	mu.Unlock()
	rctx, rcancel := context.WithTimeout(t.Context(), 2*time.Second)
	_, err := cli.Revoke(rctx, first)
	rcancel()
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, "registered again under a new lease", registered(2))
	mu.Lock()
	if len(failures) != 1 || failures[0] != ErrLeaseLost {
		t.Errorf("failures %v, want one ErrLeaseLost", failures)
	}
	mu.Unlock()

	// Cancelling deletes the key at once (revoke), not after the TTL.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if len(get().Kvs) != 0 {
		t.Fatal("key still present after Run returned")
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	for _, tc := range []struct{ prefix, id, addr string }{
		{"p/", "tcp1", "h:1"},
		{"/p/", "bad id", "h:1"},
		{"/p/", "tcp1", "no-port"},
	} {
		if err := Run(t.Context(), nil, tc.prefix, tc.id, tc.addr, time.Second); err == nil {
			t.Errorf("Run(%q, %q, %q) accepted", tc.prefix, tc.id, tc.addr)
		}
	}
	if err := Run(t.Context(), nil, "/p/", "tcp1", "h:1", time.Second); err == nil {
		t.Error("nil client accepted")
	}
}
