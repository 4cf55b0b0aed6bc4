package store

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// A verdict's age is how long ago the leader last confirmed it. The leader
// writes a health record only when its verdict or load report changes
// meaningfully, and at the start of its term (issue 11: writes in
// proportion to change); between writes it proves that the records are
// still its current verdicts with one heartbeat key per probe interval
// (Keys.Heartbeat), fenced like every leader write and carrying its epoch.
// A record counts as confirmed as of the newest heartbeat of the record's
// own epoch: its confirmation time is max(CheckedAt, heartbeat time) when
// the heartbeat's epoch is the record's (verdictState.oldest computes it
// for a snapshot's oldest verdict, as heartbeats arrive). A heartbeat of another epoch confirms
// nothing, since that leader has not checked the server yet: a new term
// rewrites every record with its epoch as it probes them. A leader that
// holds verdicts back (a suspect round, see the prober) or cannot write
// stops its heartbeat, so the ages grow.
//
// A replica reports the age of the oldest verdict it serves; when no leader
// can be elected the ages grow while every replica keeps serving the last
// verdicts (static stability): nothing expires a verdict. The same
// heartbeat keeps load reports of its epoch in use (see reportExpires).

// Heartbeat is the value of Keys.Heartbeat: the leader of Epoch vouches
// that, as of At (its clock), every health record of Epoch is its current
// verdict.
type Heartbeat struct {
	Epoch  int64     `json:"epoch"`
	Leader string    `json:"leader"`
	At     time.Time `json:"at"`
}

// parseHeartbeat decodes a heartbeat value; a value that does not decode
// counts as no heartbeat (it confirms nothing).
func parseHeartbeat(value []byte) Heartbeat {
	var hb Heartbeat
	if json.Unmarshal(value, &hb) != nil || hb.Epoch == 0 {
		return Heartbeat{}
	}
	return hb
}

// confirms reports whether hb vouches for verdicts written in epoch.
func (hb Heartbeat) confirms(epoch int64) bool { return epoch != 0 && hb.Epoch == epoch }

// reportExpires returns when replicas stop using h's load report: its
// ReportExpires, moved on by a heartbeat of the record's epoch by as much
// as the report's own lifetime (the leader rewrites a report that changes
// meaningfully, so a confirmed record's report is current).
func reportExpires(h Health, hb Heartbeat) time.Time {
	if !hb.confirms(h.Epoch) || !h.HasReport() {
		return h.ReportExpires
	}
	if ext := hb.At.Add(h.ReportExpires.Sub(h.ReportedAt)); ext.After(h.ReportExpires) {
		return ext
	}
	return h.ReportExpires
}

// epochVerdicts is the oldest CheckedAt among the served verdicts of one
// epoch: with a heartbeat of that epoch, they all count as confirmed at
// max(oldest, heartbeat).
type epochVerdicts struct {
	epoch  int64
	oldest time.Time
}

// verdictState is what a snapshot needs to report its oldest verdict's
// age as heartbeats arrive, without being rebuilt for each.
type verdictState struct {
	epochs []epochVerdicts // a few: one per epoch still served
	built  Heartbeat       // the heartbeat known when the snapshot was built
	// live is the watcher's newest heartbeat, shared by its snapshots;
	// nil in snapshots built elsewhere.
	live *atomic.Pointer[Heartbeat]
}

// heartbeat returns the newest heartbeat known to s.
func (v *verdictState) heartbeat() Heartbeat {
	if v.live != nil {
		if hb := v.live.Load(); hb != nil {
			return *hb
		}
	}
	return v.built
}

// oldest returns the oldest confirmation among the summarised verdicts
// under hb; zero when there is none.
func (v *verdictState) oldest(hb Heartbeat) time.Time {
	var oldest time.Time
	for _, e := range v.epochs {
		at := e.oldest
		if hb.confirms(e.epoch) && hb.At.After(at) {
			at = hb.At
		}
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	return oldest
}

// setVerdicts summarises the verdicts of the servers get-tcp-ip may return
// per epoch and sets OldestVerdict as of hb, the heartbeat known now; f is
// the flat view of s.Servers.
func (s *Snapshot) setVerdicts(hb Heartbeat, f *flat) {
	type oldest struct {
		epoch, at int64
		i         int // the server with that verdict
	}
	var epochs []oldest
	for i := range f.in {
		x := &f.in[i]
		if !f.out[i].eligible || x.checkedAt == 0 {
			continue
		}
		k := slices.IndexFunc(epochs, func(e oldest) bool { return e.epoch == x.epoch })
		if k < 0 {
			epochs = append(epochs, oldest{x.epoch, x.checkedAt, i})
		} else if x.checkedAt < epochs[k].at {
			epochs[k].at, epochs[k].i = x.checkedAt, i
		}
	}
	s.verdicts.epochs = s.verdicts.epochs[:0]
	for _, e := range epochs {
		s.verdicts.epochs = append(s.verdicts.epochs, epochVerdicts{epoch: e.epoch, oldest: s.Servers[e.i].CheckedAt})
	}
	s.verdicts.built = hb
	s.OldestVerdict = s.verdicts.oldest(hb)
}

// Heartbeat returns the newest leader heartbeat this snapshot knows of
// (the watcher's, for snapshots it published); zero when none.
func (s *Snapshot) Heartbeat() Heartbeat { return s.verdicts.heartbeat() }

// OldestVerdictAge returns how old, at now, the oldest verdict served is,
// counting the newest heartbeat; 0 when no served server has a verdict,
// and never negative (the leader's clock may run ahead of this replica's).
func (s *Snapshot) OldestVerdictAge(now time.Time) time.Duration {
	oldest := s.OldestVerdict
	if len(s.verdicts.epochs) > 0 {
		oldest = s.verdicts.oldest(s.verdicts.heartbeat())
	}
	if oldest.IsZero() {
		return 0
	}
	return max(now.Sub(oldest), 0)
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
