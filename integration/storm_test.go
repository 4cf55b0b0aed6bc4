package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// The reconnect storm of issue 3, acceptance 3, simulated:
//
//   - 10 tcp-servers are lbServers in the test process: real TCP listeners
//     (for the leader's probes) with real status endpoints that report the
//     server's conns from a counter, max_conns 4000.
//   - 20,000 long-lived clients are simulated as those counters: the
//     servers start with 20,000 between them (1,910 to 2,090 each), so
//     the reports differ a little, as real ones do.
//   - One server is killed: its listener and status endpoint close. Its
//     ~2,000 clients reconnect within about a second, each with one real
//     GET /get-tcp-ip to one of three real replica processes (clients
//     round-robin over the replicas). A client sent to the dead server
//     (before the replicas learnt it died) fails to connect and asks again
//     with ?exclude=<dead id>. A client counts as connected by adding one
//     to its server's counter, which the next status pull reports.
//
// The figure is max/mean of the surviving servers' conns once every client
// has reconnected.

const (
	stormServers = 10
	stormClients = 20000
	stormWindow  = time.Second // the reconnects are spread over this
)

// stormRow is one strategy under test.
type stormRow struct {
	name, strategy string
	accounting     bool
}

var stormRows = []stormRow{
	{"wrr", "wrr", true},
	{"p2c", "p2c", true},
	{"least-load, no accounting", "least-load", false},
	{"least-load, accounting", "least-load", true},
	{"random", "random", true},
}

// storm is a cluster of three replicas with stormServers servers.
type storm struct {
	c       *cluster
	servers []*lbServer
}

func startStorm(t testing.TB) *storm {
	t.Helper()
	c := startCluster(t, clusterOpts{replicas: 3, extra: loadFlags})
	st := &storm{c: c}
	for i := range stormServers {
		st.servers = append(st.servers, st.newServer(t, i))
	}
	return st
}

func (st *storm) newServer(t testing.TB, i int) *lbServer {
	s := startLBServer(t, fmt.Sprintf("s%02d", i+1))
	s.maxConns.Store(4000)
	st.c.registerLB(t, s)
	return s
}

// initial is server i's simulated client count before the storm.
func initial(i int) int64 {
	return int64(stormClients/stormServers + (2*i-(stormServers-1))*10)
}

// round runs one storm under row and returns max/mean conns of the
// survivors and how long the reconnects took.
func (st *storm) round(t testing.TB, row stormRow) (float64, time.Duration) {
	t.Helper()
	c := st.c
	c.put(t, "config/strategy", row.strategy)
	c.put(t, "config/assignment-accounting", fmt.Sprint(row.accounting))
	for i, s := range st.servers {
		s.conns.Store(initial(i))
	}
	c.waitView(t, 30*time.Second, "all servers eligible with current reports", func(v map[string]lbView) error {
		for i, s := range st.servers {
			sv := v[s.id]
			if !sv.Eligible || sv.Report != "fresh" || sv.Conns != initial(i) {
				return fmt.Errorf("%s: eligible %v report %q conns %d", s.id, sv.Eligible, sv.Report, sv.Conns)
			}
		}
		return nil
	})
	eventually(t, 10*time.Second, "strategy "+row.strategy, func() error {
		for _, r := range c.replicas {
			var v struct {
				Strategy  string `json:"strategy"`
				Balancing struct {
					Accounting bool `json:"assignment_accounting"`
				} `json:"balancing"`
			}
			if err := getJSON(r.http+"/v1/servers", &v); err != nil {
				return err
			}
			if v.Strategy != row.strategy || v.Balancing.Accounting != row.accounting {
				return fmt.Errorf("%s: %s accounting %v", r.name, v.Strategy, v.Balancing.Accounting)
			}
		}
		return nil
	})

	victim := st.servers[stormServers-1]
	orphans := int(victim.conns.Load())
	victim.kill()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	byID := map[string]*lbServer{}
	for _, s := range st.servers[:stormServers-1] {
		byID[s.id] = s
	}
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range 32 {
		wg.Go(func() {
			for client := range work {
				r := c.replicas[client%len(c.replicas)]
				query := ""
				for attempt := 0; ; attempt++ {
					if ctx.Err() != nil || attempt > 20 {
						mu.Lock()
						errs = append(errs, fmt.Errorf("client %d: no server after %d attempts", client, attempt))
						mu.Unlock()
						return
					}
					p, _, err := getTCPIP(r.http, query)
					if err != nil {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					if s := byID[p.ID]; s != nil {
						s.conns.Add(1)
						break
					}
					// Sent to the dead server: the connect fails, ask again
					// without it.
					query = "?exclude=" + url.QueryEscape(victim.id)
				}
			}
		})
	}
	// Reconnects arrive spread over the window, in random order.
	order := rand.Perm(orphans)
	for k, client := range order {
		if due := start.Add(stormWindow * time.Duration(k) / time.Duration(orphans)); time.Until(due) > 0 {
			time.Sleep(time.Until(due))
		}
		select {
		case work <- client:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	took := time.Since(start)
	if len(errs) > 0 {
		t.Fatalf("%d clients failed to reconnect, first: %v", len(errs), errs[0])
	}
	var mx, sum float64
	var counts []string
	for _, s := range st.servers[:stormServers-1] {
		n := float64(s.conns.Load())
		mx, sum = max(mx, n), sum+n
		counts = append(counts, fmt.Sprint(s.conns.Load()))
	}
	ratio := mx / (sum / float64(stormServers-1))
	t.Logf("%-26s max/mean %.3f, %d clients reconnected in %v; survivors: %s", row.name, ratio, orphans, took.Round(time.Millisecond), strings.Join(counts, " "))

	// Bring the victim back for the next round.
	st.servers[stormServers-1] = st.newServer(t, stormServers-1)
	return ratio, took
}

// TestStormReconnect is the short version of the reconnect-storm benchmark:
// the default strategy and least-load with accounting must keep max/mean
// connections of the survivors at or below 1.10.
func TestStormReconnect(t *testing.T) {
	st := startStorm(t)
	for _, row := range []stormRow{stormRows[0], stormRows[3]} {
		ratio, took := st.round(t, row)
		if ratio > 1.10 {
			t.Errorf("%s: max/mean %.3f after the storm; want <= 1.10", row.name, ratio)
		}
		// A hang detector, not a speed target: the time is a benchmark
		// figure (BenchmarkReconnectStorm), and CPU contention stretches it.
		if took > 30*time.Second {
			t.Errorf("%s: reconnects took %v; want them to finish", row.name, took)
		}
	}
}

// BenchmarkReconnectStorm runs the reconnect storm (see the comment at the
// top of this file) for every strategy and reports max/mean connections per
// surviving server as <row>-max/mean. Run with -benchtime 1x.
func BenchmarkReconnectStorm(b *testing.B) {
	st := startStorm(b)
	for b.Loop() {
		for _, row := range stormRows {
			ratio, _ := st.round(b, row)
			b.ReportMetric(ratio, strings.NewReplacer(" ", "", ",", "-").Replace(row.name)+"-max/mean")
		}
	}
}
