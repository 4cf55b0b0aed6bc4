package api_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/api"
	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// staticSource serves one fixed snapshot.
type staticSource struct{ snap *store.Snapshot }

func (s staticSource) Snapshot() *store.Snapshot { return s.snap }
func (s staticSource) Sync() store.Sync          { return store.Sync{Revision: s.snap.Revision, At: time.Now()} }
func (s staticSource) Age() time.Duration        { return 0 }
func (s staticSource) Reachable() bool           { return true }

type notLeader struct{}

func (notLeader) IsLeader() bool { return false }

func snapshotOf(tb testing.TB, n int) *store.Snapshot {
	servers := make([]store.Server, n)
	for i := range servers {
		servers[i] = store.Server{ID: fmt.Sprintf("tcp%d", i), Addr: fmt.Sprintf("10.0.%d.%d:9000", i/250, i%250),
			Weight: 100, Healthy: true, State: "up", Eligible: true}
	}
	s, err := store.NewSnapshot(1, balancer.WRR, servers, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// serve runs h on a loopback listener until the benchmark ends.
func serve(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return "http://" + ln.Addr().String()
}

// servePublic runs srv's public listener on loopback until the benchmark
// ends.
func servePublic(b *testing.B, srv *api.Server) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	return "http://" + ln.Addr().String()
}

// drive sends n GETs to url over conc keep-alive connections and returns
// the requests per second.
func drive(b *testing.B, client *http.Client, url string, n, conc int) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	per := n / conc
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				resp, err := client.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(per*conc) / time.Since(start).Seconds()
}

// BenchmarkGetTCPIPVsBare compares get-tcp-ip on one replica's public
// listener (Run: fasthttp, 10 servers, wrr) with a bare net/http handler writing a fixed body
// of the same size, over real loopback HTTP with keep-alive, alternating
// the two in rounds within one run so machine noise hits both alike. It
// reports both rates and their ratio (target >= 0.9).
func BenchmarkGetTCPIPVsBare(b *testing.B) {
	benchVsBare(b, api.Config{Name: "bench"})
}

// BenchmarkGetTCPIPVsBareRateLimited is BenchmarkGetTCPIPVsBare with the
// per-address rate limiter on (a limit never reached) and trusted proxies
// configured: the cost of both on the serving path.
func BenchmarkGetTCPIPVsBareRateLimited(b *testing.B) {
	benchVsBare(b, rateLimited())
}

func rateLimited() api.Config {
	return api.Config{Name: "bench", Security: api.Security{RateLimit: 1e9, RateBurst: 1e9,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
}

func benchVsBare(b *testing.B, cfg api.Config) {
	srv, err := api.New(cfg, staticSource{snapshotOf(b, 10)}, notLeader{}, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"id":"tcp1","addr":"10.0.0.1:9000"}`)
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"application/json"}
		_, _ = w.Write(body)
	})
	ours := servePublic(b, srv) + "/get-tcp-ip"
	base := serve(b, bare) + "/get-tcp-ip"
	const conc = 8
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * conc}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	drive(b, client, ours, 2000, conc) // warm up connections and code paths
	drive(b, client, base, 2000, conc)
	var oursRate, baseRate float64
	rounds := 0
	for b.Loop() {
		baseRate += drive(b, client, base, 4000, conc)
		oursRate += drive(b, client, ours, 4000, conc)
		rounds++
	}
	b.ReportMetric(baseRate/float64(rounds), "bare-req/s")
	b.ReportMetric(oursRate/float64(rounds), "get-tcp-ip-req/s")
	b.ReportMetric(oursRate/baseRate, "ratio")
}

// BenchmarkHandler measures the get-tcp-ip handler alone (no network) with
// 10,000 servers in the snapshot: ns and allocations per request.
func BenchmarkHandler(b *testing.B) {
	benchHandler(b, api.Config{Name: "bench"})
}

// BenchmarkHandlerRateLimited is BenchmarkHandler with the rate limiter on
// (a limit never reached) and trusted proxies configured.
func BenchmarkHandlerRateLimited(b *testing.B) {
	benchHandler(b, rateLimited())
}

func benchHandler(b *testing.B, cfg api.Config) {
	srv, err := api.New(cfg, staticSource{snapshotOf(b, 10000)}, notLeader{}, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	req, _ := http.NewRequest(http.MethodGet, "/get-tcp-ip", nil)
	req.RemoteAddr = "192.0.2.1:5555"
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		w.code = 0
		h.ServeHTTP(w, req)
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(c int)   { w.code = c }
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return len(p), nil
}
