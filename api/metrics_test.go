package api_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tcpdispatch/tcpdispatch/api"
)

type isLeader struct{}

func (isLeader) IsLeader() bool { return true }

// scrape returns the /metrics body of h.
func scrape(tb testing.TB, h http.Handler) string {
	tb.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		tb.Fatalf("/metrics: status %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestMetrics(t *testing.T) {
	for _, tc := range []struct {
		name      string
		perServer bool
	}{{"per-server", true}, {"no per-server", false}} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			cfg := api.DefaultConfig()
			cfg.Name, cfg.MetricsPerServer = "r1", tc.perServer
			snap := snapshotOf(t, 3)
			srv, err := api.New(cfg, staticSource{snap}, isLeader{}, nil, reg, reg)
			if err != nil {
				t.Fatal(err)
			}
			h := srv.Handler()
			for range 5 {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/get-tcp-ip?key=k1", nil))
				if rec.Code != http.StatusOK {
					t.Fatalf("get-tcp-ip: %d", rec.Code)
				}
			}
			var picked struct{ ID string }
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/get-tcp-ip?key=k2&n=2", nil))
			if err := json.Unmarshal(rec.Body.Bytes(), &picked); err != nil {
				t.Fatal(err)
			}
			body := scrape(t, h)
			parser := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
			if err != nil {
				t.Fatalf("parse scrape: %v", err)
			}
			for _, name := range []string{"tcpdispatch_is_leader", "tcpdispatch_snapshot_age_seconds", "tcpdispatch_etcd_reachable",
				"tcpdispatch_build_info", "tcpdispatch_get_tcp_ip_duration_seconds", "tcpdispatch_replicas", "tcpdispatch_has_leader"} {
				if fams[name] == nil {
					t.Errorf("%s missing from the scrape", name)
				}
			}
			if got := fams["tcpdispatch_get_tcp_ip_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); got != 6 {
				t.Errorf("latency histogram counted %d requests, want 6", got)
			}
			if got := fams["tcpdispatch_is_leader"].GetMetric()[0].GetGauge().GetValue(); got != 1 {
				t.Errorf("is_leader = %v, want 1", got)
			}
			bi := fams["tcpdispatch_build_info"].GetMetric()[0]
			labels := map[string]string{}
			for _, l := range bi.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["goversion"] == "" || labels["version"] == "" || labels["revision"] == "" {
				t.Errorf("build_info labels %v: want version, goversion, revision", labels)
			}
			perServer := []string{"tcpdispatch_server_up", "tcpdispatch_server_effective_weight", "tcpdispatch_server_load",
				"tcpdispatch_server_conns", "tcpdispatch_server_picks_total"}
			for _, name := range perServer {
				f := fams[name]
				if !tc.perServer {
					if f != nil {
						t.Errorf("%s exported with MetricsPerServer off", name)
					}
					continue
				}
				if f == nil || len(f.GetMetric()) != 3 {
					t.Fatalf("%s: want 3 series, one per server: %v", name, f)
				}
			}
			if !tc.perServer {
				return
			}
			// Five picks of one key plus one first choice of ?n=2.
			picks := map[string]float64{}
			total := 0.0
			for _, m := range fams["tcpdispatch_server_picks_total"].GetMetric() {
				v := m.GetCounter().GetValue()
				picks[m.GetLabel()[0].GetValue()] = v
				total += v
			}
			if total != 6 {
				t.Errorf("picks_total sums to %v over %v, want 6", total, picks)
			}
			if picks[picked.ID] < 1 {
				t.Errorf("first choice of ?n=2 %s not counted: %v", picked.ID, picks)
			}
			for _, m := range fams["tcpdispatch_server_up"].GetMetric() {
				if m.GetGauge().GetValue() != 1 {
					t.Errorf("server_up %v: want 1", m)
				}
			}
		})
	}
}

