package store

import (
	"strings"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// at is the build time of the balancing tests.
var at = time.Unix(100000, 0)

func upSince(t testing.TB, addr string, since time.Time, mod func(*Health)) string {
	h := Health{Addr: addr, Healthy: true, Since: since}
	if mod != nil {
		mod(&h)
	}
	return healthJSON(t, h)
}

func report(load float64, conns int64, overloaded bool, age time.Duration) func(*Health) {
	return func(h *Health) {
		h.Load, h.Conns, h.MaxConns, h.Overloaded = load, conns, 1000, overloaded
		h.ReportedAt = at.Add(-age)
		h.ReportExpires = h.ReportedAt.Add(30 * time.Second)
	}
}

func buildAt(t testing.TB, m *model, now time.Time) *Snapshot {
	t.Helper()
	s, err := m.build(now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEffectiveWeights(t *testing.T) {
	old := at.Add(-time.Hour)
	tests := []struct {
		name     string
		ops      []op
		weight   int // effective weight of a
		eligible bool
		check    func(t *testing.T, srv *Server)
	}{
		{"no report: static", []op{put("health/a", upSince(t, "10.0.0.1:1", old, nil))}, 200, true, nil},
		{"fresh load 0.5 halves", []op{put("health/a", upSince(t, "10.0.0.1:1", old, report(0.5, 500, false, time.Second)))}, 100, true,
			func(t *testing.T, srv *Server) {
				if srv.Report != "fresh" || srv.Conns != 500 || srv.Load != 0.5 {
					t.Errorf("report %q conns %d load %v", srv.Report, srv.Conns, srv.Load)
				}
			}},
		{"load near 1 keeps a floor", []op{put("health/a", upSince(t, "10.0.0.1:1", old, report(0.99, 0, false, 0)))}, 10, true, nil},
		{"overloaded: not eligible", []op{put("health/a", upSince(t, "10.0.0.1:1", old, report(0.95, 0, true, 0)))}, 0, false,
			func(t *testing.T, srv *Server) {
				if !srv.Overloaded || !srv.Healthy {
					t.Errorf("overloaded %v healthy %v", srv.Overloaded, srv.Healthy)
				}
			}},
		{"expired report: static weight", []op{put("health/a", upSince(t, "10.0.0.1:1", old, report(0.95, 900, true, time.Minute)))}, 200, true,
			func(t *testing.T, srv *Server) {
				if srv.Report != "expired" || srv.Overloaded || srv.Conns != 0 {
					t.Errorf("report %q overloaded %v conns %d", srv.Report, srv.Overloaded, srv.Conns)
				}
			}},
		{"operator drain", []op{put("servers/a/drain", "true"), put("health/a", upSince(t, "10.0.0.1:1", old, nil))}, 0, false,
			func(t *testing.T, srv *Server) {
				if !srv.Draining || srv.State != "up" {
					t.Errorf("draining %v state %q", srv.Draining, srv.State)
				}
			}},
		{"drain false", []op{put("servers/a/drain", " FALSE "), put("health/a", upSince(t, "10.0.0.1:1", old, nil))}, 200, true, nil},
		{"bad drain keeps the last good", []op{put("servers/a/drain", "true"), putBad("servers/a/drain", "yes please"),
			put("health/a", upSince(t, "10.0.0.1:1", old, nil))}, 0, false,
			func(t *testing.T, srv *Server) {
				if len(srv.Errors) != 1 || !strings.Contains(srv.Errors[0], "drain") {
					t.Errorf("errors %q", srv.Errors)
				}
			}},
		{"server reports draining", []op{put("health/a", upSince(t, "10.0.0.1:1", old, func(h *Health) {
			report(0.1, 5, false, 0)(h)
			h.Draining = true
		}))}, 0, false, nil},
		{"slow start at 3s of 30s: 10%", []op{put("health/a", upSince(t, "10.0.0.1:1", at.Add(-3*time.Second), nil))}, 20, true,
			func(t *testing.T, srv *Server) {
				if srv.SlowStart != MinRampShare {
					t.Errorf("slow start %v", srv.SlowStart)
				}
			}},
		{"slow start at 15s of 30s: 50%", []op{put("health/a", upSince(t, "10.0.0.1:1", at.Add(-15*time.Second), nil))}, 100, true, nil},
		{"slow start and load multiply", []op{put("health/a", upSince(t, "10.0.0.1:1", at.Add(-15*time.Second), report(0.5, 1, false, 0)))}, 50, true, nil},
		{"slow start 0 disables", []op{put("config/slow-start", "0"), put("health/a", upSince(t, "10.0.0.1:1", at.Add(-3*time.Second), nil))}, 200, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestModel(t)
			// b is an established server, so slow start applies to a.
			apply(t, m, []op{put("servers/a/addr", "10.0.0.1:1"), put("servers/a/weight", "200"),
				put("servers/b/addr", "10.0.0.2:1"), put("health/b", upSince(t, "10.0.0.2:1", old, nil))})
			apply(t, m, tt.ops)
			s := buildAt(t, m, at)
			srv := s.Lookup("a")
			if srv.EffectiveWeight != tt.weight || srv.Eligible != tt.eligible {
				t.Errorf("effective weight %d eligible %v; want %d %v", srv.EffectiveWeight, srv.Eligible, tt.weight, tt.eligible)
			}
			if s.Panic {
				t.Errorf("panic mode with b eligible")
			}
			if tt.check != nil {
				tt.check(t, srv)
			}
		})
	}
}

func TestSlowStartRamp(t *testing.T) {
	old := at.Add(-time.Hour)
	m := newTestModel(t)
	apply(t, m, []op{put("config/slow-start", "10s"),
		put("servers/a/addr", "10.0.0.1:1"), put("health/a", upSince(t, "10.0.0.1:1", at, nil)),
		put("servers/b/addr", "10.0.0.2:1")})
	// Every server new: no one to protect, no ramp.
	if s := buildAt(t, m, at.Add(time.Second)); s.Lookup("a").EffectiveWeight != 100 || !s.RebuildAt.IsZero() {
		t.Fatalf("lone new server: weight %d, rebuild at %v", s.Lookup("a").EffectiveWeight, s.RebuildAt)
	}
	apply(t, m, []op{put("health/b", upSince(t, "10.0.0.2:1", old, nil))})
	prev := 0
	for sec := 0; sec <= 11; sec++ {
		now := at.Add(time.Duration(sec) * time.Second)
		s := buildAt(t, m, now)
		w := s.Lookup("a").EffectiveWeight
		want := max(10, min(100, sec*10))
		if w != want || w < prev {
			t.Errorf("at %ds: weight %d, want %d", sec, w, want)
		}
		if ramping := sec < 10; ramping != !s.RebuildAt.IsZero() {
			t.Errorf("at %ds: RebuildAt %v", sec, s.RebuildAt)
		} else if ramping && s.RebuildAt.Sub(now) != 500*time.Millisecond {
			t.Errorf("at %ds: rebuild in %v, want 500ms (window/20)", sec, s.RebuildAt.Sub(now))
		}
		prev = w
	}
}

func TestPanicMode(t *testing.T) {
	old := at.Add(-time.Hour)
	m := newTestModel(t)
	for i, id := range []string{"a", "b", "c", "d"} {
		addr := "10.0.0." + string(rune('1'+i)) + ":1"
		overloaded := id != "a"
		apply(t, m, []op{put("servers/"+id+"/addr", addr), put("health/"+id, upSince(t, addr, old, report(0.95, 0, overloaded, 0)))})
	}
	s := buildAt(t, m, at)
	if !s.Panic || s.Eligible() != 4 {
		t.Fatalf("1 of 4 eligible: panic %v, eligible %d; want panic over all 4", s.Panic, s.Eligible())
	}
	for _, srv := range s.Servers {
		if srv.EffectiveWeight != 100 {
			t.Errorf("%s: panic weight %d, want static 100", srv.ID, srv.EffectiveWeight)
		}
	}
	apply(t, m, []op{put("config/panic-threshold", "0")})
	if s := buildAt(t, m, at); s.Panic || s.Eligible() != 1 {
		t.Errorf("threshold 0: panic %v eligible %d", s.Panic, s.Eligible())
	}
	apply(t, m, []op{put("config/panic-threshold", "0.25")})
	if s := buildAt(t, m, at); s.Panic || s.Eligible() != 1 {
		t.Errorf("threshold 0.25 with 1/4 eligible: panic %v eligible %d", s.Panic, s.Eligible())
	}
}

func TestMassRemoval(t *testing.T) {
	old := at.Add(-time.Hour)
	for _, policy := range []string{"apply", "hold"} {
		t.Run(policy, func(t *testing.T) {
			m := newTestModel(t)
			apply(t, m, []op{put("config/mass-removal", policy), put("config/panic-threshold", "0")})
			addrs := map[string]string{"a": "10.0.0.1:1", "b": "10.0.0.2:1", "c": "10.0.0.3:1", "d": "10.0.0.4:1"}
			for id, addr := range addrs {
				apply(t, m, []op{put("servers/"+id+"/addr", addr), put("health/"+id, upSince(t, addr, old, nil))})
			}
			if s := buildAt(t, m, at); s.Eligible() != 4 || s.MassRemoval != "" {
				t.Fatalf("start: eligible %d, mass removal %q", s.Eligible(), s.MassRemoval)
			}
			for _, id := range []string{"b", "c", "d"} {
				apply(t, m, []op{put("health/"+id, healthJSON(t, Health{Addr: addrs[id], Since: at}))})
			}
			s := buildAt(t, m, at)
			if !strings.Contains(s.MassRemoval, "3 of 4") {
				t.Errorf("mass removal = %q, want 3 of 4", s.MassRemoval)
			}
			want := 1
			if policy == "hold" {
				want = 4
				if !s.Lookup("c").Held || s.Lookup("c").EffectiveWeight != 100 {
					t.Errorf("c not held: %+v", s.Lookup("c"))
				}
			}
			if s.Eligible() != want {
				t.Errorf("eligible %d, want %d", s.Eligible(), want)
			}
			// The next build is not a new event: nothing to log or count,
			// and a hold stays in force.
			if s := buildAt(t, m, at); s.MassRemoval != "" || s.Eligible() != want {
				t.Errorf("rebuild: mass removal %q, eligible %d; want none, %d", s.MassRemoval, s.Eligible(), want)
			}
			// Two come back: the update no longer removes more than half.
			for _, id := range []string{"b", "c"} {
				apply(t, m, []op{put("health/"+id, upSince(t, addrs[id], old, nil))})
			}
			if s := buildAt(t, m, at); s.Eligible() != 3 || s.Lookup("d").Held {
				t.Errorf("after recovery: eligible %d, d held %v", s.Eligible(), s.Lookup("d").Held)
			}
		})
	}
}

func TestAssignedResetsOnReport(t *testing.T) {
	old := at.Add(-time.Hour)
	m := newTestModel(t)
	apply(t, m, []op{put("config/strategy", "least-load"), put("servers/a/addr", "10.0.0.1:1"),
		put("health/a", upSince(t, "10.0.0.1:1", old, report(0.1, 10, false, 2*time.Second)))})
	s := buildAt(t, m, at)
	for range 5 {
		s.Pick("", nil)
	}
	// A rebuild for another reason keeps the count.
	apply(t, m, []op{put("servers/b/addr", "10.0.0.2:1")})
	s = buildAt(t, m, at)
	if got := s.Lookup("a").Assigned(); got != 5 {
		t.Fatalf("assigned after an unrelated rebuild = %d, want 5", got)
	}
	apply(t, m, []op{put("health/a", upSince(t, "10.0.0.1:1", old, report(0.1, 15, false, time.Second)))})
	if got := buildAt(t, m, at).Lookup("a").Assigned(); got != 0 {
		t.Fatalf("assigned after a new report = %d, want 0", got)
	}
	apply(t, m, []op{put("config/assignment-accounting", "false")})
	s = buildAt(t, m, at)
	s.Pick("", nil)
	if got := s.Lookup("a").Assigned(); got != 0 {
		t.Fatalf("assigned with accounting off = %d, want 0", got)
	}
}

func TestBalancingConfig(t *testing.T) {
	m := newTestModel(t)
	apply(t, m, []op{put("config/slow-start", "5s"), put("config/hash-load-factor", "2"),
		put("config/overload-threshold", "0.8"), putBad("config/panic-threshold", "1.5"),
		putBad("config/mass-removal", "ignore"), putBad("config/unknown-setting", "x")})
	s := mustBuild(t, m)
	b := s.Balancing
	if b.SlowStart != 5*time.Second || b.HashLoadFactor != 2 || b.OverloadThreshold != 0.8 ||
		b.OverloadRecover < 0.69 || b.OverloadRecover > 0.71 || b.PanicThreshold != 0.5 || b.MassRemoval != "apply" {
		t.Errorf("balancing = %+v", b)
	}
	if len(s.Problems) != 3 {
		t.Errorf("problems = %q, want panic-threshold, mass-removal and the unknown setting", s.Problems)
	}
	apply(t, m, []op{put("config/overload-recover", "0.9"), del("config/slow-start")})
	s = mustBuild(t, m)
	if s.Balancing.OverloadRecover >= s.Balancing.OverloadThreshold || len(s.Problems) != 4 || s.Balancing.SlowStart != 30*time.Second {
		t.Errorf("recover above threshold: %+v, problems %q", s.Balancing, s.Problems)
	}
}

func FuzzParseStatusURL(f *testing.F) {
	for _, s := range []string{"http://10.0.0.1:9100/status", "https://h/s", "ftp://x", "http://", " http://u:p@h/", "%zz", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := keyspace.ParseStatusURL(s)
		if err != nil {
			return
		}
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			t.Fatalf("keyspace.ParseStatusURL(%q) = %q accepted without http(s)", s, u)
		}
		if again, err := keyspace.ParseStatusURL(u); err != nil || again != u {
			t.Fatalf("keyspace.ParseStatusURL not idempotent on %q: %q, %v", u, again, err)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{"30s", "0", "1.25", "true", "hold", "-1", "NaN", "1e309"} {
		for name := range configParsers {
			f.Add(name, s)
		}
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		v, err := ParseConfig(name, value)
		if err != nil {
			return
		}
		b := DefaultBalancing()
		b.set(name, v) // must not panic on any accepted value
		if b.PanicThreshold < 0 || b.PanicThreshold > 1 || b.SlowStart < 0 || (b.HashLoadFactor != 0 && b.HashLoadFactor <= 1) {
			t.Fatalf("%s=%q accepted as %v, out of range: %+v", name, value, v, b)
		}
	})
}

// FuzzKeysParse checks that key decoding never panics and that every key it
// classifies round-trips through the layout's constructors.
func FuzzKeysParse(f *testing.F) {
	for _, s := range []string{"/p/servers/a/addr", "/p/servers/a/drain", "/p/config/slow-start", "/p/config/strategy",
		"/p/health/x", "/p/election/1", "/p/servers//addr", "/p/config/", "/q/servers/a/addr", "/p/servers/a/b/c"} {
		f.Add(s)
	}
	k, _ := keyspace.New(testPrefix)
	f.Fuzz(func(t *testing.T, key string) {
		kind, id, field := parseKey(k, key)
		var back string
		switch kind {
		case keyspace.KindServerField:
			back = k.ServerField(id, field)
		case keyspace.KindStrategy:
			back = k.Strategy()
		case keyspace.KindConfig:
			back = k.Config(field)
		case keyspace.KindHealth:
			back = k.Health(id)
		default:
			return
		}
		if back != key {
			t.Fatalf("parse(%q) = %v %q %q, which builds %q", key, kind, id, field, back)
		}
		m := newModel(k)
		m.put(key, []byte("x"), 1) // must not panic
		m.del(key)
	})
}
