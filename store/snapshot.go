package store

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tcpdispatch/tcpdispatch"
	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// Server is one registered tcp-server as this replica sees it: an entry of
// the immutable Snapshot, read by the picker, the API and the prober. It has
// no JSON form of its own: ServerInfo (Info) is how it is listed, and
// persist.go has the on-disk form.
type Server struct {
	ID string
	// Addr is the last valid address an operator wrote; empty if none was
	// ever valid.
	Addr string
	// Weight is the static weight (last valid value, or keyspace.DefaultWeight).
	Weight int
	// EffectiveWeight is the weight get-tcp-ip balances on: Weight × load
	// factor × slow start (see Balancing), 0 when not eligible.
	EffectiveWeight int
	// Healthy is the leader's last verdict for Addr; false when unknown.
	Healthy bool
	// State is up, down or unknown (no verdict for this address yet).
	State HealthState
	// Since is the time of the last health transition; zero when unknown.
	Since time.Time
	// Reason is why the last probe failed.
	Reason string
	// Eligible reports whether get-tcp-ip may return this server now:
	// valid addr and weight, healthy, not draining, effective weight > 0
	// (or panic mode, or held by the mass-removal guard).
	Eligible bool
	// Errors lists operator values that were rejected and ignored.
	Errors []string

	// StatusURL is where the leader pulls the server's load from.
	StatusURL string
	// Report is none (no load report), fresh (in use) or expired (older
	// than its expiry: ignored, the server runs on static weight).
	Report ReportState
	// ReportedAt is when the leader pulled the report in use.
	ReportedAt time.Time
	// Load (smoothed, 0..1), Conns and MaxConns are from a fresh report,
	// else zero.
	Load     float64
	Conns    int64
	MaxConns int64
	// Overloaded is the leader's overload verdict from a fresh report: no
	// new clients until the load drops below the recover mark.
	Overloaded bool
	// SlowStart is the slow-start progress, 0..1: the share of its weight
	// the server gets; 1 when not ramping.
	SlowStart float64
	// Draining is set by the operator (drain key, or weight 0) or by the
	// server's own report: listed and probed, but given no new clients.
	Draining bool
	// DrainReason is the operator's note on a drain (servers/<id>/drain-reason);
	// nil when there is none.
	DrainReason *keyspace.DrainNote
	// Held is set when the mass-removal guard (policy hold) keeps serving
	// a server the leader marked down.
	Held bool
	// Degraded is set when the server is served only because no server is
	// eligible and config/all-down is serve (see Snapshot.AllDown).
	Degraded bool
	// CheckedAt is when the leader checked the verdict in use (leader's
	// clock); zero without one.
	CheckedAt time.Time
	// VerdictEpoch is the leader epoch that wrote the verdict in use.
	VerdictEpoch int64
	// RebalanceTarget and ShedTotal are from a fresh report: how many
	// connections the leader last asked the server to shed, and how many
	// the server reports it shed so far (see Health).
	RebalanceTarget int64
	ShedTotal       int64

	counter    *balancer.Counter // this replica's assignments since the report
	picks      *balancer.Counter // this replica's picks since it started; never reset
	answer     []byte            // pre-encoded get-tcp-ip JSON body
	answerText []byte            // "addr\n" for ?format=text
}

// Assigned returns how many clients this replica sent to s since the load
// report in use (since the server was registered, without reports). It is
// live: it grows as the snapshot serves.
func (s *Server) Assigned() int64 {
	if s.counter == nil {
		return 0
	}
	return s.counter.Load()
}

// Picks returns how many times this replica's get-tcp-ip returned s as
// its answer (the first choice of ?n=) since the replica started. Unlike
// Assigned it is never reset, so it is a Prometheus counter.
func (s *Server) Picks() int64 {
	if s.picks == nil {
		return 0
	}
	return s.picks.Load()
}

// Answer returns the get-tcp-ip JSON body for s, encoded once per snapshot
// so that serving it allocates nothing. Callers must not modify it.
func (s *Server) Answer() []byte { return s.answer }

