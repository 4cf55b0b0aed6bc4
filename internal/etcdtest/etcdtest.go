// Package etcdtest starts real, embedded etcd members for tests: free
// loopback ports, a data dir under t.TempDir(), quiet logs, and cleanup that
// waits for the member to stop.
package etcdtest

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Member is one running embedded etcd member.
type Member struct {
	Etcd      *embed.Etcd
	ClientURL string
	DataDir   string
	stopOnce  sync.Once
}

// Stop stops the member and waits for it; later calls do nothing (embed's
// own Close panics when called twice).
func (m *Member) Stop() {
	m.stopOnce.Do(func() {
		m.Etcd.Close()
		<-m.Etcd.Server.StopNotify()
	})
}

// Option changes how Start configures the member.
type Option func(*options)

type options struct {
	certFile, keyFile, caFile string
	quota                     int64
	bcryptCost                int
}

// WithQuota sets the member's backend quota in bytes (etcd's
// --quota-backend-bytes), so that a test can raise the NOSPACE alarm.
func WithQuota(bytes int64) Option {
	return func(o *options) { o.quota = bytes }
}

// WithBcryptCost sets the cost of the password hashes of users added to
// the member (etcd's --bcrypt-cost; tests default to the minimum, 4; etcd
// itself to 10, about 0.1 s per password check here, ten times that under
// -race).
func WithBcryptCost(cost int) Option {
	return func(o *options) { o.bcryptCost = cost }
}

// WithClientTLS serves clients over https with the PEM certificate and key;
// with caFile set, clients must present a certificate signed by it
// (etcd's --client-cert-auth). Member.ClientURL is then https://.
func WithClientTLS(certFile, keyFile, caFile string) Option {
	return func(o *options) { o.certFile, o.keyFile, o.caFile = certFile, keyFile, caFile }
}

// Start runs a single-member etcd cluster and returns it once it serves
// requests. The member is stopped when the test ends.
func Start(t testing.TB, opts ...Option) *Member {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = t.TempDir()
	scheme := "http"
	if o.certFile != "" {
		scheme = "https"
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = o.certFile, o.keyFile
		cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = o.caFile, o.caFile != ""
	}
	cURL := mustURL(t, fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(t)))
	pURL := mustURL(t, fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)))
	cfg.ListenClientUrls = []url.URL{*cURL}
	cfg.AdvertiseClientUrls = []url.URL{*cURL}
	cfg.ListenPeerUrls = []url.URL{*pURL}
	cfg.AdvertisePeerUrls = []url.URL{*pURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Short raft timers keep lease expiry and leader election tests fast;
	// the minimum lease TTL becomes 1.5 × 250ms.
	cfg.QuotaBackendBytes = o.quota
	cfg.TickMs = 25
	cfg.ElectionMs = 250
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// bcrypt's minimum cost: at etcd's default (10) one Authenticate
	// costs seconds of CPU under the race detector on a loaded machine,
	// longer than a replica's 1s election call, which then never gets a
	// token.
	cfg.BcryptCost = uint(cmp.Or(o.bcryptCost, 4))
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		t.Fatal("etcd did not become ready within 20s")
	}
	m := &Member{Etcd: e, ClientURL: cURL.String(), DataDir: cfg.Dir}
	t.Cleanup(m.Stop)
	return m
}

// Client returns a client of m that is closed when the test ends.
func (m *Member) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{m.ClientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Get(ctx, "health-check"); err != nil {
		t.Fatalf("etcd not reachable: %v", err)
	}
	return cli
}

// FreePort returns a loopback TCP port that was free a moment ago; see
// FreePorts.
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// Ports handed out by FreePorts lie below the kernel's ephemeral range
// (32768–60999 here): a port the kernel picks for a listener on :0 is one
// any outgoing connection may take as its source port between the moment
// it is released and the moment the caller binds it again, whereas a port
// outside the range is only ever taken by another listener.
const minPort, maxPort = 20000, 32000

// FreePorts returns n distinct loopback TCP ports that were free a moment
// ago, chosen at random below the kernel's ephemeral range.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for try := 0; len(ports) < n; try++ {
		if try == 100*n {
			t.Fatalf("free ports: found %d of %d between %d and %d", len(ports), n, minPort, maxPort)
		}
		port := minPort + rand.IntN(maxPort-minPort)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken
		}
		ls = append(ls, l) // held until all are found: distinct
		ports = append(ports, port)
	}
	return ports
}

func mustURL(t testing.TB, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Put writes key=value and returns the revision of the write; it fails the
// test on error.
func Put(t testing.TB, cli *clientv3.Client, key, value string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Put(ctx, key, value)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp.Header.Revision
}

// Delete deletes key (with opts, e.g. clientv3.WithPrefix()) and returns the
// revision; it fails the test on error.
func Delete(t testing.TB, cli *clientv3.Client, key string, opts ...clientv3.OpOption) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Delete(ctx, key, opts...)
	if err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
	return resp.Header.Revision
}

// WaitFor polls cond every 10ms until it holds, failing the test with what
// if d passes first.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
