package store

import (
	"strings"
	"testing"
	"time"
)

func TestParseRebalanceRate(t *testing.T) {
	tests := []struct {
		in   string
		want RebalanceRate
		ok   bool
	}{
		{"1%/s,5%/m", RebalanceRate{0.01, 0.05}, true},
		{" 5%/m , 1%/s ", RebalanceRate{0.01, 0.05}, true},
		{"0.5%/s,100%/m", RebalanceRate{0.005, 1}, true},
		{"1%/s", RebalanceRate{}, false},
		{"1%/s,5%/m,2%/s", RebalanceRate{}, false},
		{"1%/s,2%/s", RebalanceRate{}, false},
		{"1%/s,5%/h", RebalanceRate{}, false},
		{"0%/s,5%/m", RebalanceRate{}, false},
		{"101%/s,5%/m", RebalanceRate{}, false},
		{"NaN%/s,5%/m", RebalanceRate{}, false},
		{"1/s,5%/m", RebalanceRate{}, false},
		{"-1%/s,5%/m", RebalanceRate{}, false},
		{"", RebalanceRate{}, false},
		{"fast", RebalanceRate{}, false},
	}
	for _, tt := range tests {
		got, err := ParseRebalanceRate(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseRebalanceRate(%q) = %+v, %v; want %+v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	// String is the format Parse takes.
	if r, err := ParseRebalanceRate(DefaultRebalanceRate.String()); err != nil || r != DefaultRebalanceRate {
		t.Errorf("round trip of %q: %+v, %v", DefaultRebalanceRate.String(), r, err)
	}
}

func TestRebalanceConfig(t *testing.T) {
	m := newTestModel(t)
	if b, _ := m.balancing(); b.Rebalance != DefaultRebalance() || b.Rebalance.On() {
		t.Fatalf("default rebalance %+v; want %+v, off", b.Rebalance, DefaultRebalance())
	}
	apply(t, m, []op{
		put("config/rebalance", " ON "),
		put("config/rebalance-tolerance", "0.05"),
		put("config/rebalance-rate", "2%/s,10%/m"),
	})
	b, problems := m.balancing()
	want := Rebalance{Mode: RebalanceOn, Tolerance: 0.05, Rate: RebalanceRate{0.02, 0.10}}
	if b.Rebalance != want || len(problems) != 0 {
		t.Fatalf("rebalance %+v problems %v; want %+v", b.Rebalance, problems, want)
	}
	// Bad values: rejected, listed in problems, last good value kept.
	apply(t, m, []op{
		putBad("config/rebalance", "yes"),
		putBad("config/rebalance-tolerance", "1.5"),
		putBad("config/rebalance-rate", "1%/s"),
	})
	b, problems = m.balancing()
	if b.Rebalance != want {
		t.Errorf("after bad values: %+v; want the last good %+v", b.Rebalance, want)
	}
	if len(problems) != 3 {
		t.Fatalf("problems %v; want three", problems)
	}
	for i, k := range []string{"config/rebalance:", "config/rebalance-rate:", "config/rebalance-tolerance:"} {
		if !strings.Contains(problems[i], k) {
			t.Errorf("problem %d = %q; want it about %s", i, problems[i], k)
		}
	}
	// A bad value that never had a good one leaves the default.
	m = newTestModel(t)
	apply(t, m, []op{putBad("config/rebalance", "maybe")})
	if b, _ := m.balancing(); b.Rebalance.On() {
		t.Error("a bad config/rebalance turned rebalancing on")
	}
}

func TestRebalanceFieldsFromHealth(t *testing.T) {
	m := newTestModel(t)
	apply(t, m, []op{
		put("servers/a/addr", "10.0.0.1:1"),
		put("health/a", upSince(t, "10.0.0.1:1", at.Add(-time.Hour), func(h *Health) {
			report(0.1, 100, false, time.Second)(h)
			h.RebalanceTarget, h.ShedTotal = 7, 40
		})),
	})
	srv := buildAt(t, m, at).Lookup("a")
	if srv.RebalanceTarget != 7 || srv.ShedTotal != 40 {
		t.Errorf("rebalance_target %d shed_total %d; want 7 and 40", srv.RebalanceTarget, srv.ShedTotal)
	}
}