// AnswerText returns the get-tcp-ip plain-text body ("host:port", no newline, so
// that a shell's $(curl ...) and an exact comparison both work).
// Callers must not modify it.
func (s *Server) AnswerText() []byte { return s.answerText }

// Snapshot is an immutable view of the key space at one revision. Readers
// share it without locks; the watcher replaces it whole.
type Snapshot struct {
	// Revision is the etcd revision of the last change applied.
	Revision int64
	// Servers are all registered servers sorted by id. Entries are
	// immutable and shared by successive snapshots: a build allocates new
	// entries only for the servers whose fields changed.
	Servers []*Server
	// Strategy is the balancing strategy in force.
	Strategy balancer.Strategy
	// Leader is the name of the replica holding the election key with the
	// lowest create revision; empty when none does.
	Leader string
	// LeaderEpoch is the create revision of the leader's key.
	LeaderEpoch int64
	// Problems lists rejected operator values outside server keys.
	Problems []string
	// BuiltAt is when this snapshot was built.
	BuiltAt time.Time
	// Balancing is the balancing policy in force.
	Balancing Balancing
	// Panic is set when too few servers were eligible and every healthy,
	// undrained one is served (see Balancing.PanicThreshold).
	Panic bool
	// MassRemoval describes a mass removal detected by this update; empty
	// when none.
	MassRemoval string
	// AllDown is set when servers are registered but none is eligible and
	// config/all-down is serve: get-tcp-ip then answers from every
	// registered server with a valid addr (those not drained and of
	// positive weight if there are any), each marked Degraded, and says so
	// in the X-Tcpdispatch-Degraded header. Eligible() is 0 meanwhile.
	AllDown bool
	// OldestVerdict is when the oldest verdict among the servers get-tcp-ip
	// may return was last confirmed, as of the heartbeat known when the
	// snapshot was built (see verdict.go; OldestVerdictAge also counts the
	// heartbeats since); zero when none.
	OldestVerdict time.Time
	// RebuildAt is when effective weights next change without an etcd
	// event (a slow-start step, a report expiry); zero when never.
	RebuildAt time.Time
	// Candidates are the replicas campaigning for leadership (each live
	// replica holds an election key), oldest first: the first is Leader.
	Candidates []Candidate

	// verdicts holds what OldestVerdictAge needs (see verdict.go).
	verdicts verdictState

	orphans []string // ids with a health record but no registration
	// electionProblems are the Problems about election keys that block
	// every election; the watcher logs them when they change.
	electionProblems []string
	// picker holds every server, at the same index as in Servers, with
	// weight 0 when not eligible: its ID list then changes only when
	// servers join or leave, and a hash ring only then.
	picker   *balancer.Picker
	eligible int
}

// Candidate is one replica holding an election key.
type Candidate struct {
	// Name is the replica's name.
	Name string `json:"name"`
	// Epoch is the create revision of its election key; the lowest leads.
	Epoch int64 `json:"epoch"`
}

// Lookup returns the server with id, or nil.
func (s *Snapshot) Lookup(id string) *Server {
	if i, ok := slices.BinarySearchFunc(s.Servers, id, func(srv *Server, id string) int { return strings.Compare(srv.ID, id) }); ok {
		return s.Servers[i]
	}
	return nil
}

// OrphanHealth returns the ids that have a health record but are no longer
// registered; the leader deletes those records.
func (s *Snapshot) OrphanHealth() []string { return s.orphans }

// Eligible returns the number of servers get-tcp-ip may return, 0 while
// it answers from the degraded all-down set (see AllDown).
func (s *Snapshot) Eligible() int {
	if s.AllDown {
		return 0
	}
	return s.eligible
}

// Pick chooses one eligible server for key (client IP or the caller's
// sticky key), skipping the ids in exclude. It returns nil if none is left.
// It does not allocate.
func (s *Snapshot) Pick(key string, exclude []string) *Server {
	if s.picker == nil {
		return nil
	}
	i := s.picker.Pick(key, exclude)
	if i < 0 {
		return nil
	}
	srv := s.Servers[i]
	srv.picks.Add(1)
	return srv
}

