package integration

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadFlags are the replica flags of the load-aware tests: fast probes and
// load reports, so that a reported change reaches get-tcp-ip within about
// a second.
var loadFlags = []string{"--leader-ttl", "2s", "--probe-interval", "250ms", "--probe-timeout", "200ms",
	"--rise", "2", "--fall", "2", "--shutdown-delay", "200ms", "--load-refresh", "1s", "--report-ttl", "5s"}

// lbServer is a tcp-server simulated in the test process: a TCP listener
// that accepts and closes (enough for the leader's connect probe) and a
// status endpoint serving the document of the status contract, with conns,
// max_conns and load set by the test. Clients are simulated as the conns
// counter: "connecting" a client is conns.Add(1).
type lbServer struct {
	id       string
	ln       net.Listener
	addr     string
	status   *httptest.Server
	conns    atomic.Int64
	maxConns atomic.Int64
	loadPm   atomic.Int64 // reported load in per mille
	draining atomic.Bool
	wg       sync.WaitGroup
	once     sync.Once
}

func startLBServer(t testing.TB, id string) *lbServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lbServer{id: id, ln: ln, addr: ln.Addr().String()}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	s.status = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if s.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintf(w, `{"conns":%d,"max_conns":%d,"load":%.3f,"draining":%v,"id":%q}`,
			s.conns.Load(), s.maxConns.Load(), float64(s.loadPm.Load())/1000, s.draining.Load(), s.id)
	}))
	t.Cleanup(s.kill)
	return s
}

// setLoad sets the reported load (0..1).
func (s *lbServer) setLoad(l float64) { s.loadPm.Store(int64(math.Round(l * 1000))) }

// kill closes the listener and the status endpoint, as a crash would.
func (s *lbServer) kill() {
	s.once.Do(func() {
		s.ln.Close()
		s.status.CloseClientConnections()
		s.status.Close()
		s.wg.Wait()
	})
}

// register writes the server's addr and status-url.
func (c *cluster) registerLB(t testing.TB, s *lbServer) {
	t.Helper()
	c.put(t, "servers/"+s.id+"/addr", s.addr)
	c.put(t, "servers/"+s.id+"/status-url", s.status.URL+"/status")
}

// lbView is a server as /v1/servers shows it with the load-aware fields.
type lbView struct {
	ID              string  `json:"id"`
	Weight          int     `json:"weight"`
	EffectiveWeight int     `json:"effective_weight"`
	Eligible        bool    `json:"eligible"`
	Healthy         bool    `json:"healthy"`
	Report          string  `json:"report"`
	Load            float64 `json:"load"`
	Conns           int64   `json:"conns"`
	Overloaded      bool    `json:"overloaded"`
	SlowStart       float64 `json:"slow_start"`
	Draining        bool    `json:"draining"`
	Assigned        int64   `json:"assigned"`
}

func (r *replica) lbServers() (map[string]lbView, bool, error) {
	var v struct {
		Panic   bool     `json:"panic"`
		Servers []lbView `json:"servers"`
	}
	if err := getJSON(r.http+"/v1/servers", &v); err != nil {
		return nil, false, err
	}
	m := make(map[string]lbView, len(v.Servers))
	for _, s := range v.Servers {
		m[s.ID] = s
	}
	return m, v.Panic, nil
}

// waitView polls every replica until cond holds for its view.
func (c *cluster) waitView(t testing.TB, d time.Duration, what string, cond func(map[string]lbView) error) {
	t.Helper()
	eventually(t, d, what, func() error {
		for _, r := range c.replicas {
			v, _, err := r.lbServers()
			if err != nil {
				return err
			}
			if err := cond(v); err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
		}
		return nil
	})
}

// shares asks r for n picks and returns the count per server id.
func shares(t testing.TB, r *replica, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		p, _, err := getTCPIP(r.http, "")
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		counts[p.ID]++
	}
	return counts
}

