package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// Why raft leadership is moved away from the dispatcher leader's member:
// a SIGKILL of the dispatcher leader also kills its embedded member. If that
// member led etcd's raft, the survivors first hold a raft election (one
// election timeout and more), and the new raft leader then extends every
// lease by an election timeout before the dead leader's lease can expire.
// With raft led elsewhere, the failover costs one lease TTL and nothing
// else. So right after winning, the dispatcher leader hands raft leadership
// to a healthy peer. The move is an optimisation: whatever happens to it,
// leadership goes on.

// moveOutcome labels tcpdispatch_raft_leader_moves_total.
type moveOutcome string

const (
	moveMoved     moveOutcome = "moved"      // raft leadership handed to a peer
	moveNotLeader moveOutcome = "not_leader" // own member did not lead raft: nothing to do
	moveNoPeer    moveOutcome = "no_peer"    // no healthy peer answered
	moveFailed    moveOutcome = "failed"     // MoveLeader returned an error
)

// errNoHealthyPeer is returned by pickTransferee when no other voting
// member answered a status request in time without errors.
var errNoHealthyPeer = errors.New("no healthy peer to take raft leadership")

// Bounds of a move. The new leader's first fenced write waits for it, so
// they are short: a peer on a LAN answers its status in milliseconds and a
// caught-up peer takes raft leadership in a few more. statusTimeout is what
// a dead peer (such as the member of the leader that just crashed) can
// cost: a status request to it waits for a connection until then. Once one
// peer has answered, the others get statusGrace more.
const (
	statusTimeout = 300 * time.Millisecond
	statusGrace   = 50 * time.Millisecond
	transferLimit = 500 * time.Millisecond
)

// raftMover moves etcd raft leadership off the local embedded member.
type raftMover struct {
	cli    *clientv3.Client // reaches the local member (embedded mode's only endpoint)
	member *embed.Etcd
	log    *logrus.Entry
	moves  *prometheus.CounterVec
}

// newRaftMover returns a mover counting into reg, or nil without a member
// (external mode: the dispatcher does not host the raft leader).
func newRaftMover(cli *clientv3.Client, m *embed.Etcd, log *logrus.Entry, reg prometheus.Registerer) (*raftMover, error) {
	if m == nil {
		return nil, nil
	}
	moves, err := newRaftMoveMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &raftMover{cli: cli, member: m, log: log, moves: moves}, nil
}

// Move hands raft leadership to the healthy peer with the highest applied
// index if the local member leads raft. It returns within statusTimeout +
// transferLimit (sooner if ctx is cancelled); failures are logged and
// counted, never returned: leadership must not depend on the move.
func (r *raftMover) Move(ctx context.Context) {
	if r == nil {
		return
	}
	srv := r.member.Server
	self := uint64(srv.MemberID())
	if uint64(srv.Leader()) != self {
		r.moves.WithLabelValues(string(moveNotLeader)).Inc()
		return
	}
	start := time.Now()
	to, name, err := r.pickTransferee(ctx, self)
	if err != nil {
		if ctx.Err() == nil {
			r.log.WithError(err).Warn("raft leadership stays with this member")
		}
		r.moves.WithLabelValues(string(moveNoPeer)).Inc()
		return
	}
	tctx, cancel := context.WithTimeout(ctx, transferLimit)
	defer cancel()
	// In process, on the member itself: no client permission is needed
	// (with etcd auth on, the Maintenance MoveLeader RPC is root's only),
	// and it reaches the raft leader without an endpoint choice.
	if err := srv.MoveLeader(tctx, self, to); err != nil {
		r.log.WithError(err).WithField("to", name).Warn("move raft leadership")
		r.moves.WithLabelValues(string(moveFailed)).Inc()
		return
	}
	r.moves.WithLabelValues(string(moveMoved)).Inc()
	r.log.WithFields(logrus.Fields{"to": name, "took": time.Since(start).Round(time.Microsecond)}).
		Info("moved raft leadership off this member so a crash of this replica costs one lease TTL")
}

// pickTransferee asks every other voting member for its status at once and
// returns the ID and name of the one with the highest applied index among
// those that answered without errors and agree that self leads.
func (r *raftMover) pickTransferee(ctx context.Context, self uint64) (uint64, string, error) {
	// Cancelled first, then waited for: the requests still out end at once.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	ml, err := r.cli.MemberList(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("list members: %w", err)
	}
	type answer struct {
		id      uint64
		name    string
		applied uint64
		ok      bool
	}
	answers := make(chan answer, len(ml.Members))
	asked := 0
	for _, m := range ml.Members {
		if m.ID == self || m.IsLearner || len(m.ClientURLs) == 0 {
			continue
		}
		asked++
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := r.cli.Status(ctx, m.ClientURLs[0])
			ok := err == nil && len(st.Errors) == 0 && st.Leader == self
			a := answer{id: m.ID, name: m.Name, ok: ok}
			if ok {
				a.applied = st.RaftAppliedIndex
			}
			answers <- a // buffered: never blocks
		}()
	}
	var best *answer
	var grace <-chan time.Time
	for range asked {
		var a answer
		select {
		case a = <-answers:
		case <-grace:
		case <-ctx.Done():
		}
		if !a.ok {
			if ctx.Err() != nil || (grace != nil && a.id == 0) {
				break
			}
			continue
		}
		if best == nil || a.applied > best.applied {
			best = &a
		}
		if grace == nil {
			grace = time.After(statusGrace)
		}
	}
	if best == nil {
		return 0, "", errNoHealthyPeer
	}
	return best.id, best.name, nil
}
