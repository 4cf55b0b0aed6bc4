package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/store"
)

func gaugeOrCounter(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestAllDownAnswers checks the last line of defence: with every server
// down and config/all-down unset (serve), get-tcp-ip answers from all of
// them, with ?n alternatives, marked degraded in a header, counted in the
// metric and /v1/status; under fail it answers 503 without the header.
func TestAllDownAnswers(t *testing.T) {
	f := newFixtures(t)
	const remote = "192.0.2.7:51234"
	reg := prometheus.NewRegistry()
	h := newTestServer(t, sourceOf(f.down), fakeLeader(false), reg).Handler()

	rec := get(t, h, "/get-tcp-ip", remote)
	if p := pick(t, rec); p.ID != "x" && p.ID != "y" {
		t.Errorf("answer %s; want x or y", rec.Body)
	}
	if got := rec.Header().Get(DegradedHeader); got != "all-down" {
		t.Errorf("%s = %q; want all-down", DegradedHeader, got)
	}
	rec = get(t, h, "/get-tcp-ip?n=3", remote)
	p := pick(t, rec)
	ids := []string{p.ID}
	for _, a := range p.Alternatives {
		ids = append(ids, a.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"x", "y"}) || rec.Header().Get(DegradedHeader) != "all-down" {
		t.Errorf("?n=3 = %s, header %q; want x and y, degraded", rec.Body, rec.Header().Get(DegradedHeader))
	}
	rec = get(t, h, "/get-tcp-ip?format=text", remote)
	if rec.Code != http.StatusOK || rec.Header().Get(DegradedHeader) != "all-down" {
		t.Errorf("text answer %d, header %q", rec.Code, rec.Header().Get(DegradedHeader))
	}
	if n := gaugeOrCounter(t, reg, "tcpdispatch_degraded_answers_total"); n != 3 {
		t.Errorf("tcpdispatch_degraded_answers_total = %v; want 3", n)
	}
	var st map[string]any
	if err := json.Unmarshal(get(t, h, "/v1/status", remote).Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st["all_down"] != true || st["degraded_answers"] != float64(3) || st["eligible"] != float64(0) {
		t.Errorf("status = %v; want all_down true, degraded_answers 3, eligible 0", st)
	}
	if _, ok := st["oldest_verdict_age_seconds"].(float64); !ok {
		t.Errorf("status lacks oldest_verdict_age_seconds: %v", st)
	}

	// The degraded path allocates no more than the normal one.
	if allocs := allocsPerGet(t, h, "/get-tcp-ip", remote); allocs > maxAllocs {
		t.Errorf("a degraded answer allocates %v times; want <= %d", allocs, maxAllocs)
	}

	failing := newTestServer(t, sourceOf(f.none), fakeLeader(false), nil).Handler()
	rec = get(t, failing, "/get-tcp-ip", remote)
	wantJSONError(t, rec, http.StatusServiceUnavailable, "no healthy server: 1 registered, 0 eligible")
	if rec.Header().Get(DegradedHeader) != "" {
		t.Errorf("503 carries %s", DegradedHeader)
	}
	healthy := newTestServer(t, sourceOf(f.one), fakeLeader(false), nil).Handler()
	if rec := get(t, healthy, "/get-tcp-ip", remote); rec.Header().Get(DegradedHeader) != "" {
		t.Errorf("a normal answer carries %s", DegradedHeader)
	}
}

// TestHeadCountsNoAssignment checks that a HEAD of get-tcp-ip (a load
// balancer's health check) gets a GET's status without picking a server:
// no assignment is counted and round-robin does not advance.
func TestHeadCountsNoAssignment(t *testing.T) {
	servers := []store.Server{
		{ID: "a", Addr: "127.0.0.1:1", Weight: 100, Eligible: true, Report: "fresh"},
		{ID: "b", Addr: "127.0.0.1:2", Weight: 100, Eligible: true, Report: "fresh"},
	}
	snap, err := store.NewSnapshot(1, balancer.LeastLoad, servers, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h := newTestServer(t, sourceOf(snap), fakeLeader(false), nil).Handler()
	for _, target := range []string{"/get-tcp-ip", "/get-tcp-ip?n=2", "/get-tcp-ip?format=text"} {
		req := httptest.NewRequest(http.MethodHead, target, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
			t.Errorf("HEAD %s = %d %q; want 200, no body", target, rec.Code, rec.Body)
		}
	}
	if a, b := snap.Lookup("a").Assigned(), snap.Lookup("b").Assigned(); a != 0 || b != 0 {
		t.Errorf("after HEADs: assigned a=%d b=%d; want 0", a, b)
	}
	req := httptest.NewRequest(http.MethodHead, "/get-tcp-ip?exclude=a,b", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("HEAD with every server excluded = %d; want 503", rec.Code)
	}
	if rec := get(t, h, "/get-tcp-ip", "192.0.2.1:1"); rec.Code != http.StatusOK ||
		snap.Lookup("a").Assigned()+snap.Lookup("b").Assigned() != 1 || strings.Contains(rec.Body.String(), "error") {
		t.Errorf("GET after HEADs: %d %s; want one assignment", rec.Code, rec.Body)
	}
}
