// Package store is a dispatcher replica's local, read-only copy of the key
// space (layout in package keyspace) and the immutable snapshot get-tcp-ip
// answers from.
//
// One Watcher goroutine lists the prefix, then watches it, and applies
// every event to a private model (model.go); after each change it builds a
// new Snapshot and publishes it through an atomic pointer, so readers never
// take a lock and never wait on etcd. A replica that loses etcd keeps
// serving its last snapshot (stale but valid), and can save it to disk and
// restore it at start while etcd has no quorum (persist.go).
//
// The flow of a build: operator values (servers/<id>/..., config/...) are
// validated; a rejected one never decides anything on its own: the value in
// force is resolved from etcd's history so that every replica settles on
// the same one (resolve.go). The leader's health records (health.go) give
// each server its state and load report (state.go). The balancing policy
// (balancing.go, rebalance.go) then sets effective weights: static weight ×
// load factor × slow start, panic mode, the mass-removal guard, and the
// all-down fallback (alldown.go). Last, the snapshot builds the picker of
// the strategy in force (package balancer) and pre-encodes every eligible
// server's answer (snapshot.go).
//
// What a replica exports: Snapshot and its Server entries (in memory);
// ServerInfo, how a server is listed in /v1/servers and dispatchctl
// (info.go); the saved-snapshot file format (persist.go); BuildSnapshot and
// CheckKey, which let tools apply the replicas' own rules to keys
// (operator.go); the verdict ages (verdict.go); the target policy that
// bounds which addresses may be registered and probed (targets.go); and
// the watcher's metrics (metrics.go), registered on the Registerer given
// to NewWatcher.
//
// Every replica applies the same rules to the same keys at the same
// revision, so replicas agree on the servers and their weights; what
// depends on the local clock (slow-start progress, report expiry) and the
// assignment counts are each replica's own.
package store
