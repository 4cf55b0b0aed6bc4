package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
)

// TestAutoTLS runs a replica whose member serves its client and peer URLs
// with --auto-tls: the replica's own client must reach it over TLS, pinning
// the generated certificate.
func TestAutoTLS(t *testing.T) {
	cfg := DefaultConfig()
	dir := t.TempDir()
	cfg.Name = "auto"
	cfg.ListenHTTP = fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t))
	client := fmt.Sprintf("https://127.0.0.1:%d", etcdtest.FreePort(t))
	peer := fmt.Sprintf("https://127.0.0.1:%d", etcdtest.FreePort(t))
	e := &cfg.Embed
	e.DataDir = filepath.Join(dir, "auto.etcd")
	e.ListenClientURLs, e.AdvertiseClientURLs = client, client
	e.ListenPeerURLs, e.InitialAdvertisePeerURLs = peer, peer
	e.ClientAutoTLS, e.PeerAutoTLS = true, true
	cfg.EtcdLogLevel = "error"
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	hc := &http.Client{Timeout: 2 * time.Second}
	etcdtest.WaitFor(t, 30*time.Second, "the replica reaches its auto-tls member", func() bool {
		resp, err := hc.Get("http://" + cfg.ListenHTTP + "/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			Etcd string `json:"etcd"`
		}
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Etcd == "ok"
	})
}
