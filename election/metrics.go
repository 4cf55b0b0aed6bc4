package election

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// newDeathWatchMetrics registers tcpdispatch_leader_death_notices_total, by
// noticeOutcome, on reg.
func newDeathWatchMetrics(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	notices := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tcpdispatch_leader_death_notices_total",
		Help: "Links to the dispatcher leader that ended while its term lasted, by what the confirming connect found: revoked (refused; this replica revoked the dead leader's election lease), already_gone (refused; the term had already ended), alive (connected: the leader only closed the idle link), unconfirmed (timeout or other error: failover left to the lease TTL), failed (refused, but re-reading the key or revoking failed).",
	}, []string{"outcome"})
	if err := reg.Register(notices); err != nil {
		return nil, fmt.Errorf("register death watch metrics: %w", err)
	}
	for _, o := range []noticeOutcome{noticeRevoked, noticeGone, noticeAlive, noticeUnconfirmed, noticeFailed} {
		notices.WithLabelValues(string(o))
	}
	return notices, nil
}
