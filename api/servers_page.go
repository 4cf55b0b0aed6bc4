package api

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tcpdispatch/tcpdispatch"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// maxServersLimit bounds /v1/servers?limit=; a larger page is a request for
// everything, which the unparameterised form already is.
const maxServersLimit = 10000

// serversPage is a parsed /v1/servers query: which servers, from where, how
// many. The zero value is today's unparameterised answer, every server.
type serversPage struct {
	// states keeps servers in one of these states ("up", "down",
	// "unknown"); empty keeps all.
	states []store.HealthState
	// limit is the most servers returned; 0 for no limit.
	limit int
	// after, when set, starts the page after this server id (the next
	// cursor of the previous page).
	after string
}

// parseServersPage parses the query of /v1/servers. Unknown parameters are
// ignored, as for get-tcp-ip; a known one that is repeated, empty or out of
// range is an error naming it.
func parseServersPage(q url.Values) (serversPage, error) {
	var p serversPage
	one := func(name string) (string, bool, error) {
		v, ok := q[name]
		switch {
		case !ok:
			return "", false, nil
		case len(v) > 1:
			return "", false, fmt.Errorf("%s: given %d times, want once", name, len(v))
		case v[0] == "":
			return "", false, fmt.Errorf("%s: empty", name)
		}
		return v[0], true, nil
	}
	v, ok, err := one("state")
	if err != nil {
		return p, err
	}
	if ok {
		for s := range strings.SplitSeq(v, ",") {
			switch st := store.HealthState(s); st {
			case store.HealthUp, store.HealthDown, store.HealthUnknown:
				if !slices.Contains(p.states, st) {
					p.states = append(p.states, st)
				}
			default:
				return p, fmt.Errorf("state %q: want up, down or unknown (comma-separated for several)", s)
			}
		}
	}
	if v, ok, err = one("limit"); err != nil {
		return p, err
	} else if ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxServersLimit {
			return p, fmt.Errorf("limit %q: want an integer in 1..%d", v, maxServersLimit)
		}
		p.limit = n
	}
	if v, ok, err = one("after"); err != nil {
		return p, err
	} else if ok {
		if err := tcpdispatch.ValidateID(v); err != nil {
			return p, fmt.Errorf("after: %w", err)
		}
		p.after = v
	}
	return p, nil
}

// page returns the servers of snap the query selects, and the cursor of
// the next page ("" when this one reaches the end). Servers are sorted by
// id, so a cursor is the last id returned and the page starts with a
// binary search: O(log n + what it skips and returns).
func (p serversPage) page(servers []*store.Server) (out []*store.Server, next string) {
	i := 0
	if p.after != "" {
		i, _ = slices.BinarySearchFunc(servers, p.after, func(s *store.Server, id string) int { return strings.Compare(s.ID, id) })
		if i < len(servers) && servers[i].ID == p.after {
			i++
		}
	}
	for ; i < len(servers); i++ {
		srv := servers[i]
		if len(p.states) > 0 && !slices.Contains(p.states, srv.State) {
			continue
		}
		if p.limit > 0 && len(out) == p.limit {
			return out, out[len(out)-1].ID
		}
		out = append(out, srv)
	}
	return out, ""
}
