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
	// its entry was derived; a build derives it again (see refresh) and
	// copies the others from the last snapshot (m.last.Servers[idx]): a
	// change of k servers costs O(k) work beyond flat copies, and the
	// entry is kept once, in the snapshot, not a second time here.
	dirty bool
	idx   int
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
			s.dirty = true
		}
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
		s.dirty = true
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
// Cost: the servers whose keys changed since the last build are derived
// again (refresh); every other entry is copied as it was. What remains
// proportional to the fleet is flat: one copy of the entries, the weight
// policy's arithmetic over them, and the picker's prefix sums. Sorting the
// ids, and placing a hash ring, happen only when servers join or leave.
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

	if m.order == nil {
		m.order = slices.SortedFunc(maps.Values(m.servers), func(a, b *serverState) int { return strings.Compare(a.id, b.id) })
		m.reindex = true
	}
	s.Servers = make([]Server, len(m.order))
	var rebuild time.Time
	for i, st := range m.order {
		srv := &s.Servers[i]
		if st.dirty || st.idx < 0 || m.last == nil {
			m.refresh(st, srv)
		} else {
			*srv = m.last.Servers[st.idx]
			srv.underive(st.draining)
		}
		if r := st.report; r != nil {
			srv.ReportedAt = r.ReportedAt
			srv.Report = ReportExpired
			// A heartbeat of the report's epoch keeps it in use (verdict.go).
			if expires := reportExpires(*r, m.heartbeat); now.Before(expires) {
				srv.Report = ReportFresh
				srv.Load, srv.Conns, srv.MaxConns, srv.Overloaded = r.Load, r.Conns, r.MaxConns, r.Overloaded
				srv.RebalanceTarget, srv.ShedTotal = r.RebalanceTarget, r.ShedTotal
				srv.Draining = srv.Draining || r.Draining
				rebuild = earliest(rebuild, expires)
			}
		}
	}
	w, guard := weigh(s.Servers, bal, now, m.guard)
	m.guard = guard
	s.Panic, s.MassRemoval, s.AllDown = w.panic, w.massRemoval, w.allDown
	if !w.rebuildAt.IsZero() {
		rebuild = earliest(rebuild, w.rebuildAt)
	}
	// Answers are encoded once per addr and carried by eligible entries
	// only, which are all get-tcp-ip may return.
	for i, st := range m.order {
		if srv := &s.Servers[i]; srv.Eligible {
			srv.answer, srv.answerText = answers(st.answer, srv.Addr)
		}
	}
	s.setVerdicts(m.heartbeat)
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
	s, err := newSnapshot(s, m.lastPicker)
	if err != nil {
		// Entries derived for this build are lost with it: derive every
		// one again next time.
		for _, st := range m.order {
			st.dirty = true
		}
		return nil, err
	}
	m.lastPicker, m.last = s.picker, s
	if m.reindex {
		for i, st := range m.order {
			st.idx = i
		}
		m.reindex = false
	}
	return s, nil
}

// underive takes an entry copied from the last snapshot back to what the
// keys and verdict alone say: no report applied (draining is the entry's
// Draining without one), no policy, no answer.
func (srv *Server) underive(draining bool) {
	srv.Report, srv.ReportedAt, srv.Load, srv.Conns, srv.MaxConns, srv.Overloaded = ReportNone, time.Time{}, 0, 0, 0, false
	srv.RebalanceTarget, srv.ShedTotal, srv.Draining = 0, 0, draining
	srv.SlowStart, srv.EffectiveWeight, srv.Eligible, srv.Held, srv.Degraded = 1, 0, false, false, false
	srv.answer, srv.answerText = nil, nil
}

// refresh derives the entry of st into srv from the server's keys and
// health record, as underive leaves a copied one, and clears st.dirty.
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
