package node

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// newRaftMoveMetrics registers tcpdispatch_raft_leader_moves_total, by
// moveOutcome, on reg.
func newRaftMoveMetrics(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	moves := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tcpdispatch_raft_leader_moves_total",
		Help: "Attempts, on winning dispatcher leadership, to move etcd raft leadership off the local embedded member, by outcome (moved, not_leader, no_peer, failed).",
	}, []string{"outcome"})
	if err := reg.Register(moves); err != nil {
		return nil, fmt.Errorf("register raft move metrics: %w", err)
	}
	return moves, nil
}
