package store

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// model is the watcher's private, mutable copy of the key space. Only the
// watcher goroutine touches it; build turns it into an immutable Snapshot.
type model struct {
	keys    keyspace.Layout
	targets TargetPolicy
	rev     int64
	servers map[string]*serverState
	health  map[string]*field[Health]
	// strategy is present while the key exists.
	strategy field[balancer.Strategy]
	// config holds the other config/<name> keys (see Balancing).
	config map[string]*field[any]
	// guard is the mass-removal guard's memory of earlier builds.
	guard guardState
	// order lists the servers sorted by id, as snapshots list them; nil
	// after a server joined or left, until the next build sorts again.
	order []*serverState
	// last is the snapshot of the last successful build, from which the
	// next copies the entries of servers that did not change; reindex says
	// m.order changed since, so that the servers' idx must follow.
	last    *Snapshot
	reindex bool
	// orphans are the ids with a health record but no registration, as of
	// the last build; orphansStale says a server or a record came or went.
	orphans      []string
	orphansStale bool
	// leaderName is the leader named by the last health record decoded;
	// see share.
	leaderName string
	// election maps election keys to their owner and create revision.
	election map[string]electionKey
	// heartbeat is the leader's last heartbeat (see verdict.go).
	heartbeat Heartbeat
	// alarms describes etcd's raised alarms (see alarms.go).
	alarms []string
	// flat is the flat view of the last build's servers (see flat), in
	// order; lastOut holds the decisions of the last snapshot while
	// flat.out takes the next ones. rederive says a build failed: the
	// next derives every entry again.
	flat     flat
	lastOut  []decision
	rederive bool
	// dirty lists the servers marked dirty since the last build; reporters
	// those whose entry applies a report (serverState.reporting); updated
	// the indices of entries replaced by update during a build.
	dirty     []*serverState
	reporters []*serverState
	updated   []int
	// lastPicker is the picker of the last build, whose schedule or ring
	// the next build reuses when its inputs did not change.
	lastPicker *balancer.Picker
	// invalid maps keys the layout does not allow to the reason.
	invalid map[string]string
	// bad maps keys whose current value failed validation to where that
	// value sits in etcd's history, for the watcher to resolve.
	bad map[string]version
	// present marks keys seen during a re-list; see beginRelist.
	relisting bool
	seen      map[string]bool
}

type electionKey struct {
	name      string
	createRev int64
	lease     int64 // 0: the key has no lease and never expires
}

// field holds an operator value with the value in force. A valid write puts
// it in force. An invalid one sets err and leaves the value in force alone
// until the watcher resolves it from etcd's history (see resolve.go), so that
// every replica settles on the same value whatever it saw before.
type field[T any] struct {
	present bool // the key exists
	hasGood bool // good holds the value in force; false: as if absent
	good    T
	// rej describes the current value when it was rejected; nil when it
	// was not (nearly always: kept apart, so that the fields of every
	// server do not each carry two empty strings).
	rej *rejection
}

// rejection is why a value was rejected and how that was resolved.
type rejection struct {
	err string
	// note says how the rejected value was resolved (or that it is not yet).
	note string
}

func (f *field[T]) set(v any, err error) {
	f.present = true
	if err != nil {
		f.rej = &rejection{err: err.Error(), note: noteUnresolved}
		return
	}
	f.good, f.hasGood, f.rej = v.(T), true, nil
}

// resolve puts v in force for a rejected value, or, when found is false,
// nothing: the key then counts as absent. note describes the resolution and
// names the value and its revision, so an unchanged note means an unchanged
// resolution; resolve reports whether it changed.
func (f *field[T]) resolve(v any, found bool, note string) bool {
	if f.rej == nil || f.rej.note == note {
		// Not rejected (a valid value came meanwhile), or resolved so.
		return false
	}
	f.rej.note = note
	if !found {
		var zero T
		f.good, f.hasGood = zero, false
		return true
	}
	f.good, f.hasGood = v.(T), true
	return true
}

