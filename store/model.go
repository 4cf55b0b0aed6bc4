package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
)

// model is the watcher's private, mutable copy of the key space. Only the
// watcher goroutine touches it; build turns it into an immutable Snapshot.
type model struct {
	keys    Keys
	rev     int64
	servers map[string]*serverState
	health  map[string]*field[Health]
	// strategy is present while the key exists.
	strategy field[balancer.Strategy]
	// election maps election keys to their owner and create revision.
	election map[string]electionKey
	// present marks keys seen during a re-list; see beginRelist.
	relisting bool
	seen      map[string]bool
}

type electionKey struct {
	name      string
	createRev int64
}

// field holds an operator value with the last value that passed validation.
// A bad write sets err and leaves good alone, so a typo never takes a
// working server out.
type field[T any] struct {
	present bool // the key exists
	hasGood bool // good holds a value that passed validation
	good    T
	err     string // why the current value was rejected; empty if it was not
}

func (f *field[T]) set(v T, err error) {
	f.present = true
	if err != nil {
		f.err = err.Error()
		return
	}
	f.good, f.hasGood, f.err = v, true, ""
}

func (f *field[T]) clear() { *f = field[T]{} }

type serverState struct {
	addr   field[string]
	weight field[int]
	// unknown keeps fields this version does not interpret, so that newer
	// operator keys (status-url, drain) are tolerated, not reported.
	unknown map[string]string
}

func (s *serverState) empty() bool {
	return !s.addr.present && !s.weight.present && len(s.unknown) == 0
}

func newModel(keys Keys) *model {
	return &model{
		keys:     keys,
		servers:  make(map[string]*serverState),
		health:   make(map[string]*field[Health]),
		election: make(map[string]electionKey),
	}
}

// rejected reports one operator value that failed validation. It is called
// for every bad put so the caller can log and count it.
type rejected struct {
	key string
	err error
}

// put applies a put of key=value at createRev; it returns the validation
// error of an operator value, if any.
func (m *model) put(key string, value []byte, createRev int64) *rejected {
	if m.relisting {
		m.seen[key] = true
	}
	kind, id, name := m.keys.parse(key)
	switch kind {
	case kindServerField:
		s := m.servers[id]
		if s == nil {
			s = &serverState{}
			m.servers[id] = s
		}
		var err error
		switch name {
		case FieldAddr:
			var a string
			a, err = ParseAddr(string(value))
			s.addr.set(a, err)
		case FieldWeight:
			var w int
			w, err = ParseWeight(string(value))
			s.weight.set(w, err)
		default:
			if s.unknown == nil {
				s.unknown = make(map[string]string)
			}
			s.unknown[name] = string(value)
		}
		if err != nil {
			return &rejected{key, err}
		}
	case kindStrategy:
		st, err := balancer.ParseStrategy(string(value))
		m.strategy.set(st, err)
		if err != nil {
			return &rejected{key, err}
		}
	case kindHealth:
		f := m.health[id]
		if f == nil {
			f = &field[Health]{}
			m.health[id] = f
		}
		var h Health
		err := json.Unmarshal(value, &h)
		if err == nil {
			err = h.validate()
		}
		if err != nil {
			err = fmt.Errorf("health record: %w", err)
		}
		f.set(h, err)
		if err != nil {
			return &rejected{key, err}
		}
	case kindElection:
		m.election[key] = electionKey{name: string(value), createRev: createRev}
	}
	return nil
}

// del applies a delete of key.
func (m *model) del(key string) {
	kind, id, name := m.keys.parse(key)
	switch kind {
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
		default:
			delete(s.unknown, name)
		}
		if s.empty() {
			delete(m.servers, id)
		}
	case kindStrategy:
		m.strategy.clear()
	case kindHealth:
		delete(m.health, id)
	case kindElection:
		delete(m.election, key)
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
		if s.weight.present && !m.seen[m.keys.ServerField(id, FieldWeight)] {
			gone = append(gone, m.keys.ServerField(id, FieldWeight))
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
	for k := range m.election {
		if !m.seen[k] {
			gone = append(gone, k)
		}
	}
	for _, k := range gone {
		m.del(k)
	}
	m.relisting, m.seen = false, nil
}

// build returns an immutable snapshot of the model.
func (m *model) build(now time.Time) (*Snapshot, error) {
	s := &Snapshot{Revision: m.rev, BuiltAt: now, Strategy: balancer.WRR}
	if m.strategy.hasGood {
		s.Strategy = m.strategy.good
	}
	if m.strategy.err != "" {
		s.Problems = append(s.Problems, m.keys.Strategy()+": "+m.strategy.err)
	}
	for _, e := range m.election {
		if s.LeaderEpoch == 0 || e.createRev < s.LeaderEpoch {
			s.Leader, s.LeaderEpoch = e.name, e.createRev
		}
	}
	ids := make([]string, 0, len(m.servers))
	for id := range m.servers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	s.Servers = make([]Server, 0, len(ids))
	for _, id := range ids {
		st := m.servers[id]
		srv := Server{ID: id, Weight: DefaultWeight, State: "unknown"}
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
			srv.Errors = append(srv.Errors, st.addr.err)
		}
		if st.weight.hasGood {
			srv.Weight = st.weight.good
		} else if st.weight.present {
			usable = false // a bad weight with no good one before: skip the server
		}
		if st.weight.err != "" {
			srv.Errors = append(srv.Errors, st.weight.err)
		}
		if h := m.health[id]; h != nil {
			if h.hasGood && h.good.Addr == srv.Addr && srv.Addr != "" {
				srv.Healthy = h.good.Healthy
				srv.Since = h.good.Since
				srv.Reason = h.good.Reason
				srv.State = "down"
				if srv.Healthy {
					srv.State = "up"
				}
			}
			if h.err != "" {
				srv.Errors = append(srv.Errors, h.err)
			}
		}
		srv.Eligible = usable && srv.Healthy && srv.Weight > 0
		s.Servers = append(s.Servers, srv)
	}
	for id := range m.health {
		if m.servers[id] == nil {
			s.orphans = append(s.orphans, id)
		}
	}
	sort.Strings(s.orphans)
	return newSnapshot(s)
}
