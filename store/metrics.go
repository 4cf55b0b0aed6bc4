package store

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the watcher's series, registered on the Registerer given to
// NewWatcher (none when it is nil).
type metrics struct {
	invalid, lists, compactions, staleEvents prometheus.Counter
	massRemovals, timedRebuilds, unresolved  prometheus.Counter
	builds                                   prometheus.Counter
	leaderChanges                            prometheus.Counter
	revision, servers, eligible, panic       prometheus.Gauge
	allDown                                  prometheus.Gauge
	verdictAge                               prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, verdictAge func() float64) (*metrics, error) {
	m := &metrics{
		allDown: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tcpdispatch_all_down",
			Help: "1 while servers are registered, none is eligible, and get-tcp-ip answers degraded from all of them (config/all-down serve)."}),
		verdictAge: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tcpdispatch_verdict_age_seconds",
			Help: "Age of the oldest health verdict among the servers get-tcp-ip may return; 0 when none has one."}, verdictAge),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_store_invalid_values_total",
			Help: "Operator values rejected by validation and ignored."}),
		lists: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_store_lists_total",
			Help: "Full listings of the key prefix."}),
		compactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_store_watch_compacted_total",
			Help: "Watches that had to list again because their revision was compacted."}),
		staleEvents: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_store_stale_events_total",
			Help: "Watch events dropped because their revision was already applied."}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tcpdispatch_store_revision",
			Help: "etcd revision of the last change applied to the snapshot."}),
		servers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tcpdispatch_store_servers",
			Help: "Registered servers in the snapshot."}),
		eligible: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tcpdispatch_store_eligible_servers",
			Help: "Servers get-tcp-ip may return."}),
		massRemovals: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_store_mass_removals_total",
			Help: "Updates that took more than half of the eligible servers out at once."}),
		builds: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_store_builds_total",
			Help: "Snapshots built and published (listings, watch events, timed rebuilds); a burst of watch events is built once per publish gap (20ms or more)."}),
		timedRebuilds: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_store_timed_rebuilds_total",
			Help: "Snapshots rebuilt without an etcd event (slow start, report expiry)."}),
		unresolved: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_store_unresolved_values_total",
			Help: "Failed attempts to resolve an invalid operator value from etcd's history (retried)."}),
		panic: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tcpdispatch_store_panic_mode",
			Help: "1 while too few servers are eligible and every healthy one is served."}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "tcpdispatch_leadership_changes_total",
			Help: "Changes of leader (a new election key in front) seen by this replica's snapshots."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.invalid, m.lists, m.compactions, m.staleEvents, m.revision, m.servers, m.eligible,
			m.massRemovals, m.timedRebuilds, m.panic, m.unresolved, m.allDown, m.verdictAge, m.leaderChanges, m.builds} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register store metrics: %w", err)
			}
		}
	}
	return m, nil
}
