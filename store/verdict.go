package store

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A verdict's age is how long ago the leader last confirmed it: today that
// is the health record's checked_at, which the leader rewrites at least
// every refresh interval while it leads (the prober's RefreshInterval). A
// replica reports the age of the oldest verdict it serves; when no leader
// can be elected the ages grow while every replica keeps serving the last
// verdicts (static stability): nothing expires a verdict.
//
// Forward design (issue 11): once the leader stops rewriting unchanged
// records and instead writes one heartbeat key per interval carrying its
// epoch, a record's verdict counts as confirmed as of the newest heartbeat
// of the record's own epoch: confirmedAt becomes max(CheckedAt, heartbeat
// time) when heartbeat epoch == record epoch. A heartbeat of another epoch
// confirms nothing, since a new leader has not yet checked that server.
// Only confirmedAt changes; everything that reports ages goes through it.

// confirmedAt returns when srv's verdict was last confirmed; zero without a
// verdict.
func confirmedAt(srv *Server) time.Time {
	return srv.CheckedAt
}

// oldestVerdict returns the oldest confirmation time among the verdicts of
// the servers get-tcp-ip may return; zero when none of them has a verdict.
func oldestVerdict(servers []Server) time.Time {
	var oldest time.Time
	for i := range servers {
		srv := &servers[i]
		if !srv.Eligible {
			continue
		}
		if at := confirmedAt(srv); !at.IsZero() && (oldest.IsZero() || at.Before(oldest)) {
			oldest = at
		}
	}
	return oldest
}

// OldestVerdictAge returns how old, at now, the oldest verdict served is;
// 0 when no served server has a verdict, and never negative (the leader's
// clock may run ahead of this replica's).
func (s *Snapshot) OldestVerdictAge(now time.Time) time.Duration {
	if s.OldestVerdict.IsZero() {
		return 0
	}
	return max(now.Sub(s.OldestVerdict), 0)
}

// electionProblems reports election keys that block every election: the
// candidate with the lowest create revision leads, so a key under election/
// that never expires (no lease) or that no replica wrote (not the
// "name" a campaign writes) keeps the fleet without a leader for good. It
// reports them only when they are in front of the queue, i.e. actually
// blocking.
func (m *model) electionProblems() []string {
	var first string
	var firstRev int64
	for k, e := range m.election {
		if first == "" || e.createRev < firstRev {
			first, firstRev = k, e.createRev
		}
	}
	if first == "" {
		return nil
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m.election)) {
		e := m.election[k]
		switch {
		case e.lease == 0:
			out = append(out, fmt.Sprintf("%s: election key without a lease (value %q): it never expires and blocks every election of the keys after it; delete it", k, e.name))
		case k == first && !replicaWritten(strings.TrimPrefix(k, m.keys.Election()+"/"), e):
			out = append(out, fmt.Sprintf("%s: election key not written by a replica (value %q) holds leadership; delete it", k, e.name))
		}
	}
	return out
}

// replicaWritten reports whether the election key named name (the part
// after election/) looks written by a replica's campaign
// (concurrency.Election): named by its own lease id in hex, holding a
// non-empty replica name.
func replicaWritten(name string, e electionKey) bool {
	return e.name != "" && e.lease != 0 && name == strconv.FormatInt(e.lease, 16)
}