// PickN appends up to n distinct eligible servers to dst, in preference
// order (the first is what Pick would choose).
func (s *Snapshot) PickN(key string, exclude []string, n int, dst []*Server) []*Server {
	if s.picker == nil || n <= 0 {
		return dst
	}
	var buf [16]int
	idx := s.picker.PickN(key, exclude, n, buf[:0])
	for _, i := range idx {
		dst = append(dst, s.Servers[i])
	}
	if len(idx) > 0 {
		dst[len(dst)-len(idx)].picks.Add(1)
	}
	return dst
}

// NewSnapshot builds a snapshot from a list of servers, as the watcher does
// from etcd. Servers are sorted by id; each must have a unique valid id, and
// Eligible decides whether it may be picked, on EffectiveWeight (Weight
// when EffectiveWeight is 0). It serves tests, benchmarks and snapshots
// restored from disk. Assignments are counted, and hash is unbounded; use
// NewSnapshotWith for another policy.
func NewSnapshot(revision int64, strategy balancer.Strategy, servers []Server, now time.Time) (*Snapshot, error) {
	return NewSnapshotWith(revision, strategy, Balancing{Accounting: true}, servers, now)
}

// NewSnapshotWith is NewSnapshot under the balancing policy bal; only
// bal.Accounting and bal.HashLoadFactor matter here, as the servers'
// effective weights are taken as given.
func NewSnapshotWith(revision int64, strategy balancer.Strategy, bal Balancing, servers []Server, now time.Time) (*Snapshot, error) {
	return newSnapshotFrom(revision, strategy, bal, false, servers, now, Heartbeat{})
}

// newSnapshotFrom is NewSnapshotWith for a snapshot that may be in the
// all-down state (see Snapshot.AllDown), as one restored from disk, whose
// verdicts' age counts from hb (zero: none known).
func newSnapshotFrom(revision int64, strategy balancer.Strategy, bal Balancing, allDown bool, servers []Server, now time.Time, hb Heartbeat) (*Snapshot, error) {
	entries := slices.Clone(servers)
	slices.SortFunc(entries, func(a, b Server) int { return strings.Compare(a.ID, b.ID) })
	s := &Snapshot{Revision: revision, Strategy: strategy, BuiltAt: now, Servers: make([]*Server, len(entries)), Balancing: bal, AllDown: allDown}
	for i := range entries {
		srv := &entries[i]
		if err := tcpdispatch.ValidateID(srv.ID); err != nil {
			return nil, err
		}
		if i > 0 && entries[i-1].ID == srv.ID {
			return nil, fmt.Errorf("server id %q: listed twice", srv.ID)
		}
		if srv.Eligible && srv.EffectiveWeight == 0 {
			srv.EffectiveWeight = srv.Weight
		}
		if srv.picks == nil {
			srv.picks = new(balancer.Counter)
		}
		if srv.counter == nil {
			srv.counter = new(balancer.Counter)
		}
		if srv.Eligible && srv.answer == nil {
			srv.answer, srv.answerText = answerFor(nil, srv.ID, srv.Addr)
		}
		s.Servers[i] = srv
	}
	f := flatOf(s.Servers)
	s.setVerdicts(hb, f)
	return newSnapshot(s, f, nil)
}

// flat is the view of a snapshot's servers that the policy, the verdict
// summary and the picker read: one entry per server in each slice, in the
// snapshot's order. The model keeps it from build to build and updates
// only the servers that changed.
type flat struct {
	ids      []string
	in       []policyIn
	out      []decision
	counters []*balancer.Counter
	// backends, loads and ring are the picker's inputs, which it does not
	// keep: rewritten by each build rather than allocated again.
	backends []balancer.Backend
	loads    []balancer.Load
	ring     []int
}