// TestLoadAwareBalancing walks acceptance 4 of issue 3 on three replicas:
// a server reporting rising load gets proportionally fewer clients, one
// reporting overload gets none until it recovers below the lower mark, and
// one that comes back ramps up over the slow-start window.
func TestLoadAwareBalancing(t *testing.T) {
	c := startCluster(t, clusterOpts{replicas: 3, extra: loadFlags})
	const window = 4 * time.Second
	c.put(t, "config/slow-start", window.String())
	servers := map[string]*lbServer{}
	for _, id := range []string{"s1", "s2", "s3"} {
		servers[id] = startLBServer(t, id)
		servers[id].maxConns.Store(10000)
		c.registerLB(t, servers[id])
	}
	c.waitEligible(c.replicas, 3)
	c.waitView(t, 15*time.Second, "fresh reports", func(v map[string]lbView) error {
		for id := range servers {
			if v[id].Report != "fresh" || v[id].EffectiveWeight != 100 {
				return fmt.Errorf("%s: report %q effective %d", id, v[id].Report, v[id].EffectiveWeight)
			}
		}
		return nil
	})

	t.Run("rising load gets proportionally fewer clients", func(t *testing.T) {
		for _, load := range []float64{0.5, 0.75} {
			servers["s1"].setLoad(load)
			want := 100 * (1 - load)
			var eff map[string]lbView
			c.waitView(t, 15*time.Second, fmt.Sprintf("s1 at load %v", load), func(v map[string]lbView) error {
				if math.Abs(float64(v["s1"].EffectiveWeight)-want) > 6 {
					return fmt.Errorf("s1 effective weight %d, want about %v", v["s1"].EffectiveWeight, want)
				}
				eff = v
				return nil
			})
			r := c.replicas[0]
			const calls = 1000
			counts := shares(t, r, calls)
			total := 0
			for _, s := range eff {
				total += s.EffectiveWeight
			}
			wantShare := float64(eff["s1"].EffectiveWeight) / float64(total)
			got := float64(counts["s1"]) / calls
			t.Logf("load %.2f: s1 effective weight %d of %d, share %.3f (want %.3f), counts %v", load,
				eff["s1"].EffectiveWeight, total, got, wantShare, counts)
			if math.Abs(got-wantShare) > 0.03 {
				t.Errorf("s1 share %.3f at load %v; want %.3f ± 0.03", got, load, wantShare)
			}
		}
		servers["s1"].setLoad(0)
	})

	t.Run("overload gets no clients until it recovers", func(t *testing.T) {
		s2 := servers["s2"]
		s2.setLoad(0.95)
		c.waitView(t, 10*time.Second, "s2 overloaded", func(v map[string]lbView) error {
			if !v["s2"].Overloaded || v["s2"].Eligible || !v["s2"].Healthy {
				return fmt.Errorf("s2 %+v", v["s2"])
			}
			return nil
		})
		for _, r := range c.replicas {
			if n := shares(t, r, 200)["s2"]; n != 0 {
				t.Errorf("%s sent %d clients to overloaded s2", r.name, n)
			}
		}
		// Between the marks (recover 0.8, threshold 0.9) it stays out.
		s2.setLoad(0.85)
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			if n := shares(t, c.replicas[1], 50)["s2"]; n != 0 {
				t.Fatalf("s2 at load 0.85 (between the marks) got %d clients; want none", n)
			}
		}
		s2.setLoad(0.3)
		c.waitView(t, 10*time.Second, "s2 recovered", func(v map[string]lbView) error {
			if v["s2"].Overloaded || !v["s2"].Eligible {
				return fmt.Errorf("s2 %+v", v["s2"])
			}
			return nil
		})
		if n := shares(t, c.replicas[2], 300)["s2"]; n == 0 {
			t.Errorf("recovered s2 gets no clients")
		}
		s2.setLoad(0)
	})

	t.Run("a server that comes back ramps up over the slow-start window", func(t *testing.T) {
		old := servers["s3"]
		old.kill()
		c.waitView(t, 10*time.Second, "s3 down", func(v map[string]lbView) error {
			if v["s3"].Healthy {
				return errNotYet
			}
			return nil
		})
		back := startLBServer(t, "s3")
		back.maxConns.Store(10000)
		c.registerLB(t, back)
		var first map[string]lbView
		c.waitView(t, 10*time.Second, "s3 up and ramping", func(v map[string]lbView) error {
			if !v["s3"].Eligible || v["s3"].SlowStart >= 1 {
				return fmt.Errorf("s3 %+v", v["s3"])
			}
			first = v
			return nil
		})
		upAt := time.Now()
		early := shares(t, c.replicas[0], 300)
		t.Logf("s3 early: slow_start %.2f effective %d, counts %v", first["s3"].SlowStart, first["s3"].EffectiveWeight, early)
		if frac := float64(early["s3"]) / 300; frac > 0.25 {
			t.Errorf("s3 took %.2f of clients at the start of its ramp; want well under its full third", frac)
		}
		// The weight grows without any etcd event, and reaches full weight
		// once the window has passed.
		prev := first["s3"].EffectiveWeight
		grew := false
		for time.Since(upAt) < window+2*time.Second {
			v, _, err := c.replicas[1].lbServers()
			if err != nil {
				t.Fatal(err)
			}
			w := v["s3"].EffectiveWeight
			grew = grew || w > prev
			if w < prev-5 {
				t.Errorf("s3 effective weight fell from %d to %d during its ramp", prev, w)
			}
			prev = max(prev, w)
			time.Sleep(200 * time.Millisecond)
		}
		c.waitView(t, 5*time.Second, "s3 at full weight", func(v map[string]lbView) error {
			if v["s3"].SlowStart != 1 || v["s3"].EffectiveWeight != 100 {
				return fmt.Errorf("s3 %+v", v["s3"])
			}
			return nil
		})
		if !grew {
			t.Errorf("s3's effective weight never grew during the window")
		}
		late := shares(t, c.replicas[0], 300)
		if frac := float64(late["s3"]) / 300; math.Abs(frac-1.0/3) > 0.05 {
			t.Errorf("s3 share %.2f after its ramp; want 1/3", frac)
		}
	})

	t.Run("drain keeps the server healthy and gives it no clients", func(t *testing.T) {
		c.put(t, "servers/s1/drain", "true")
		c.waitView(t, 10*time.Second, "s1 drained", func(v map[string]lbView) error {
			if !v["s1"].Draining || v["s1"].Eligible || !v["s1"].Healthy {
				return fmt.Errorf("s1 %+v", v["s1"])
			}
			return nil
		})
		if n := shares(t, c.replicas[2], 200)["s1"]; n != 0 {
			t.Errorf("drained s1 got %d clients", n)
		}
		c.put(t, "servers/s1/drain", "false")
	})
}
