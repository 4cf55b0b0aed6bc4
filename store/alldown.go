package store

// serveAllDown is the last line of defence (Envoy's panic routing): when
// servers are registered but none is eligible, it makes every registered
// server with a valid addr eligible on its static weight, marked Degraded,
// and reports whether it did (see Snapshot.AllDown). Servers the operator
// took out (drained, weight 0) are used only when no other server has a
// valid addr: a client is better off trying a server the leader could not reach, or one being drained,
// than getting no answer at all, but operator intent still comes first.
func serveAllDown(servers []Server) (allDown bool) {
	for i := range servers {
		if servers[i].Eligible {
			return false
		}
	}
	undrained := false
	for i := range servers {
		srv := &servers[i]
		if srv.Addr != "" && !srv.Draining && srv.Weight > 0 {
			undrained = true
			break
		}
	}
	for i := range servers {
		srv := &servers[i]
		if srv.Addr == "" || undrained && (srv.Draining || srv.Weight <= 0) {
			continue
		}
		srv.Eligible, srv.Degraded, srv.EffectiveWeight = true, true, max(srv.Weight, 1)
		allDown = true
	}
	return allDown
}