// flatOf returns the flat view of servers, whose entries carry their
// decisions.
func flatOf(servers []*Server) *flat {
	f := &flat{ids: make([]string, len(servers)), in: make([]policyIn, len(servers)),
		out: make([]decision, len(servers)), counters: make([]*balancer.Counter, len(servers))}
	for i, srv := range servers {
		f.ids[i], f.in[i], f.counters[i] = srv.ID, inputsOf(srv), srv.counter
		f.out[i] = decision{slowStart: srv.SlowStart, effective: srv.EffectiveWeight, eligible: srv.Eligible, held: srv.Held, degraded: srv.Degraded}
	}
	return f
}

// newSnapshot finishes a snapshot whose exported fields and entries are
// set (picks and assignment counters, answers of eligible ones), f being
// its flat view: it builds the picker, reusing the costly parts of prev
// (the picker of the snapshot this one replaces) when they still apply.
// It reads f only, never the entries.
func newSnapshot(s *Snapshot, f *flat, prev *balancer.Picker) (*Snapshot, error) {
	n := len(f.ids)
	f.backends, f.loads, f.ring = resize(f.backends, n), resize(f.loads, n), resize(f.ring, n)
	backends, loads, ring := f.backends, f.loads, f.ring
	for i, id := range f.ids {
		backends[i], loads[i], ring[i] = balancer.Backend{ID: id}, balancer.Load{}, 0
		x, d := &f.in[i], &f.out[i]
		// The ring is placed on static weights of every server with an
		// addr, eligible or not, so neither load nor health changes move
		// keys or rebuild it; effective weights size the load bounds.
		// At least 1: the all-down set may hold servers of weight 0.
		if x.hasAddr {
			ring[i] = max(x.weight, 1)
		}
		if !d.eligible {
			continue
		}
		backends[i].Weight = d.effective
		// Scores divide by static weight × slow start: the load factor in
		// the effective weight would count the reported load twice.
		l := balancer.Load{Conns: x.conns, Capacity: scaleWeight(x.weight, d.slowStart)}
		// Bounded hash counts only servers with a fresh report: without
		// one, a counter never resets, so it would count every client ever
		// sent (reconnects of the same key included) and slowly push keys
		// off their servers. With no reports at all, hash stays plain
		// consistent hashing.
		if s.Balancing.Accounting && (s.Strategy != balancer.Hash || x.fresh) {
			l.Assigned = f.counters[i]
		}
		loads[i] = l
		s.eligible++
	}
	p, err := balancer.NewWith(s.Strategy, backends, balancer.Options{Loads: loads, RingWeights: ring,
		HashLoadFactor: s.Balancing.HashLoadFactor, Previous: prev})
	if err != nil {
		return nil, err
	}
	s.picker = p
	return s, nil
}

// encodeAnswer returns the get-tcp-ip JSON body for a server.
func encodeAnswer(id, addr string) []byte {
	b, err := json.Marshal(struct {
		ID   string `json:"id"`
		Addr string `json:"addr"`
	}{id, addr})
	if err != nil { // two strings always encode
		panic(err)
	}
	return b
}

// answerFor returns the answers of server id at addr: those of body when
// it was made for addr (see answers), else newly encoded ones.
func answerFor(body []byte, id, addr string) (answer, text []byte) {
	if answer, text = answers(body, addr); answer != nil {
		return answer, text
	}
	body = encodeAnswer(id, addr)
	if answer, text = answers(body, addr); answer != nil {
		return answer, text
	}
	return body, []byte(addr)
}

// answers returns the JSON body encodeAnswer made for addr and the plain
// text one, addr itself, read from the body's tail (`..."addr":"<addr>"}`)
// so that a server costs one buffer; an addr that JSON escapes (valid
// addrs never need it) gets a buffer of its own. Both are nil when body
// was not made for addr.
func answers(body []byte, addr string) (answer, text []byte) {
	const before, after = `,"addr":"`, `"}`
	end := len(body) - len(after)
	start := end - len(addr)
	if addr == "" || start < len(before) || strings.ContainsAny(addr, `"\`) ||
		string(body[start-len(before):start]) != before || string(body[start:end]) != addr || string(body[end:]) != after {
		return nil, nil
	}
	return body, body[start:end:end]
}
