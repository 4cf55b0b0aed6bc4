package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// An invalid operator value (weight "3OO", an addr without a port, strategy
// "hsah") must not decide anything on its own, and what is decided instead
// must be the same on every replica, whatever each saw before: a replica
// that restarts or joins after the typo must not decide differently from
// one that watched the last valid value go by. So the value in force for an
// invalid key is a function of etcd's state only:
//
//   - the key's last valid value in its current life (since its create
//     revision), found by reading the key at the revision before each
//     invalid value, at most MaxLookback invalid values back;
//   - as if the key were absent (the default weight, strategy or setting; no
//     addr, so the server is not served) when that value was created invalid
//     (there is no earlier value in this life), when more than MaxLookback
//     invalid values were written in a row, or when etcd compacted the
//     revisions that would tell.
//
// The compacted case is the honest limit: after etcd compacts past the last
// valid value, the typo counts as absent on every replica, which for an addr
// takes the server out. Replicas re-check the resolution every
// ResolveInterval, so one that resolved before the compaction converges on
// the same answer as one that starts after it.
//
// Until a value is resolved (etcd unreachable), a replica keeps the value it
// had in force, or none after a restart, and retries.

// MaxLookback is the most consecutive invalid values of one key the watcher
// reads back through to find the last valid one.
const MaxLookback = 8

// Notes on a rejected value, shown after its error in /v1/servers and
// /v1/status problems.
const (
	noteUnresolved = "not resolved from etcd's history yet: this replica keeps the value it had in force"
	noteCreated    = "no valid value since the key was created: as if absent"
	noteCompacted  = "etcd compacted the key's history: as if absent"
)

// lastValid is the resolution of one invalid value.
type lastValid struct {
	value []byte
	found bool
	note  string
}

// lookBack reads key's history back from the invalid value at v to its last
// valid value. Errors other than compaction are returned: the value stays
// unresolved.
func (w *Watcher) lookBack(ctx context.Context, key string, v version) (lastValid, error) {
	kind, _, name := parseKey(w.keys, key)
	mod := v.mod
	for range MaxLookback {
		if mod <= v.create {
			return lastValid{note: noteCreated}, nil
		}
		resp, err := w.cli.Get(ctx, key, clientv3.WithRev(mod-1))
		if errors.Is(err, rpctypes.ErrCompacted) {
			return lastValid{note: noteCompacted}, nil
		}
		if err != nil {
			return lastValid{}, fmt.Errorf("get %s at revision %d: %w", key, mod-1, err)
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != v.create {
			// Not reachable while mod > create; kept as a safe answer.
			return lastValid{note: noteCreated}, nil
		}
		kv := resp.Kvs[0]
		if _, err := parseValue(w.cfg.Targets, kind, name, kv.Value); err == nil {
			return lastValid{value: kv.Value, found: true,
				note: fmt.Sprintf("using the last valid value %q (revision %d)", kv.Value, kv.ModRevision)}, nil
		}
		mod = kv.ModRevision
	}
	return lastValid{note: fmt.Sprintf("more than %d invalid values in a row: as if absent", MaxLookback)}, nil
}

// resolve settles the rejected values of m from etcd's history, all of them
// when all is set (the periodic re-check that follows compaction), else
// those not resolved yet. It spends at most ResolveTimeout; values it could
// not resolve stay as they are and are retried on the next re-check. It
// reports whether anything in force changed.
func (w *Watcher) resolve(ctx context.Context, m *model, all bool) bool {
	if len(m.bad) == 0 {
		return false
	}
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), w.cfg.ResolveTimeout)
	defer cancel()
	changed := false
	for _, key := range slices.Sorted(maps.Keys(m.bad)) {
		v := m.bad[key]
		kind, id, name := parseKey(w.keys, key)
		f := m.fieldOf(kind, id, name, false)
		if f == nil || (!all && f.resolved()) {
			continue
		}
		lv, err := w.lookBack(rctx, key, v)
		if err != nil {
			if ctx.Err() == nil {
				w.log.WithError(err).WithField("key", key).Warn("resolve invalid value from etcd's history; retrying")
			}
			w.metrics.unresolved.Inc()
			if rctx.Err() != nil {
				break
			}
			continue
		}
		var val any
		if lv.found {
			val, _ = parseValue(w.cfg.Targets, kind, name, lv.value)
		}
		if f.resolve(val, lv.found, lv.note) {
			m.touch(kind, id)
			changed = true
			w.log.WithField("key", key).Warn("invalid value resolved: " + lv.note)
		}
	}
	return changed
}
