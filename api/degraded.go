package api

import (
	"net/http"

	"github.com/tcpdispatch/tcpdispatch/store"
)

// DegradedHeader is set on a get-tcp-ip answer given from the all-down
// fallback: servers are registered but none is eligible, so the answer
// names one of every registered server with a valid addr, which the leader
// last saw down (or never checked). Its value says why; today always
// DegradedAllDown.
const DegradedHeader = "X-Tcpdispatch-Degraded"

// DegradedAllDown is the DegradedHeader value of an all-down answer.
const DegradedAllDown = "all-down"

// degradedAllDown is the header value as net/http stores it, shared so that
// setting it allocates nothing.
var degradedAllDown = []string{DegradedAllDown}

// countDegraded reports whether an answer from snap is degraded (snap is
// all down), and counts it if so.
func (s *Server) countDegraded(snap *store.Snapshot) bool {
	if snap.AllDown {
		s.degraded.Add(1)
	}
	return snap.AllDown
}

// headTCPIP answers a HEAD of get-tcp-ip: the status and headers a GET
// would get, without picking a server. A pick advances round-robin and
// counts an assignment toward load balancing; a health check by HEAD must
// do neither.
func (s *Server) headTCPIP(r *reply, snap *store.Snapshot, q *query, exclude []string) {
	s.heads.Inc()
	if !anyServable(snap, exclude) {
		r.status = http.StatusServiceUnavailable
		return
	}
	r.status, r.noStore, r.contentType = http.StatusOK, true, contentJSON
	if q.text {
		r.contentType = contentText
	}
	r.degraded = snap.AllDown
}

// anyServable reports whether a GET would find a server in snap that is not
// in exclude.
func anyServable(snap *store.Snapshot, exclude []string) bool {
	for i := range snap.Servers {
		srv := snap.Servers[i]
		if !srv.Eligible {
			continue
		}
		excluded := false
		for _, id := range exclude {
			if id == srv.ID {
				excluded = true
				break
			}
		}
		if !excluded {
			return true
		}
	}
	return false
}
