// Package register is the optional "push" mode of tcpdispatch: a
// tcp-server registers its own address in etcd under a lease, so the key
// disappears when the process dies.
//
// # Why pull is the default
//
// By default an operator registers a server once (etcdctl put
// <prefix>servers/<id>/addr) and the dispatcher's leader probes it. That is
// preferred because the probe tests what clients need: that the address
// accepts connections, from the network's side. A lease kept alive proves
// only that the process can reach etcd. A server cut off from its clients
// but not from etcd (a wrong firewall rule, a half-partitioned rack, a
// listener wedged while the process lives) keeps its lease and keeps being
// offered; a server reachable by clients but cut off from etcd loses its
// lease and is dropped while it could serve. Push also makes every server
// an etcd client, with credentials, a connection and a watchable write per
// server, and a dispatcher that cannot tell "crashed" from "deregistered".
//
// Push mode suits short-lived or autoscaled servers whose addresses are not
// known in advance. It composes with pull: the leader still probes the
// registered address and only healthy servers are offered.
//
// Run takes a ready client; build it with etcdconn.Dial to reach an etcd
// with TLS and auth (cmd/tcpserver does, from its --etcd-* flags). The
// credentials of a pushing server can rewrite servers/: see
// docs/SECURITY.md for the role it needs and how to narrow it.
package register

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch"
	"github.com/tcpdispatch/tcpdispatch/internal/backoff"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// opTimeout bounds each etcd call.
const opTimeout = 5 * time.Second

// ErrLeaseLost is reported to the OnError option when the lease expired or
// its keep-alive stopped (etcd unreachable for longer than the TTL); Run
// registers again.
var ErrLeaseLost = errors.New("registration lease lost")

// Option configures Run.
type Option func(*options)

type options struct {
	onError    func(error)
	onRegister func(lease clientv3.LeaseID)
}

// WithOnError sets a function called with every failure Run retries after.
func WithOnError(f func(error)) Option { return func(o *options) { o.onError = f } }

// WithOnRegister sets a function called each time the key is written under
// a new lease.
func WithOnRegister(f func(lease clientv3.LeaseID)) Option {
	return func(o *options) { o.onRegister = f }
}

// Run keeps <prefix>servers/<id>/addr = addr in etcd, attached to a lease of
// ttl (rounded up to whole seconds, at least 1s) kept alive by cli, until
// ctx is cancelled; then it revokes the lease, deleting the key at once, and
// returns nil. When the lease is lost or etcd cannot be reached it registers
// again after a backoff with full jitter. It returns an error only for
// invalid arguments.
//
// Run overwrites the key: an operator's value for the same id is replaced
// and, being leased now, deleted when Run ends. Two processes registering
// the same id overwrite each other. The server's weight and other keys are
// the operator's and are left alone.
func Run(ctx context.Context, cli *clientv3.Client, prefix, id, addr string, ttl time.Duration, opts ...Option) error {
	keys, err := keyspace.New(prefix)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if err := tcpdispatch.ValidateID(id); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if addr, err = keyspace.ParseAddr(addr); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if cli == nil {
		return errors.New("register: nil etcd client")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	secs := max(int64((ttl+time.Second-1)/time.Second), 1)
	key := keys.ServerField(id, keyspace.FieldAddr)
	// Retry after a failed registration or a lost lease: full jitter
	// between 100ms and min(30s, 500ms·2^n).
	retry := backoff.Exponential{Base: 500 * time.Millisecond, Cap: 30 * time.Second, Floor: 100 * time.Millisecond, Jitter: backoff.Full}
	for {
		registered := false
		err := hold(ctx, cli, key, addr, secs, func(id clientv3.LeaseID) {
			registered = true
			if o.onRegister != nil {
				o.onRegister(id)
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		if registered {
			// A registration that held for a while and was then lost
			// starts the backoff over: a blip after days of service must
			// not wait 30s.
			retry.Reset()
		}
		if o.onError != nil {
			o.onError(err)
		}
		if !retry.Wait(ctx) {
			return nil
		}
	}
}

// hold grants a lease, writes the key under it and keeps the lease alive
// until ctx ends or the lease is lost; it revokes the lease on the way out.
func hold(ctx context.Context, cli *clientv3.Client, key, addr string, ttl int64, onRegister func(clientv3.LeaseID)) error {
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	lease, err := cli.Grant(gctx, ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	defer func() {
		// ctx may be over: revoking is cleanup, with a budget of its own.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		_, _ = cli.Revoke(rctx, lease.ID)
		cancel()
	}()
	kctx, stopKeepAlive := context.WithCancel(ctx)
	defer stopKeepAlive()
	alive, err := cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keep lease alive: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	_, err = cli.Put(pctx, key, addr, clientv3.WithLease(lease.ID))
	cancel()
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if onRegister != nil {
		onRegister(lease.ID)
	}
	for range alive {
		// The channel closes when ctx ends or the lease cannot be renewed.
	}
	return ErrLeaseLost
}
