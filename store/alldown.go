package store

// serveAllDown is the last line of defence (Envoy's panic routing): when
// servers are registered but none is eligible, it makes every registered
// server with a valid addr eligible on its static weight, marked Degraded,
// and reports whether it did (see Snapshot.AllDown). Servers the operator
// took out (drained, weight 0) are used only when no other server has a
// valid addr: a client is better off trying a server the leader could not reach, or one being drained,
// than getting no answer at all, but operator intent still comes first.
func serveAllDown(in []policyIn, out []decision) (allDown bool) {
	for i := range out {
		if out[i].eligible {
			return false
		}
	}
	undrained := false
	for i := range in {
		if x := &in[i]; x.hasAddr && !x.draining && x.weight > 0 {
			undrained = true
			break
		}
	}
	for i := range in {
		if x := &in[i]; !x.hasAddr || undrained && (x.draining || x.weight <= 0) {
			continue
		}
		out[i].eligible, out[i].degraded, out[i].effective = true, true, max(in[i].weight, 1)
		allDown = true
	}
	return allDown
}