// resolved reports whether a rejected value has been resolved.
func (f *field[T]) resolved() bool { return f.rej == nil || f.rej.note != noteUnresolved }

// rejected reports whether the current value was rejected.
func (f *field[T]) rejected() bool { return f.rej != nil }

// problem returns the rejection with how it was resolved; empty when the
// current value is valid.
func (f *field[T]) problem() string {
	if f.rej == nil {
		return ""
	}
	return f.rej.err + "; " + f.rej.note
}

func (f *field[T]) clear() { *f = field[T]{} }

// valueField is a field of any type.
type valueField interface {
	set(v any, err error)
	resolve(v any, found bool, note string) bool
	resolved() bool
}

type serverState struct {
	id        string
	addr      field[string]
	weight    field[int]
	statusURL field[string]
	drain     field[bool]
	// unknown keeps fields this version does not interpret, so that newer
	// operator keys are tolerated, not reported.
	unknown map[string]string
	// assigned counts this replica's picks of the server since the load
	// report of reportedAt; a new report starts a new counter.
	assigned   *balancer.Counter
	reportedAt time.Time
	// picks counts this replica's picks of the server for as long as it
	// stays registered; successive snapshots share it.
	picks *balancer.Counter

	// dirty says a key of the server or its health record changed since
	// its entry was derived (the server is then in model.dirty); a build
	// derives it again (see refresh) and shares the others' entries with
	// the last snapshot (m.last.Servers[idx]): a change of k servers costs
	// O(k) work beyond flat passes, and the entry is kept once, in the
	// snapshots, not a second time here.
	dirty bool
	idx   int
	// reporting says the server is in model.reporters.
	reporting bool
	// draining is the entry's Draining before a report's own flag.
	draining bool
	// report is the health record in force when it carries a load report,
	// applied while fresh; nil otherwise. It points into m.health, and a
	// change there marks the server dirty.
	report *Health
	// answer is the get-tcp-ip body for the addr in force, shared by every
	// snapshot until the addr changes; answers returns it with the text
	// form, which is its tail.
	answer []byte
}

func (s *serverState) empty() bool {
	return !s.addr.present && !s.weight.present && !s.statusURL.present && !s.drain.present && len(s.unknown) == 0
}

func newModel(keys keyspace.Layout) *model {
	return &model{
		keys:     keys,
		servers:  make(map[string]*serverState),
		health:   make(map[string]*field[Health]),
		election: make(map[string]electionKey),
		config:   make(map[string]*field[any]),
		invalid:  make(map[string]string),
		bad:      make(map[string]version),

		orphansStale: true,
	}
}

// touch marks the entry of server id for refresh after a change of one of
// its keys or of its health record (kind).
func (m *model) touch(kind keyspace.Kind, id string) {
	switch kind {
	case keyspace.KindServerField, keyspace.KindHealth:
		if s := m.servers[id]; s != nil {
			m.markDirty(s)
		}
	}
}

// markDirty marks s for refresh by the next build.
func (m *model) markDirty(s *serverState) {
	if !s.dirty {
		s.dirty = true
		m.dirty = append(m.dirty, s)
	}
}

// rejected reports one operator value that failed validation. It is called
// for every bad put so the caller can log and count it.
type rejected struct {
	key string
	err error
}

// version is where a put sits in etcd's history.
type version struct {
	create, mod, lease int64
}

// put applies a put of key=value created at createRev (and last modified
// there too); see putAt.
func (m *model) put(key string, value []byte, createRev int64) *rejected {
	return m.putAt(key, value, version{create: createRev, mod: createRev})
}

