package api

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

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
