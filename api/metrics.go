package api

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics registers the API's metrics on reg.
func registerMetrics(reg prometheus.Registerer, requests *prometheus.CounterVec, s *Server) error {
	degraded := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tcpdispatch_degraded_answers_total",
		Help: "get-tcp-ip answers given from the all-down fallback (header " + DegradedHeader + ")."},
		func() float64 { return float64(s.degraded.Load()) })
	for _, c := range []prometheus.Collector{requests, degraded} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register api metrics: %w", err)
		}
	}
	return nil
}
