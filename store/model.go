package store

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
)

// model is the watcher's private, mutable copy of the key space. Only the
// watcher goroutine touches it; build turns it into an immutable Snapshot.
type model struct {
	keys    Keys
	targets TargetPolicy
	rev     int64
	servers map[string]*serverState
	health  map[string]*field[Health]
	// strategy is present while the key exists.
	strategy field[balancer.Strategy]
	// config holds the other config/<name> keys (see Balancing).
	config map[string]*field[any]
	// lastEligible maps the servers eligible on their own in the last build
	// to their effective weights, for the mass-removal guard.
	lastEligible map[string]int
	// holdBase, while a hold is in force, is the eligible set from just
	// before the mass removal, with the effective weights held servers get.
	holdBase map[string]int
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
	err     string // why the current value was rejected; empty if it was not
	// note says how the rejected value was resolved (or that it is not yet).
	note string
}

func (f *field[T]) set(v any, err error) {
	f.present = true
	if err != nil {
		f.err, f.note = err.Error(), noteUnresolved
		return
	}
	f.good, f.hasGood, f.err, f.note = v.(T), true, "", ""
}

// resolve puts v in force for a rejected value, or, when found is false,
// nothing: the key then counts as absent. note describes the resolution and
// names the value and its revision, so an unchanged note means an unchanged
// resolution; resolve reports whether it changed.
func (f *field[T]) resolve(v any, found bool, note string) bool {
	if f.note == note {
		return false
	}
	f.note = note
	if !found {
		var zero T
		f.good, f.hasGood = zero, false
		return true
	}
	f.good, f.hasGood = v.(T), true
	return true
}

// resolved reports whether a rejected value has been resolved.
func (f *field[T]) resolved() bool { return f.note != noteUnresolved }

// problem returns the rejection with how it was resolved; empty when the
// current value is valid.
func (f *field[T]) problem() string {
	if f.err == "" {
		return ""
	}
	return f.err + "; " + f.note
}

func (f *field[T]) clear() { *f = field[T]{} }

// valueField is a field of any type.
type valueField interface {
	set(v any, err error)
	resolve(v any, found bool, note string) bool
	resolved() bool
}

type serverState struct {
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
}

func (s *serverState) empty() bool {
	return !s.addr.present && !s.weight.present && !s.statusURL.present && !s.drain.present && len(s.unknown) == 0
}

