package prober

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/internal/backoff"
	"github.com/tcpdispatch/tcpdispatch/internal/logging"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// announcement is the value of keyspace.Layout.Replica: how other replicas reach
// this one's HTTP API.
type announcement struct {
	Name string `json:"name"`
	HTTP string `json:"http"`
}

// Directory publishes this replica's advertised HTTP URL under
// keyspace.Layout.Replica, on a lease, and lists the other replicas' ones, so
// that a leader can ask them for a second opinion. It also reads the
// leader's opinion token for the opinion route.
type Directory struct {
	cli     *clientv3.Client
	keys    keyspace.Layout
	self    announcement
	ttl     time.Duration
	timeout time.Duration
	log     *logrus.Entry

	mu        sync.Mutex
	token     string
	tokenRead time.Time
}

// NewDirectory returns a directory for replica name reachable at httpURL.
// ttl is the lease of the announcement (at least 1s; a dead replica drops
// out of the list within it); timeout bounds each etcd call.
func NewDirectory(cli *clientv3.Client, keys keyspace.Layout, name, httpURL string, ttl, timeout time.Duration, log *logrus.Entry) (*Directory, error) {
	switch {
	case cli == nil:
		return nil, errors.New("directory: nil etcd client")
	case name == "" || strings.Contains(name, "/"):
		return nil, fmt.Errorf("directory: replica name %q: must be non-empty without /", name)
	case !strings.HasPrefix(httpURL, "http://") && !strings.HasPrefix(httpURL, "https://"):
		return nil, fmt.Errorf("directory: advertised HTTP URL %q: want http://host:port", httpURL)
	case ttl < time.Second || timeout <= 0:
		return nil, errors.New("directory: ttl must be at least 1s and timeout positive")
	}
	log = logging.OrDiscard(log)
	return &Directory{cli: cli, keys: keys, self: announcement{Name: name, HTTP: httpURL}, ttl: ttl, timeout: timeout, log: log}, nil
}

// Run keeps the announcement in etcd until ctx is cancelled, then revokes
// it. A lost lease (etcd unreachable past the TTL) is re-granted.
func (d *Directory) Run(ctx context.Context) error {
	val, err := json.Marshal(d.self)
	if err != nil {
		return fmt.Errorf("encode announcement: %w", err)
	}
	for {
		err := d.announce(ctx, string(val))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			d.log.WithError(err).Debug("announce replica; retrying")
		}
		if !backoff.Sleep(ctx, time.Second) {
			return nil
		}
	}
}

// announce puts the announcement on a fresh lease and keeps it alive until
// the lease is lost or ctx is cancelled (then the lease is revoked).
func (d *Directory) announce(ctx context.Context, val string) error {
	gctx, cancel := context.WithTimeout(ctx, d.timeout)
	lease, err := d.cli.Grant(gctx, int64((d.ttl+time.Second-1)/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.timeout)
		defer cancel()
		_, _ = d.cli.Revoke(rctx, lease.ID)
	}()
	pctx, cancel := context.WithTimeout(ctx, d.timeout)
	_, err = d.cli.Put(pctx, d.keys.Replica(d.self.Name), val, clientv3.WithLease(lease.ID))
	cancel()
	if err != nil {
		return fmt.Errorf("put announcement: %w", err)
	}
	kch, err := d.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keep announcement alive: %w", err)
	}
	for range kch {
	}
	return errors.New("announcement lease lost")
}

// Peers lists the other replicas' announcements.
func (d *Directory) Peers(ctx context.Context) ([]Peer, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	resp, err := d.cli.Get(ctx, d.keys.Replicas(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	var out []Peer
	for _, kv := range resp.Kvs {
		var a announcement
		if json.Unmarshal(kv.Value, &a) != nil || a.Name == d.self.Name || a.HTTP == "" {
			continue
		}
		out = append(out, Peer{Name: a.Name, URL: a.HTTP})
	}
	return out, nil
}

// minTokenRead spaces forced reads of the token, so that requests with a
// wrong token cannot turn into a flood of etcd reads.
const minTokenRead = 250 * time.Millisecond

// Token returns the leader's opinion token, read from etcd when refresh is
// set (at most every 250ms) or when none was read yet.
func (d *Directory) Token(ctx context.Context, refresh bool) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.token != "" && (!refresh || time.Since(d.tokenRead) < minTokenRead) {
		return d.token, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	resp, err := d.cli.Get(ctx, d.keys.OpinionToken())
	if err != nil {
		return "", fmt.Errorf("read opinion token: %w", err)
	}
	d.tokenRead = time.Now()
	d.token = ""
	if len(resp.Kvs) > 0 {
		d.token = string(resp.Kvs[0].Value)
	}
	return d.token, nil
}
