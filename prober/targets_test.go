package prober

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// TestProbeTargetPolicy checks the dial-time half of --allowed-targets: a
// host name resolving outside the policy fails its probe and its status
// pull.
func TestProbeTargetPolicy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	keys, err := keyspace.New("/p/")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Targets = store.NewTargetPolicy([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	p, err := New(cfg, keys, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, reason, local := p.check(ctx, "localhost:"+port, 0)
	if ok || local || !strings.Contains(reason, store.ErrTargetNotAllowed.Error()) {
		t.Errorf("probe of a name resolving outside the policy = %v %q (local %v); want down, not allowed, a verdict", ok, reason, local)
	}
	_, err = pullStatus(ctx, p.http, "http://localhost:"+port+"/status?token=s3cr3t", time.Second)
	if err == nil || !strings.Contains(err.Error(), "not allowed") || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("status pull outside the policy = %v; want refused, without the token", err)
	}

	cfg.Targets = store.TargetPolicy{}
	if p, err = New(cfg, keys, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if ok, reason, _ := p.check(ctx, "localhost:"+port, 0); !ok {
		t.Errorf("probe under the default policy = down: %s", reason)
	}
}
