package prober

import (
	"strings"
	"testing"
	"time"
)

func TestCheckFleet(t *testing.T) {
	c := DefaultConfig() // 64 in flight, 500ms timeout, 1s interval: 128 servers fit
	tests := []struct {
		n     int
		bound time.Duration
		want  string // "" for no warning
	}{
		{0, 0, ""},
		{64, 500 * time.Millisecond, ""},
		{128, time.Second, ""},
		{129, 1500 * time.Millisecond, "at least 65"},
		{10000, 78500 * time.Millisecond, "at least 5000"},
	}
	for _, tt := range tests {
		if got := c.RoundBound(tt.n); got != tt.bound {
			t.Errorf("RoundBound(%d) = %v, want %v", tt.n, got, tt.bound)
		}
		err := c.CheckFleet(tt.n)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckFleet(%d) = %v, want nil", tt.n, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("CheckFleet(%d) = %v, want an error containing %q", tt.n, err, tt.want)
		}
	}
}

// TestWithDefaults: a zero field takes DefaultConfig's value, a derived one
// follows the field it derives from, and a set one is kept.
func TestWithDefaults(t *testing.T) {
	d := DefaultConfig()
	c := Config{LoadRefresh: 20 * time.Second, Timeout: 200 * time.Millisecond}.withDefaults()
	if c.Interval != d.Interval || c.Concurrency != d.Concurrency || c.SelfFaultBackoff != d.SelfFaultBackoff {
		t.Errorf("zero fields not defaulted: %+v", c)
	}
	if c.ReportTTL != 60*time.Second || c.OpinionTimeout != 700*time.Millisecond || c.StarvationSlack != 100*time.Millisecond {
		t.Errorf("derived fields: ReportTTL %v, OpinionTimeout %v, StarvationSlack %v", c.ReportTTL, c.OpinionTimeout, c.StarvationSlack)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.withDefaults().ReportTTL != d.ReportTTL {
		t.Error("DefaultConfig's ReportTTL disagrees with the derived default")
	}
}
