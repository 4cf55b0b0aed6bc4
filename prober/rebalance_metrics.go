package prober

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// rebalanceMetrics count the leader's rebalancing decisions.
type rebalanceMetrics struct {
	// shed counts connections the leader asked each server to shed.
	shed *prometheus.CounterVec
	// blocked counts rounds with rebalancing on in which nothing could
	// move, by reason (a RebalanceBlock).
	blocked *prometheus.CounterVec
}

func newRebalanceMetrics(reg prometheus.Registerer) (*rebalanceMetrics, error) {
	m := &rebalanceMetrics{
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tcpdispatch_rebalance_shed_total",
			Help: "Connections the leader asked a server to shed for rebalancing (?shed=N on its status pull)."}, []string{"server"}),
		blocked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tcpdispatch_rebalance_blocked_rounds_total",
			Help: "Probe rounds with rebalancing on in which nothing moved, by reason."}, []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.shed, m.blocked} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register rebalance metrics: %w", err)
			}
		}
	}
	return m, nil
}
