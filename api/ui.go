package api

import (
	_ "embed"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tcpdispatch/tcpdispatch/store"
)

// uiPage is the status page: one self-contained HTML file (inline CSS and
// script, no external assets, no build step). It polls /v1/status and
// /v1/fleet with relative URLs, so it works wherever the admin routes are
// mounted.
//
//go:embed ui.html
var uiPage []byte

var contentHTML = []string{"text/html; charset=utf-8"}

// ui serves the status page.
func (s *Server) ui(c echo.Context) error {
	h := c.Response().Header()
	h["Cache-Control"] = noStore
	// The page loads nothing from elsewhere; say so to the browser.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:")
	h.Set("X-Content-Type-Options", "nosniff")
	h["Content-Type"] = contentHTML
	c.Response().WriteHeader(http.StatusOK)
	_, err := c.Response().Write(uiPage)
	return err
}

// fleetResponse is the body of /v1/fleet: what the status page needs, and
// nothing more, so that it stays small at large fleets (about 120 bytes
// per server against /v1/servers' 260 and more, see
// BenchmarkFleetVsServers).
type fleetResponse struct {
	Name        string         `json:"name"`
	Leader      string         `json:"leader"`
	LeaderEpoch int64          `json:"leader_epoch"`
	Replicas    []fleetReplica `json:"replicas"`
	Revision    int64          `json:"revision"`
	Strategy    string         `json:"strategy"`
	Panic       bool           `json:"panic"`
	MassRemoval string         `json:"mass_removal,omitempty"`
	Problems    []string       `json:"problems,omitempty"`
	// RateWindowMs is the window picks_per_second is measured over; 0
	// until a second request of this replica gives a window.
	RateWindowMs int64         `json:"rate_window_ms"`
	Servers      []fleetServer `json:"servers"`
}

type fleetReplica struct {
	Name   string `json:"name"`
	Epoch  int64  `json:"epoch"`
	Leader bool   `json:"leader"`
}

// fleetServer is one server in /v1/fleet. Fields at their usual value are
// left out to keep the answer small: no report, not ramping, not draining.
type fleetServer struct {
	ID              string            `json:"id"`
	Addr            string            `json:"addr"`
	State           store.HealthState `json:"state"`
	Reason          string            `json:"reason,omitempty"`
	Since           time.Time         `json:"since,omitzero"`
	Weight          int               `json:"weight"`
	EffectiveWeight int               `json:"effective_weight"`
	Eligible        bool              `json:"eligible"`
	// Report is fresh or expired; left out for none.
	Report     store.ReportState `json:"report,omitempty"`
	Load       float64           `json:"load,omitempty"`
	Conns      int64             `json:"conns,omitempty"`
	MaxConns   int64             `json:"max_conns,omitempty"`
	Overloaded bool              `json:"overloaded,omitempty"`
	// SlowStart is the ramp progress while ramping (0 < x < 1); left out
	// when the server is not ramping.
	SlowStart      float64 `json:"slow_start,omitempty"`
	Draining       bool    `json:"draining,omitempty"`
	Held           bool    `json:"held,omitempty"`
	Errors         int     `json:"errors,omitempty"`
	Picks          int64   `json:"picks"`
	PicksPerSecond float64 `json:"picks_per_second,omitempty"`
}

// fleet answers /v1/fleet.
func (s *Server) fleet(c echo.Context) error {
	snap := s.src.Snapshot()
	if snap == nil {
		return writeError(c, http.StatusServiceUnavailable, noSnapshotReason)
	}
	resp := fleetResponse{Name: s.cfg.Name, Leader: snap.Leader, LeaderEpoch: snap.LeaderEpoch, Revision: s.src.Sync().Revision,
		Strategy: string(snap.Strategy), Panic: snap.Panic, MassRemoval: snap.MassRemoval, Problems: snap.Problems,
		Replicas: make([]fleetReplica, len(snap.Candidates)), Servers: make([]fleetServer, len(snap.Servers))}
	for i, cand := range snap.Candidates {
		resp.Replicas[i] = fleetReplica{Name: cand.Name, Epoch: cand.Epoch, Leader: cand.Epoch == snap.LeaderEpoch}
	}
	picks := make([]int64, len(snap.Servers))
	for i := range snap.Servers {
		srv := snap.Servers[i]
		picks[i] = srv.Picks()
		fs := fleetServer{ID: srv.ID, Addr: srv.Addr, State: srv.State, Reason: srv.Reason, Since: srv.Since,
			Weight: srv.Weight, EffectiveWeight: srv.EffectiveWeight, Eligible: srv.Eligible, Report: srv.Report,
			Load: srv.Load, Conns: srv.Conns, MaxConns: srv.MaxConns, Overloaded: srv.Overloaded, SlowStart: srv.SlowStart,
			Draining: srv.Draining, Held: srv.Held, Errors: len(srv.Errors), Picks: picks[i]}
		if fs.Report == store.ReportNone {
			fs.Report = ""
		}
		if fs.SlowStart >= 1 {
			fs.SlowStart = 0
		}
		resp.Servers[i] = fs
	}
	window := s.rates.rates(time.Now(), snap, picks, resp.Servers)
	resp.RateWindowMs = window.Milliseconds()
	c.Response().Header()["Cache-Control"] = noStore
	return c.JSON(http.StatusOK, resp)
}

// pickRates turns the per-server pick counters into picks per second
// without a goroutine: each /v1/fleet request compares the counters with a
// sample at least a second old. Samples are taken at most once a second,
// so several open pages share them. Only the admin route takes its lock;
// get-tcp-ip never does.
type pickRates struct {
	mu            sync.Mutex
	older, newer  pickSample
	minSampleSpan time.Duration // 0 means one second
}

type pickSample struct {
	at    time.Time
	picks map[string]int64
}

// rates sets PicksPerSecond of every server from its picks total and
// returns the window measured over (0 for the first request).
func (r *pickRates) rates(now time.Time, snap *store.Snapshot, picks []int64, out []fleetServer) time.Duration {
	span := r.minSampleSpan
	if span == 0 {
		span = time.Second
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.newer.at.IsZero() || now.Sub(r.newer.at) >= span {
		r.older = r.newer
		r.newer = pickSample{at: now, picks: make(map[string]int64, len(snap.Servers))}
		for i := range snap.Servers {
			r.newer.picks[snap.Servers[i].ID] = picks[i]
		}
	}
	base := r.older
	if base.at.IsZero() {
		base = r.newer
	}
	window := now.Sub(base.at)
	if window <= 0 {
		return 0
	}
	for i := range out {
		// A server new since the sample counts from zero.
		if d := picks[i] - base.picks[out[i].ID]; d > 0 {
			out[i].PicksPerSecond = float64(d) / window.Seconds()
		}
	}
	return window
}
