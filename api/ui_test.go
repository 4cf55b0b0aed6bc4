package api

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/store"
)

func uiSnapshot(t *testing.T) *store.Snapshot {
	t.Helper()
	snap, err := store.NewSnapshot(7, balancer.WRR, []store.Server{
		{ID: "a", Addr: "127.0.0.1:9001", Weight: 100, Healthy: true, State: "up", Eligible: true},
		{ID: "b", Addr: "127.0.0.1:9002", Weight: 50, State: "down", Reason: "connection refused"},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	snap.Leader, snap.LeaderEpoch = "r2", 5
	snap.Candidates = []store.Candidate{{Name: "r2", Epoch: 5}, {Name: "r1", Epoch: 9}}
	return snap
}

func TestUIPage(t *testing.T) {
	srv := newTestServer(t, sourceOf(uiSnapshot(t)), fakeLeader(false), nil)
	rec := get(t, srv.Handler(), "/ui", "192.0.2.1:1")
	if rec.Code != http.StatusOK {
		t.Fatalf("/ui: status %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q: want text/html", ct)
	}
	body := rec.Body.String()
	// No external assets: nothing is loaded from another origin.
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`).FindString(body); m != "" {
		t.Errorf("the page loads an external asset: %q", m)
	}
	for _, want := range []string{`name="viewport"`, `fetch(path`, `"v1/fleet"`, `"v1/status"`, "all_down", "@media"} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

func TestFleet(t *testing.T) {
	snap := uiSnapshot(t)
	srv := newTestServer(t, sourceOf(snap), fakeLeader(false), nil)
	h := srv.Handler()
	for range 3 {
		if rec := get(t, h, "/get-tcp-ip", "192.0.2.1:1"); rec.Code != http.StatusOK {
			t.Fatalf("get-tcp-ip: %d", rec.Code)
		}
	}
	rec := get(t, h, "/v1/fleet", "192.0.2.1:1")
	if rec.Code != http.StatusOK {
		t.Fatalf("/v1/fleet: status %d: %s", rec.Code, rec.Body)
	}
	var fl fleetResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &fl); err != nil {
		t.Fatal(err)
	}
	if fl.Leader != "r2" || len(fl.Replicas) != 2 || !fl.Replicas[0].Leader || fl.Replicas[1].Leader {
		t.Errorf("replicas %+v, leader %q: want r2 leading r1", fl.Replicas, fl.Leader)
	}
	if len(fl.Servers) != 2 || fl.Servers[0].ID != "a" || fl.Servers[0].Picks != 3 || fl.Servers[1].State != "down" ||
		fl.Servers[1].Reason != "connection refused" || fl.Servers[1].Picks != 0 {
		t.Errorf("servers %+v", fl.Servers)
	}

	empty := newTestServer(t, &fakeSource{}, fakeLeader(false), nil)
	wantJSONError(t, get(t, empty.Handler(), "/v1/fleet", "192.0.2.1:1"), http.StatusServiceUnavailable, "no snapshot")
}

func TestPickRates(t *testing.T) {
	snap := uiSnapshot(t)
	var r pickRates
	t0 := time.Unix(1000, 0)
	out := make([]fleetServer, 2)
	out[0].ID, out[1].ID = "a", "b"
	step := func(at time.Duration, a, b int64) (time.Duration, float64, float64) {
		out[0].PicksPerSecond, out[1].PicksPerSecond = 0, 0
		w := r.rates(t0.Add(at), snap, []int64{a, b}, out)
		return w, out[0].PicksPerSecond, out[1].PicksPerSecond
	}
	if w, a, _ := step(0, 100, 0); w != 0 || a != 0 {
		t.Errorf("first sample: window %v rate %v, want none", w, a)
	}
	if w, a, b := step(500*time.Millisecond, 150, 0); w != 500*time.Millisecond || a != 100 || b != 0 {
		t.Errorf("after 0.5s: window %v rates %v %v, want 0.5s 100 0", w, a, b)
	}
	// A second sample is taken at 1s; rates still count from the first.
	if w, a, _ := step(time.Second, 200, 0); w != time.Second || a != 100 {
		t.Errorf("after 1s: window %v rate %v, want 1s 100", w, a)
	}
	// Until the next sample, rates count from the older one: windows
	// span one to two seconds.
	if w, a, b := step(1500*time.Millisecond, 250, 30); w != 1500*time.Millisecond || a != 100 || b != 20 {
		t.Errorf("after 1.5s: window %v rates %v %v, want 1.5s 100 20", w, a, b)
	}
	if w, a, _ := step(2500*time.Millisecond, 300, 30); w != 1500*time.Millisecond || a != 100/1.5 {
		t.Errorf("after 2.5s: window %v rate %v, want 1.5s from the 1s sample", w, a)
	}
}
