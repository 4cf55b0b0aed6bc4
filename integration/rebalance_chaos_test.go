package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/client"
)

// Rebalancing under chaos (issue 13): with CHAOS_REBALANCE=on, the chaos
// cluster in network namespaces runs its tcp-servers with status documents,
// turns config/rebalance on, and keeps the leader busy rebalancing while
// the faults hit it: every chaosImbalanceEvery, chaosRBClients clients are
// connected straight to one tcp-server (bypassing the dispatcher, as if it
// had been alone), so the leader asks it to shed; shed clients come back
// through the SDK. The invariants of the loop are checked as always; the
// cleanup logs how much was shed, so a run that never rebalanced is seen.

const (
	chaosRBClients      = 60
	chaosImbalanceEvery = 20 * time.Second
)

// chaosRebalanceOn reports whether the chaos loop runs with rebalancing.
func chaosRebalanceOn() bool { return os.Getenv("CHAOS_REBALANCE") == "on" }

// chaosStatusAddr is the status address of chaos tcp-server i (in the hub).
func chaosStatusAddr(i int) string { return fmt.Sprintf("10.77.0.254:%d", 19101+i) }

// startChaosRebalance turns rebalancing on and starts the imbalancing load;
// ids and addrs are the tcp-servers, statusURLs their documents.
func (ch *chaos) startChaosRebalance(t *testing.T, lab *netLab, ids []string, statusURLs []string) {
	c := ch.cluster
	ch.put(c.prefix+"config/rebalance-rate", "10%/s,100%/m")
	ch.put(c.prefix+"config/rebalance", "on")
	hubHTTP := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dialer(lab.hub)}}

	var boot []string
	for _, r := range c.replicas {
		boot = append(boot, strings.TrimPrefix(r.http, "http://"))
	}
	cl, err := client.New(client.Config{Bootstrap: boot, HTTPClient: c.sdkHTTP, DialContext: c.sdkDial,
		RequestTimeout: time.Second, ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := client.NewReconnector(cl, client.ReconnectConfig{BackoffBase: 200 * time.Millisecond, BackoffCap: 2 * time.Second,
		MinDelay: 20 * time.Millisecond, ResetAfter: 5 * time.Second, GoodbyeJitter: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var goodbyes atomic.Int64
	session := func(_ context.Context, conn net.Conn, _ client.Answer) error {
		err := holdUntilGoodbye(conn)
		if errors.Is(err, client.ErrGoodbye) {
			goodbyes.Add(1)
		}
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for gen := 0; ctx.Err() == nil; gen++ {
			// One generation: every client starts on the same server.
			gctx, gcancel := context.WithTimeout(ctx, chaosImbalanceEvery)
			addr := ch.registered[ids[gen%len(ids)]]
			var gwg sync.WaitGroup
			for range chaosRBClients {
				gwg.Go(func() {
					conn, err := dialer(lab.hub)(gctx, "tcp", addr)
					if err == nil {
						stop := context.AfterFunc(gctx, func() { conn.Close() })
						// Ends when the server sheds it or gctx ends; either is fine.
						_ = session(gctx, conn, client.Answer{})
						stop()
						conn.Close()
					}
					if gctx.Err() == nil {
						_ = rc.Run(gctx, session)
					}
				})
			}
			gwg.Wait()
			gcancel()
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		var totals []string
		for i, u := range statusURLs {
			var d struct {
				ShedTotal int64 `json:"shed_total"`
			}
			if resp, err := hubHTTP.Get(u); err == nil {
				_ = json.NewDecoder(resp.Body).Decode(&d)
				resp.Body.Close()
			}
			totals = append(totals, fmt.Sprintf("%s=%d", ids[i], d.ShedTotal))
		}
		t.Logf("rebalancing under chaos: %d goodbyes read by clients; shed_total %s", goodbyes.Load(), strings.Join(totals, " "))
	})
}