// putAt applies a put of key=value at v; it returns the validation error of
// an operator value, if any. A rejected value is recorded in m.bad for the
// watcher to resolve.
func (m *model) putAt(key string, value []byte, v version) *rejected {
	if m.relisting {
		m.seen[key] = true
	}
	kind, id, name := parseKey(m.keys, key)
	switch kind {
	case keyspace.KindInvalid:
		m.invalid[key] = name
		return &rejected{key, errors.New(name)}
	case keyspace.KindElection:
		m.election[key] = electionKey{name: string(value), createRev: v.create, lease: v.lease}
		return nil
	case keyspace.KindHeartbeat:
		m.heartbeat = parseHeartbeat(value)
		return nil
	case keyspace.KindUnknown:
		return nil
	}
	f := m.fieldOf(kind, id, name, true)
	m.touch(kind, id)
	if f == nil { // a server field this version does not interpret
		s := m.servers[id]
		if s.unknown == nil {
			s.unknown = make(map[string]string)
		}
		s.unknown[name] = string(value)
		return nil
	}
	val, err := parseValue(m.targets, kind, name, value)
	if h, ok := val.(Health); ok && err == nil {
		val = m.share(id, h)
	}
	f.set(val, err)
	if err != nil {
		m.bad[key] = v
		return &rejected{key, err}
	}
	delete(m.bad, key)
	return nil
}

// share points the strings of a decoded health record at equal ones the
// model already holds, the server's addr and the last leader name, rather
// than keep a copy of each per record.
func (m *model) share(id string, h Health) Health {
	if s := m.servers[id]; s != nil && s.addr.hasGood && s.addr.good == h.Addr {
		h.Addr = s.addr.good
	}
	if h.Leader == m.leaderName {
		h.Leader = m.leaderName
	} else {
		m.leaderName = h.Leader
	}
	return h
}

// fieldOf returns the field holding the value of a key of kind, creating
// its server, config or health entry when create is set. It returns nil for
// a server field this version does not interpret, and for a missing entry
// when create is not set.
func (m *model) fieldOf(kind keyspace.Kind, id, name string, create bool) valueField {
	switch kind {
	case keyspace.KindServerField:
		s := m.servers[id]
		if s == nil {
			if !create {
				return nil
			}
			s = &serverState{id: id, dirty: true, idx: -1}
			m.servers[id] = s
			m.order, m.orphansStale = nil, true
		}
		switch name {
		case keyspace.FieldAddr:
			return &s.addr
		case keyspace.FieldWeight:
			return &s.weight
		case keyspace.FieldStatusURL:
			return &s.statusURL
		case keyspace.FieldDrain:
			return &s.drain
		}
	case keyspace.KindStrategy:
		return &m.strategy
	case keyspace.KindConfig:
		f := m.config[name]
		if f == nil {
			if !create {
				return nil
			}
			f = &field[any]{}
			m.config[name] = f
		}
		return f
	case keyspace.KindHealth:
		f := m.health[id]
		if f == nil {
			if !create {
				return nil
			}
			f = &field[Health]{}
			m.health[id] = f
			m.orphansStale = true
		}
		return f
	}
	return nil
}

// parseValue validates the value of a key of kind (name is the server field
// or config setting) and returns it parsed, typed as its field holds it.
func parseValue(targets TargetPolicy, kind keyspace.Kind, name string, value []byte) (any, error) {
	switch kind {
	case keyspace.KindServerField:
		switch name {
		case keyspace.FieldAddr:
			v, err := keyspace.ParseAddr(string(value))
			if err == nil {
				err = targets.checkAddr(v)
			}
			return v, err
		case keyspace.FieldWeight:
			v, err := keyspace.ParseWeight(string(value))
			return v, err
		case keyspace.FieldStatusURL:
			v, err := keyspace.ParseStatusURL(string(value))
			if err == nil {
				err = targets.checkStatusURL(v)
			}
			return v, err
		case keyspace.FieldDrain:
			v, err := keyspace.ParseDrain(string(value))
			return v, err
		}
	case keyspace.KindStrategy:
		v, err := balancer.ParseStrategy(string(value))
		return v, err
	case keyspace.KindConfig:
		return ParseConfig(name, string(value))
	case keyspace.KindHealth:
		var h Health
		err := json.Unmarshal(value, &h)
		if err == nil {
			err = h.validate()
		}
		if err != nil {
			return h, fmt.Errorf("health record: %w", err)
		}
		return h, nil
	}
	return nil, nil
}

