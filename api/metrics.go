package api

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the series the HTTP front registers. State that lives in the
// snapshot (per-server series, leadership, snapshot age) is read by
// stateCollector at scrape time: nothing is updated per change.
type metrics struct {
	// latency times get-tcp-ip answers, from routing to the last byte
	// written. Observe does not allocate.
	latency prometheus.Histogram
}

// latencyBuckets span a cached in-memory answer (tens of µs) to a replica
// starved of CPU (100ms).
var latencyBuckets = []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3}

// newRequestsCounter returns tcpdispatch_get_tcp_ip_requests_total, by
// outcome; New takes one child per outcome before newMetrics registers it.
func newRequestsCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tcpdispatch_get_tcp_ip_requests_total",
		Help: "get-tcp-ip requests by outcome."}, []string{"outcome"})
}

// newMetrics registers the HTTP front's series on reg (none when it is
// nil): requests, the answer latency, the degraded answers, the build info
// and the snapshot's state read at scrape time.
func newMetrics(reg prometheus.Registerer, requests *prometheus.CounterVec, s *Server) (*metrics, error) {
	m := &metrics{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tcpdispatch_get_tcp_ip_duration_seconds",
			Help: "Time to answer get-tcp-ip (any outcome), in seconds.", Buckets: latencyBuckets}),
	}
	if reg == nil {
		return m, nil
	}
	version, revision := buildVersion()
	buildInfo := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tcpdispatch_build_info",
		Help:        "Always 1; the labels name the build.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version(), "revision": revision}},
		func() float64 { return 1 })
	degraded := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tcpdispatch_degraded_answers_total",
		Help: "get-tcp-ip answers given from the all-down fallback (header " + DegradedHeader + ")."},
		func() float64 { return float64(s.degraded.Load()) })
	for _, c := range []prometheus.Collector{requests, degraded, m.latency, buildInfo, newStateCollector(s), s.badAdmin} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register api metrics: %w", err)
		}
	}
	return m, nil
}

// buildVersion returns the module version and VCS revision the binary was
// built from, "unknown" for what the build did not record.
func buildVersion() (version, revision string) {
	version, revision = "unknown", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, revision
	}
	if v := bi.Main.Version; v != "" {
		version = v
	}
	for _, kv := range bi.Settings {
		if kv.Key == "vcs.revision" && kv.Value != "" {
			revision = kv.Value
		}
	}
	return version, revision
}

// Descriptions of the series stateCollector reads from the snapshot.
var (
	descIsLeader = prometheus.NewDesc("tcpdispatch_is_leader",
		"1 while this replica leads (probes and writes health records).", nil, nil)
	descSnapshotAge = prometheus.NewDesc("tcpdispatch_snapshot_age_seconds",
		"Seconds since etcd last confirmed this replica's snapshot current; -1 before the first listing.", nil, nil)
	descEtcdReachable = prometheus.NewDesc("tcpdispatch_etcd_reachable",
		"1 while etcd confirms the snapshot within the store's stale-after bound.", nil, nil)
	descReplicas = prometheus.NewDesc("tcpdispatch_replicas",
		"Replicas campaigning for leadership (holding an election key) in this replica's snapshot.", nil, nil)
	descHasLeader = prometheus.NewDesc("tcpdispatch_has_leader",
		"1 while this replica's snapshot names a leader.", nil, nil)
)

// stateCollector reads the current snapshot at scrape time. The per-server
// series are not among its metrics: see serverFamilies.
type stateCollector struct{ s *Server }

var _ prometheus.Collector = stateCollector{}

func newStateCollector(s *Server) stateCollector { return stateCollector{s} }

// Describe implements prometheus.Collector.
func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descIsLeader, descSnapshotAge, descEtcdReachable, descReplicas, descHasLeader} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descIsLeader, boolFloat(s.leader.IsLeader()))
	age := s.src.Age()
	if age < 0 {
		gauge(descSnapshotAge, -1)
	} else {
		gauge(descSnapshotAge, age.Seconds())
	}
	gauge(descEtcdReachable, boolFloat(s.src.Reachable()))
	snap := s.src.Snapshot()
	if snap == nil {
		gauge(descReplicas, 0)
		gauge(descHasLeader, 0)
		return
	}
	gauge(descReplicas, float64(len(snap.Candidates)))
	gauge(descHasLeader, boolFloat(snap.Leader != ""))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// observeSince records one get-tcp-ip answer that started at start.
func (m *metrics) observeSince(start time.Time) {
	m.latency.Observe(time.Since(start).Seconds())
}

// timedGetTCPIP is getTCPIP observed by the latency histogram.
func (s *Server) timedGetTCPIP(c echo.Context) error {
	start := time.Now()
	err := s.getTCPIP(c)
	s.metrics.observeSince(start)
	return err
}

// securityMetrics are the listeners' security metrics.
type securityMetrics struct {
	tlsReloads    *prometheus.CounterVec
	rateEvictions prometheus.Counter
	rateAddresses prometheus.Gauge
}

func newSecurityMetrics(reg prometheus.Registerer) (*securityMetrics, error) {
	m := &securityMetrics{
		tlsReloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tcpdispatch_http_tls_reloads_total",
			Help: "Certificate reloads after a file changed, by listener and result (ok, error: the previous certificate stays)."},
			[]string{"listener", "result"}),
		rateEvictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_rate_limit_evictions_total",
			Help: "Client addresses the get-tcp-ip rate limiter forgot to stay within its table size."}),
		rateAddresses: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tcpdispatch_rate_limit_addresses",
			Help: "Client addresses the get-tcp-ip rate limiter remembers."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.tlsReloads, m.rateEvictions, m.rateAddresses} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register api security metrics: %w", err)
			}
		}
	}
	return m, nil
}