// BenchmarkScrape measures one /metrics scrape with 10,000 servers, with
// and without the per-server series: the bytes and time a Prometheus
// scrape of one replica costs.
func BenchmarkScrape(b *testing.B) {
	snap := snapshotOf(b, 10000)
	for _, perServer := range []bool{true, false} {
		name := "per-server"
		if !perServer {
			name = "no-per-server"
		}
		b.Run(name+"/10000", func(b *testing.B) {
			reg := prometheus.NewRegistry()
			cfg := api.DefaultConfig()
			cfg.Name, cfg.MetricsPerServer = "bench", perServer
			srv, err := api.New(cfg, staticSource{snap}, notLeader{}, nil, reg, reg)
			if err != nil {
				b.Fatal(err)
			}
			h := srv.Handler()
			var size, series int
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
				size = rec.Body.Len()
				series = bytes.Count(rec.Body.Bytes(), []byte("\ntcpdispatch_server_"))
				_, _ = io.Copy(io.Discard, rec.Body)
			}
			b.ReportMetric(float64(size), "bytes/scrape")
			b.ReportMetric(float64(series), "server-series")
		})
	}
}

// BenchmarkFleetVsServers compares the status page's /v1/fleet with
// /v1/servers at 10,000 servers: bytes and time per answer.
func BenchmarkFleetVsServers(b *testing.B) {
	srv, err := api.New(api.DefaultConfig(), staticSource{snapshotOf(b, 10000)}, notLeader{}, nil, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	for _, path := range []string{"/v1/fleet", "/v1/servers"} {
		b.Run(strings.TrimPrefix(path, "/v1/")+"/10000", func(b *testing.B) {
			var size int
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(size), "bytes/answer")
		})
	}
}

// TestMetricsGzipAndFormat: with per-server series on, a scrape that
// accepts gzip gets gzip, and both forms parse to the same families, the
// per-server ones among them in the text format's content type.
func TestMetricsGzipAndFormat(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := api.DefaultConfig()
	cfg.Name = "r1"
	srv, err := api.New(cfg, staticSource{snapshotOf(t, 4)}, isLeader{}, nil, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	parse := func(r io.Reader) map[string]*dto.MetricFamily {
		t.Helper()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(r)
		if err != nil {
			t.Fatalf("parse scrape: %v", err)
		}
		return fams
	}
	plain := httptest.NewRecorder()
	h.ServeHTTP(plain, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if ct := plain.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q, want the text format", ct)
	}
	if ce := plain.Header().Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding %q without Accept-Encoding", ce)
	}
	want := parse(plain.Body)

	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept-Encoding", "deflate, gzip;q=0.9")
	zipped := httptest.NewRecorder()
	h.ServeHTTP(zipped, req)
	if ce := zipped.Header().Get("Content-Encoding"); ce != "gzip" {
		t.Fatalf("Content-Encoding %q, want gzip", ce)
	}
	zr, err := gzip.NewReader(zipped.Body)
	if err != nil {
		t.Fatal(err)
	}
	got := parse(zr)
	for _, name := range []string{"tcpdispatch_server_up", "tcpdispatch_server_picks_total", "tcpdispatch_build_info"} {
		if len(got[name].GetMetric()) == 0 || len(got[name].GetMetric()) != len(want[name].GetMetric()) {
			t.Errorf("%s: %d series gzipped, %d plain", name, len(got[name].GetMetric()), len(want[name].GetMetric()))
		}
	}
	if got["tcpdispatch_server_picks_total"].GetType() != dto.MetricType_COUNTER || got["tcpdispatch_server_up"].GetType() != dto.MetricType_GAUGE {
		t.Errorf("per-server families typed %v and %v", got["tcpdispatch_server_picks_total"].GetType(), got["tcpdispatch_server_up"].GetType())
	}

	req = httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip;q=0")
	refused := httptest.NewRecorder()
	h.ServeHTTP(refused, req)
	if ce := refused.Header().Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding %q for gzip;q=0", ce)
	}
}