// del applies a delete of key.
func (m *model) del(key string) {
	delete(m.bad, key)
	kind, id, name := parseKey(m.keys, key)
	switch kind {
	case keyspace.KindInvalid:
		delete(m.invalid, key)
	case keyspace.KindServerField:
		s := m.servers[id]
		if s == nil {
			return
		}
		m.markDirty(s)
		switch name {
		case keyspace.FieldAddr:
			s.addr.clear()
		case keyspace.FieldWeight:
			s.weight.clear()
		case keyspace.FieldStatusURL:
			s.statusURL.clear()
		case keyspace.FieldDrain:
			s.drain.clear()
		default:
			delete(s.unknown, name)
		}
		if s.empty() {
			delete(m.servers, id)
			m.order, m.orphansStale = nil, true
		}
	case keyspace.KindStrategy:
		m.strategy.clear()
	case keyspace.KindConfig:
		delete(m.config, name)
	case keyspace.KindHealth:
		if _, ok := m.health[id]; ok {
			delete(m.health, id)
			m.touch(kind, id)
			m.orphansStale = true
		}
	case keyspace.KindElection:
		delete(m.election, key)
	case keyspace.KindHeartbeat:
		m.heartbeat = Heartbeat{}
	}
}

// beginRelist starts applying a full listing: keys not put again before
// endRelist are deleted, while last good values of keys that remain are
// kept even if their listed value is bad.
func (m *model) beginRelist() {
	m.relisting = true
	m.seen = make(map[string]bool)
}

func (m *model) endRelist() {
	var gone []string
	for id, s := range m.servers {
		if s.addr.present && !m.seen[m.keys.ServerField(id, keyspace.FieldAddr)] {
			gone = append(gone, m.keys.ServerField(id, keyspace.FieldAddr))
		}
		for _, f := range []struct {
			present bool
			name    string
		}{{s.weight.present, keyspace.FieldWeight}, {s.statusURL.present, keyspace.FieldStatusURL}, {s.drain.present, keyspace.FieldDrain}} {
			if f.present && !m.seen[m.keys.ServerField(id, f.name)] {
				gone = append(gone, m.keys.ServerField(id, f.name))
			}
		}
		for name := range s.unknown {
			if !m.seen[m.keys.ServerField(id, name)] {
				gone = append(gone, m.keys.ServerField(id, name))
			}
		}
	}
	for id := range m.health {
		if !m.seen[m.keys.Health(id)] {
			gone = append(gone, m.keys.Health(id))
		}
	}
	if m.strategy.present && !m.seen[m.keys.Strategy()] {
		gone = append(gone, m.keys.Strategy())
	}
	for name := range m.config {
		if !m.seen[m.keys.Config(name)] {
			gone = append(gone, m.keys.Config(name))
		}
	}
	for k := range m.election {
		if !m.seen[k] {
			gone = append(gone, k)
		}
	}
	for k := range m.invalid {
		if !m.seen[k] {
			gone = append(gone, k)
		}
	}
	for _, k := range gone {
		m.del(k)
	}
	m.relisting, m.seen = false, nil
}

