package prober

import (
	"context"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// TestDirectory: replicas find one another's announcements, not their
// own; a stopped replica's announcement is revoked; the token is read from
// etcd and re-read on demand.
func TestDirectory(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	keys, err := keyspace.New(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	newDir := func(name, url string) *Directory {
		d, err := NewDirectory(cli, keys, name, url, time.Second, time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, bad := range []struct{ name, url string }{{"", "http://a:1"}, {"a/b", "http://a:1"}, {"a", "a:1"}} {
		if _, err := NewDirectory(cli, keys, bad.name, bad.url, time.Second, time.Second, nil); err == nil {
			t.Errorf("NewDirectory(%q, %q) accepted", bad.name, bad.url)
		}
	}
	a, b := newDir("a", "http://127.0.0.1:1001"), newDir("b", "http://127.0.0.1:1002")
	stopA, _ := runInBackground(t, "directory a", a.Run)
	runInBackground(t, "directory b", b.Run)
	ctx := context.Background()
	etcdtest.WaitFor(t, 5*time.Second, "b lists a", func() bool {
		peers, err := b.Peers(ctx)
		return err == nil && len(peers) == 1 && peers[0] == Peer{Name: "a", URL: "http://127.0.0.1:1001"}
	})
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	etcdtest.WaitFor(t, 5*time.Second, "a's announcement revoked on stop", func() bool {
		peers, err := b.Peers(ctx)
		return err == nil && len(peers) == 0
	})

	if tok, err := b.Token(ctx, false); err != nil || tok != "" {
		t.Errorf("Token before any was written = %q, %v; want empty", tok, err)
	}
	etcdtest.Put(t, cli, keys.OpinionToken(), "t1")
	time.Sleep(minTokenRead)
	if tok, _ := b.Token(ctx, false); tok != "t1" {
		t.Errorf("Token = %q; want t1 (nothing cached yet)", tok)
	}
	etcdtest.Put(t, cli, keys.OpinionToken(), "t2")
	if tok, _ := b.Token(ctx, false); tok != "t1" {
		t.Errorf("Token without refresh = %q; want the cached t1", tok)
	}
	time.Sleep(minTokenRead)
	if tok, _ := b.Token(ctx, true); tok != "t2" {
		t.Errorf("Token with refresh = %q; want t2", tok)
	}
}
