package prober

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the prober's series, registered on the Registerer given to
// New (none when it is nil).
type metrics struct {
	rounds, transitions, failures, txns, writes prometheus.Counter
	statusFailures                              prometheus.Counter
	latency                                     prometheus.Histogram

	localFailures, suspectRounds, heldVerdicts, selfFaultRounds prometheus.Counter
	opinionsServed, opinionsRejected, opinionFailures           prometheus.Counter
	lag                                                         prometheus.Histogram

	capacity, links                  prometheus.Gauge
	deferred, linkCloses, heartbeats prometheus.Counter
	deathNotices, noticeProbes       prometheus.Counter
	vouched                          prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rounds: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_rounds_total",
			Help: "Probe rounds completed by this replica while leading."}),
		transitions: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_transitions_total",
			Help: "Health transitions decided by this replica."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_probe_failures_total",
			Help: "Failed probes."}),
		txns: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_write_txns_total",
			Help: "Fenced transactions committed with health records."}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_writes_total",
			Help: "Health records written or deleted."}),
		statusFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_status_failures_total",
			Help: "Failed pulls of status documents (counted as failed probes)."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tcpdispatch_prober_probe_seconds",
			Help: "TCP connect probe latency.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12)}),
		localFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_local_failures_total",
			Help: "Failed probes blamed on the prober's own host (not verdicts)."}),
		suspectRounds: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_suspect_rounds_total",
			Help: "Rounds that would have taken more than the suspect share of up servers down at once."}),
		heldVerdicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_held_verdicts_total",
			Help: "Down-verdicts of suspect rounds held for lack of confirmation by other replicas."}),
		selfFaultRounds: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_self_fault_rounds_total",
			Help: "Rounds in which this leader failed its own checks."}),
		opinionsServed: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_opinions_served_total",
			Help: "Second-opinion requests this replica answered."}),
		opinionsRejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_opinions_rejected_total",
			Help: "Second-opinion requests refused (bad token, bad input, too many in flight)."}),
		opinionFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_opinion_failures_total",
			Help: "Second-opinion requests to other replicas that got no usable answer."}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tcpdispatch_prober_round_lag_seconds",
			Help: "How late a probe round started (scheduling lag).", Buckets: prometheus.ExponentialBuckets(0.001, 2, 12)}),
		capacity: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tcpdispatch_prober_inflight_capacity",
			Help: "Probes this leader may have in flight at once: concurrency + servers × timeout ÷ interval, bounded."}),
		links: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tcpdispatch_prober_links",
			Help: "Persistent connections this leader holds to servers (death notices)."}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_deferred_probes_total",
			Help: "Probes started late because the in-flight capacity was full."}),
		linkCloses: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_link_closes_total",
			Help: "Persistent connections closed by the server side."}),
		noticeProbes: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_notice_probes_total",
			Help: "Connects made at once because a server's persistent connection ended (not for links the server closes on accepting them or, once seen, within an interval while it stays up)."}),
		deathNotices: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_death_notices_total",
			Help: "Servers taken down at once: their persistent connection closed and a connect was refused."}),
		vouched: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_vouched_total",
			Help: "Intervals in which a server's open persistent connection stood in for its connect probe (see --probe-recheck)."}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_prober_heartbeats_total",
			Help: "Heartbeats written (one per interval while the leader vouches for its records)."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.capacity, m.links, m.deferred, m.linkCloses, m.deathNotices, m.noticeProbes, m.vouched, m.heartbeats, m.rounds, m.transitions, m.failures, m.txns, m.writes, m.latency, m.statusFailures,
			m.localFailures, m.suspectRounds, m.heldVerdicts, m.selfFaultRounds, m.opinionsServed, m.opinionsRejected, m.opinionFailures, m.lag} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register prober metrics: %w", err)
			}
		}
	}
	return m, nil
}

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