// build returns an immutable snapshot of the model. Effective weights depend
// on now (slow start, report expiry); the snapshot's RebuildAt says when
// they next change without any etcd event.
//
// Cost: without joins or leaves, a build visits only the servers marked
// dirty since the last one (a key or the health record changed) and those
// applying a load report (whose freshness depends on now), and allocates
// an entry only for a server whose fields changed; every other entry is
// the last snapshot's, shared. The passes over the whole fleet (the weight
// policy, finding the decisions that changed, the verdict summary, the
// picker's arrays) stream through the flat view, not the entries: 0.7 ms
// and 0.65 MB at 10,000 servers (BenchmarkRebuild). A join or leave sorts
// the ids and visits every server once; placing a hash ring happens only
// then.
func (m *model) build(now time.Time) (*Snapshot, error) {
	s := &Snapshot{Revision: m.rev, BuiltAt: now, Strategy: balancer.WRR}
	if m.strategy.hasGood {
		s.Strategy = m.strategy.good
	}
	if m.strategy.rejected() {
		s.Problems = append(s.Problems, m.keys.Strategy()+": "+m.strategy.problem())
	}
	for _, k := range slices.Sorted(maps.Keys(m.invalid)) {
		s.Problems = append(s.Problems, k+": ignored: "+m.invalid[k])
	}
	bal, problems := m.balancing()
	s.Balancing = bal
	s.Problems = append(s.Problems, problems...)
	for _, e := range m.election {
		if s.LeaderEpoch == 0 || e.createRev < s.LeaderEpoch {
			s.Leader, s.LeaderEpoch = e.name, e.createRev
		}
		s.Candidates = append(s.Candidates, Candidate{Name: e.name, Epoch: e.createRev})
	}
	slices.SortFunc(s.Candidates, func(a, b Candidate) int { return cmp.Compare(a.Epoch, b.Epoch) })

	full := m.order == nil || m.last == nil || m.reindex || m.rederive
	if m.order == nil {
		m.order = slices.SortedFunc(maps.Values(m.servers), func(a, b *serverState) int { return strings.Compare(a.id, b.id) })
		m.reindex = true
	}
	// Entries: the last snapshot's, but new ones for the servers whose
	// keys, verdict or report changed (update) and then for those whose
	// decision changed (decide). Without joins or leaves, only the servers
	// marked dirty and those with a report are visited; the passes over the
	// whole fleet read the flat view (ids, inputs, decisions), not entries.
	n := len(m.order)
	f := &m.flat
	var rebuild time.Time
	m.updated = m.updated[:0]
	if full {
		f.ids, f.in = resize(f.ids, n), resize(f.in, n)
		f.counters, f.out, m.lastOut = resize(f.counters, n), resize(f.out, n), resize(m.lastOut, n)
		s.Servers = make([]*Server, n)
		m.reporters = m.reporters[:0]
		for i, st := range m.order {
			f.ids[i] = st.id
			s.Servers[i] = m.lastEntry(st)
			if expires := m.update(s.Servers, i, st, now); !expires.IsZero() {
				rebuild = earliest(rebuild, expires)
			}
			f.in[i], f.counters[i] = inputsOf(s.Servers[i]), s.Servers[i].counter
			if st.reporting = st.report != nil; st.reporting {
				m.reporters = append(m.reporters, st)
			}
		}
	} else {
		s.Servers = slices.Clone(m.last.Servers)
		for _, st := range m.dirty {
			m.update(s.Servers, st.idx, st, now)
			if st.report != nil && !st.reporting {
				st.reporting = true
				m.reporters = append(m.reporters, st)
			}
		}
		m.reporters = slices.DeleteFunc(m.reporters, func(st *serverState) bool {
			st.reporting = st.report != nil
			return !st.reporting
		})
		// A report's freshness changes with time: every build looks at
		// each.
		for _, st := range m.reporters {
			if expires := m.update(s.Servers, st.idx, st, now); !expires.IsZero() {
				rebuild = earliest(rebuild, expires)
			}
		}
	}
	m.dirty = m.dirty[:0]
	w, guard := weigh(f.ids, f.in, f.out, bal, now, m.guard)
	m.guard = guard
	s.Panic, s.MassRemoval, s.AllDown = w.panic, w.massRemoval, w.allDown
	if !w.rebuildAt.IsZero() {
		rebuild = earliest(rebuild, w.rebuildAt)
	}
	// An entry of the last snapshot carries the last decision (m.lastOut);
	// one updated now carries the last or none.
	for i := range f.out {
		if full || f.out[i] != m.lastOut[i] {
			m.decide(s.Servers, i)
		}
	}
	for _, i := range m.updated {
		m.decide(s.Servers, i)
	}
	s.setVerdicts(m.heartbeat, f)
	s.electionProblems = m.electionProblems()
	s.Problems = append(s.Problems, s.electionProblems...)
	s.Problems = append(s.Problems, m.alarms...)

	if m.orphansStale {
		m.orphans = nil
		for id := range m.health {
			if m.servers[id] == nil {
				m.orphans = append(m.orphans, id)
			}
		}
		sort.Strings(m.orphans)
		m.orphansStale = false
	}
	s.orphans = m.orphans
	s.RebuildAt = rebuild
	s, err := newSnapshot(s, f, m.lastPicker)
	if err != nil {
		// Entries derived for this build are lost with it: derive every
		// one again next time.
		for _, st := range m.order {
			st.dirty = true
		}
		m.rederive = true
		return nil, err
	}
	m.lastPicker, m.last, m.rederive = s.picker, s, false
	f.out, m.lastOut = m.lastOut, f.out
	if m.reindex {
		for i, st := range m.order {
			st.idx = i
		}
		m.reindex = false
	}
	return s, nil
}

