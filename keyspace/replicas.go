package keyspace

// Keys that replicas write for one another. They lie outside the parts of
// the layout the watcher reads (servers/, config/, health/, election/), so
// no snapshot changes when they do.
//
//	<prefix>replicas/<name>        JSON {"name","http"}: a replica's advertised HTTP URL (leased)
//	<prefix>leader/opinion-token   the current term's token for the opinion route (leader, fenced)
//	<prefix>leader/heartbeat       JSON Heartbeat: the leader's proof, once per probe interval,
//	                               that the records of its epoch are current (leader, fenced)
//
// The watcher reads leader/heartbeat (see verdict.go) but a heartbeat alone
// never rebuilds a snapshot.

// Replicas returns the prefix of the replicas' announcements.
func (k Layout) Replicas() string { return k.prefix + "replicas/" }

// Replica returns the key of replica name's announcement.
func (k Layout) Replica(name string) string { return k.Replicas() + name }

// OpinionToken returns the key of the token that authenticates the leader
// on other replicas' opinion route.
func (k Layout) OpinionToken() string { return k.prefix + "leader/opinion-token" }

// Heartbeat returns the key of the leader's heartbeat (see store.Heartbeat).
func (k Layout) Heartbeat() string { return k.prefix + "leader/heartbeat" }