func newModel(keys Keys) *model {
	return &model{
		keys:     keys,
		servers:  make(map[string]*serverState),
		health:   make(map[string]*field[Health]),
		election: make(map[string]electionKey),
		config:   make(map[string]*field[any]),
		invalid:  make(map[string]string),
		bad:      make(map[string]version),
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
	kind, id, name := m.keys.parse(key)
	switch kind {
	case kindInvalid:
		m.invalid[key] = name
		return &rejected{key, errors.New(name)}
	case kindElection:
		m.election[key] = electionKey{name: string(value), createRev: v.create, lease: v.lease}
		return nil
	case kindHeartbeat:
		m.heartbeat = parseHeartbeat(value)
		return nil
	case kindUnknown:
		return nil
	}
	f := m.fieldOf(kind, id, name, true)
	if f == nil { // a server field this version does not interpret
		s := m.servers[id]
		if s.unknown == nil {
			s.unknown = make(map[string]string)
		}
		s.unknown[name] = string(value)
		return nil
	}
	val, err := parseValue(m.targets, kind, name, value)
	f.set(val, err)
	if err != nil {
		m.bad[key] = v
		return &rejected{key, err}
	}
	delete(m.bad, key)
	return nil
}

// fieldOf returns the field holding the value of a key of kind, creating
// its server, config or health entry when create is set. It returns nil for
// a server field this version does not interpret, and for a missing entry
// when create is not set.
func (m *model) fieldOf(kind keyKind, id, name string, create bool) valueField {
	switch kind {
	case kindServerField:
		s := m.servers[id]
		if s == nil {
			if !create {
				return nil
			}
			s = &serverState{}
			m.servers[id] = s
		}
		switch name {
		case FieldAddr:
			return &s.addr
		case FieldWeight:
			return &s.weight
		case FieldStatusURL:
			return &s.statusURL
		case FieldDrain:
			return &s.drain
		}
	case kindStrategy:
		return &m.strategy
	case kindConfig:
		f := m.config[name]
		if f == nil {
			if !create {
				return nil
			}
			f = &field[any]{}
			m.config[name] = f
		}
		return f
	case kindHealth:
		f := m.health[id]
		if f == nil {
			if !create {
				return nil
			}
			f = &field[Health]{}
			m.health[id] = f
		}
		return f
	}
	return nil
}

// parseValue validates the value of a key of kind (name is the server field
// or config setting) and returns it parsed, typed as its field holds it.
func parseValue(targets TargetPolicy, kind keyKind, name string, value []byte) (any, error) {
	switch kind {
	case kindServerField:
		switch name {
		case FieldAddr:
			v, err := ParseAddr(string(value))
			if err == nil {
				err = targets.checkAddr(v)
			}
			return v, err
		case FieldWeight:
			v, err := ParseWeight(string(value))
			return v, err
		case FieldStatusURL:
			v, err := ParseStatusURL(string(value))
			if err == nil {
				err = targets.checkStatusURL(v)
			}
			return v, err
		case FieldDrain:
			v, err := ParseDrain(string(value))
			return v, err
		}
	case kindStrategy:
		v, err := balancer.ParseStrategy(string(value))
		return v, err
	case kindConfig:
		return ParseConfig(name, string(value))
	case kindHealth:
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
	kind, id, name := m.keys.parse(key)
	switch kind {
	case kindInvalid:
		delete(m.invalid, key)
	case kindServerField:
		s := m.servers[id]
		if s == nil {
			return
		}
		switch name {
		case FieldAddr:
			s.addr.clear()
		case FieldWeight:
			s.weight.clear()
		case FieldStatusURL:
			s.statusURL.clear()
		case FieldDrain:
			s.drain.clear()
		default:
			delete(s.unknown, name)
		}
		if s.empty() {
			delete(m.servers, id)
		}
	case kindStrategy:
		m.strategy.clear()
	case kindConfig:
		delete(m.config, name)
	case kindHealth:
		delete(m.health, id)
	case kindElection:
		delete(m.election, key)
	case kindHeartbeat:
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
		if s.addr.present && !m.seen[m.keys.ServerField(id, FieldAddr)] {
			gone = append(gone, m.keys.ServerField(id, FieldAddr))
		}
		for _, f := range []struct {
			present bool
			name    string
		}{{s.weight.present, FieldWeight}, {s.statusURL.present, FieldStatusURL}, {s.drain.present, FieldDrain}} {
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

// Bounds on how often a snapshot is rebuilt without an etcd event while a
// server ramps up: often enough for a smooth ramp, rarely enough to cost
// nothing.
const (
	minRebuildStep = 100 * time.Millisecond
	maxRebuildStep = time.Second
)

// minLoadFactor is the smallest factor reported load takes a weight down to
// while the server is not overloaded.
const minLoadFactor = 0.05

// build returns an immutable snapshot of the model. Effective weights depend
// on now (slow start, report expiry); the snapshot's RebuildAt says when
// they next change without any etcd event.
func (m *model) build(now time.Time) (*Snapshot, error) {
	s := &Snapshot{Revision: m.rev, BuiltAt: now, Strategy: balancer.WRR}
	if m.strategy.hasGood {
		s.Strategy = m.strategy.good
	}
	if m.strategy.err != "" {
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
	ids := make([]string, 0, len(m.servers))
	for id := range m.servers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	s.Servers = make([]Server, 0, len(ids))
	// servable marks servers that are registered, healthy, not drained and
	// of positive static weight: those panic mode spreads over.
	servable := make([]bool, 0, len(ids))
	established := false // some servable server is past its slow-start window
	var rebuild time.Time
	for _, id := range ids {
		st := m.servers[id]
		srv := Server{ID: id, Weight: DefaultWeight, State: "unknown", Report: "none", SlowStart: 1}
		usable := true
		if st.addr.hasGood {
			srv.Addr = st.addr.good
		} else {
			usable = false
			if !st.addr.present {
				srv.Errors = append(srv.Errors, "addr: not registered ("+m.keys.ServerField(id, FieldAddr)+" is missing)")
			}
		}
		if st.addr.err != "" {
			srv.Errors = append(srv.Errors, st.addr.problem())
		}
		// A weight key that never held a valid value leaves the documented
		// default in force: the default is the server's last good weight,
		// and a typo must not take a served server out.
		if st.weight.hasGood {
			srv.Weight = st.weight.good
		}
		if st.weight.err != "" {
			srv.Errors = append(srv.Errors, st.weight.problem())
		}
		if st.statusURL.hasGood {
			srv.StatusURL = st.statusURL.good
		}
		if st.statusURL.err != "" {
			srv.Errors = append(srv.Errors, st.statusURL.problem())
		}
		srv.Draining = st.drain.hasGood && st.drain.good || srv.Weight == 0
		if v, ok := st.unknown[FieldDrainReason]; ok {
			n := ParseDrainNote(v)
			srv.DrainReason = &n
		}
		if st.drain.err != "" {
			srv.Errors = append(srv.Errors, st.drain.problem())
		}
		var h Health
		if hf := m.health[id]; hf != nil {
			if hf.hasGood && hf.good.Addr == srv.Addr && srv.Addr != "" {
				h = hf.good
				srv.Healthy = h.Healthy
				srv.Since = h.Since
				srv.Reason = h.Reason
				srv.CheckedAt, srv.VerdictEpoch = h.CheckedAt, h.Epoch
				srv.State = "down"
				if srv.Healthy {
					srv.State = "up"
				}
			}
			if hf.err != "" {
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
		if h.HasReport() {
			srv.ReportedAt = h.ReportedAt
			srv.Report = "expired"
			if expires := reportExpires(h, m.heartbeat); now.Before(expires) {
				srv.Report = "fresh"
				srv.Load, srv.Conns, srv.MaxConns, srv.Overloaded = h.Load, h.Conns, h.MaxConns, h.Overloaded
				srv.RebalanceTarget, srv.ShedTotal = h.RebalanceTarget, h.ShedTotal
				srv.Draining = srv.Draining || h.Draining
				rebuild = earliest(rebuild, expires)
			}
		}
		ok := usable && srv.Healthy && srv.Weight > 0 && !srv.Draining
		if ok && (bal.SlowStart == 0 || srv.Since.IsZero() || now.Sub(srv.Since) >= bal.SlowStart) {
			established = true
		}
		servable = append(servable, ok)
		s.Servers = append(s.Servers, srv)
	}

	// Effective weights: static × load factor × slow start.
	step := min(max(bal.SlowStart/20, minRebuildStep), maxRebuildStep)
	eligible, healthy := 0, 0
	for i := range s.Servers {
		srv := &s.Servers[i]
		if !servable[i] {
			continue
		}
		healthy++
		if established && bal.SlowStart > 0 && !srv.Since.IsZero() {
			if age := now.Sub(srv.Since); age < bal.SlowStart {
				srv.SlowStart = max(MinRampShare, float64(max(age, 0))/float64(bal.SlowStart))
				rebuild = earliest(rebuild, now.Add(step))
			}
		}
		lf := 1.0
		if srv.Report == "fresh" {
			lf = max(minLoadFactor, 1-srv.Load)
			if srv.Overloaded {
				lf = 0
			}
		}
		srv.EffectiveWeight = scaleWeight(srv.Weight, lf*srv.SlowStart)
		if srv.EffectiveWeight > 0 {
			srv.Eligible = true
			eligible++
		}
	}
	// Panic mode: rather than crushing the few servers that have room,
	// spread over every healthy, undrained one on its static weight.
	if healthy > 0 && float64(eligible) < bal.PanicThreshold*float64(healthy) {
		s.Panic = true
		for i := range s.Servers {
			if srv := &s.Servers[i]; servable[i] {
				srv.EffectiveWeight = scaleWeight(srv.Weight, srv.SlowStart)
				srv.Eligible = true
			}
		}
	}
	m.guardMassRemoval(s, bal)
	if bal.AllDown == AllDownServe {
		serveAllDown(s)
	}
	s.setVerdicts(m.heartbeat)
	s.electionProblems = m.electionProblems()
	s.Problems = append(s.Problems, s.electionProblems...)
	s.Problems = append(s.Problems, m.alarms...)

	for id := range m.health {
		if m.servers[id] == nil {
			s.orphans = append(s.orphans, id)
		}
	}
	sort.Strings(s.orphans)
	s.RebuildAt = rebuild
	s, err := newSnapshot(s, m.lastPicker)
	if err == nil {
		m.lastPicker = s.picker
	}
	return s, err
}

// guardMassRemoval compares the eligible servers of s with those of the last
// build. When one update takes more than half of them out, it records why in
// s.MassRemoval (the watcher logs and counts it: once per event) and, under
// policy hold, keeps serving the ones the leader marked down for as long as
// more than half of that earlier set stays out; then the verdicts apply.
// A hold in force is not a new event: it is neither logged nor counted
// again on later builds.
func (m *model) guardMassRemoval(s *Snapshot, bal Balancing) {
	find := func(id string) (int, bool) {
		return slices.BinarySearchFunc(s.Servers, id, func(srv Server, id string) int { return strings.Compare(srv.ID, id) })
	}
	// removedFrom counts the members of base that are not eligible now (or
	// gone) and lists the indices of those still registered.
	removedFrom := func(base map[string]int) (out []int, n int) {
		for id := range base {
			i, ok := find(id)
			switch {
			case !ok:
				n++
			case !s.Servers[i].Eligible:
				out = append(out, i)
				n++
			}
		}
		return out, n
	}
	if bal.MassRemoval != MassRemovalHold {
		m.holdBase = nil
	}
	var hold []int
	if m.holdBase != nil {
		removed, n := removedFrom(m.holdBase)
		if 2*n > len(m.holdBase) {
			hold = removed
		} else {
			m.holdBase = nil // enough came back: the verdicts apply
		}
	} else if prev := m.lastEligible; len(prev) >= 2 {
		removed, n := removedFrom(prev)
		if 2*n > len(prev) {
			s.MassRemoval = fmt.Sprintf("%d of %d eligible servers removed by one update (policy %s)", n, len(prev), bal.MassRemoval)
			if bal.MassRemoval == MassRemovalHold {
				m.holdBase, hold = prev, removed
			}
		}
	}
	m.lastEligible = make(map[string]int, len(s.Servers))
	for i := range s.Servers {
		if srv := &s.Servers[i]; srv.Eligible {
			m.lastEligible[srv.ID] = srv.EffectiveWeight
		}
	}
	for _, i := range hold {
		srv := &s.Servers[i]
		// Only the leader's down verdicts are held; operator intent (drain,
		// weight 0, a changed addr) is not second-guessed.
		if srv.State == "down" && !srv.Draining && srv.Weight > 0 {
			srv.Eligible, srv.Held, srv.EffectiveWeight = true, true, m.holdBase[srv.ID]
		}
	}
}

// scaleWeight returns w × f rounded, at least 1 when w × f > 0.
func scaleWeight(w int, f float64) int {
	if w <= 0 || !(f > 0) {
		return 0
	}
	return max(1, int(math.Round(float64(w)*min(f, 1))))
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}