// lastEntry returns st's entry in the last snapshot; nil when st was not
// in it.
func (m *model) lastEntry(st *serverState) *Server {
	if m.last == nil || st.idx < 0 {
		return nil
	}
	return m.last.Servers[st.idx]
}

// update brings servers[i], the entry of st, up to date with st's keys,
// verdict and report at now, replacing it when they changed, and puts its
// inputs in the flat view. It returns when the report in use expires;
// zero without a fresh one. It is idempotent.
func (m *model) update(servers []*Server, i int, st *serverState, now time.Time) (expires time.Time) {
	srv := servers[i]
	if st.dirty || srv == nil {
		srv = new(Server)
		m.refresh(st, srv)
	}
	l, expires := m.loadOf(st, now)
	if !l.matches(srv) {
		if srv == m.lastEntry(st) {
			srv = clone(srv)
		}
		l.apply(srv)
	}
	if srv != servers[i] {
		servers[i] = srv
		m.flat.in[i], m.flat.counters[i] = inputsOf(srv), srv.counter
		m.updated = append(m.updated, i)
	}
	return expires
}

// decide gives servers[i] the decision m.flat.out[i], replacing the entry
// when it is the last snapshot's and carries another; an entry carries its
// answers exactly while eligible.
func (m *model) decide(servers []*Server, i int) {
	srv, d := servers[i], &m.flat.out[i]
	if d.matches(srv) {
		return
	}
	st := m.order[i]
	if srv == m.lastEntry(st) {
		srv = clone(srv)
		servers[i] = srv
	}
	d.apply(srv)
	srv.answer, srv.answerText = nil, nil
	if srv.Eligible {
		// Answers are encoded once per addr and carried by eligible
		// entries only, which are all get-tcp-ip may return.
		srv.answer, srv.answerText = answerFor(st.answer, srv.ID, srv.Addr)
	}
}

// resize returns s with length n, reusing its array when large enough.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

func clone(srv *Server) *Server {
	c := *srv
	return &c
}

// loadFields are the entry fields a load report sets: what loadOf says
// the server's report applies at a given time.
type loadFields struct {
	report     ReportState
	reportedAt time.Time
	load       float64
	conns      int64
	maxConns   int64
	overloaded bool
	target     int64
	shed       int64
	draining   bool
}

// loadOf returns the load fields of st's entry at now, and when its report
// expires: zero when it has no fresh report.
func (m *model) loadOf(st *serverState, now time.Time) (l loadFields, expires time.Time) {
	l = loadFields{report: ReportNone, draining: st.draining}
	r := st.report
	if r == nil {
		return l, time.Time{}
	}
	l.report, l.reportedAt = ReportExpired, r.ReportedAt
	// A heartbeat of the report's epoch keeps it in use (verdict.go).
	if expires = reportExpires(*r, m.heartbeat); !now.Before(expires) {
		return l, time.Time{}
	}
	l.report = ReportFresh
	l.load, l.conns, l.maxConns, l.overloaded = r.Load, r.Conns, r.MaxConns, r.Overloaded
	l.target, l.shed = r.RebalanceTarget, r.ShedTotal
	l.draining = l.draining || r.Draining
	return l, expires
}

// matches reports whether srv carries l.
func (l *loadFields) matches(srv *Server) bool {
	return srv.Report == l.report && srv.ReportedAt.Equal(l.reportedAt) && srv.Load == l.load && srv.Conns == l.conns &&
		srv.MaxConns == l.maxConns && srv.Overloaded == l.overloaded && srv.RebalanceTarget == l.target &&
		srv.ShedTotal == l.shed && srv.Draining == l.draining
}

// apply sets l's fields on srv.
func (l *loadFields) apply(srv *Server) {
	srv.Report, srv.ReportedAt, srv.Load, srv.Conns, srv.MaxConns = l.report, l.reportedAt, l.load, l.conns, l.maxConns
	srv.Overloaded, srv.RebalanceTarget, srv.ShedTotal, srv.Draining = l.overloaded, l.target, l.shed, l.draining
}

// refresh derives the entry of st into srv from the server's keys and
// health record alone (no report applied, no decision, no answer), and
// clears st.dirty.
func (m *model) refresh(st *serverState, out *Server) {
	id := st.id
	srv := Server{ID: id, Weight: keyspace.DefaultWeight, State: HealthUnknown, Report: ReportNone, SlowStart: 1}
	if st.addr.hasGood {
		srv.Addr = st.addr.good
	} else if !st.addr.present {
		srv.Errors = append(srv.Errors, "addr: not registered ("+m.keys.ServerField(id, keyspace.FieldAddr)+" is missing)")
	}
	if st.addr.rejected() {
		srv.Errors = append(srv.Errors, st.addr.problem())
	}
	// A weight key that never held a valid value leaves the documented
	// default in force: the default is the server's last good weight,
	// and a typo must not take a served server out.
	if st.weight.hasGood {
		srv.Weight = st.weight.good
	}
	if st.weight.rejected() {
		srv.Errors = append(srv.Errors, st.weight.problem())
	}
	if st.statusURL.hasGood {
		srv.StatusURL = st.statusURL.good
	}
	if st.statusURL.rejected() {
		srv.Errors = append(srv.Errors, st.statusURL.problem())
	}
	srv.Draining = st.drain.hasGood && st.drain.good || srv.Weight == 0
	if v, ok := st.unknown[keyspace.FieldDrainReason]; ok {
		n := keyspace.ParseDrainNote(v)
		srv.DrainReason = &n
	}
	if st.drain.rejected() {
		srv.Errors = append(srv.Errors, st.drain.problem())
	}
	var h Health
	st.report = nil
	if hf := m.health[id]; hf != nil {
		if hf.hasGood && hf.good.Addr == srv.Addr && srv.Addr != "" {
			h = hf.good
			if h.HasReport() {
				st.report = &hf.good
			}
			srv.Healthy = h.Healthy
			srv.Since = h.Since
			srv.Reason = h.Reason
			srv.CheckedAt, srv.VerdictEpoch = h.CheckedAt, h.Epoch
			srv.State = HealthDown
			if srv.Healthy {
				srv.State = HealthUp
			}
		}
		if hf.rejected() {
			srv.Errors = append(srv.Errors, hf.problem())
		}
	}
	// A new report starts a new assignment count: the report already
	// includes the clients counted so far.
	if st.assigned == nil || !st.reportedAt.Equal(h.ReportedAt) {
		st.assigned, st.reportedAt = new(balancer.Counter), h.ReportedAt
	}
	srv.counter = st.assigned
	if st.picks == nil {
		st.picks = new(balancer.Counter)
	}
	srv.picks = st.picks
	if a, _ := answers(st.answer, srv.Addr); srv.Addr != "" && a == nil {
		st.answer = encodeAnswer(id, srv.Addr)
	}
	st.draining, st.dirty = srv.Draining, false
	*out = srv
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}
