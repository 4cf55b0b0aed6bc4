package node

import (
	"strings"
	"testing"
	"time"
)

// TestValidateRejectsContradictions: each cross-field rule of Config is
// checked where the flags meet, and a contradiction is an error naming it,
// not a value quietly overwritten.
func TestValidateRejectsContradictions(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string // in the error
	}{
		{"probe-timeout not below probe-interval", func(c *Config) { c.Probe.Timeout = c.Probe.Interval }, "must be below interval"},
		{"probe-timeout not below leader-ttl", func(c *Config) {
			c.LeaderTTL, c.Probe.Interval, c.Probe.Timeout = 2*time.Second, 5*time.Second, 3*time.Second
		}, "below leader-ttl"},
		{"leader-ttl below the member's election timeout", func(c *Config) { c.Embed.ElectionMs = 2500 }, "1.5 × election-timeout"},
		{"report-ttl not above load-refresh", func(c *Config) { c.Probe.ReportTTL = c.Probe.LoadRefresh }, "report TTL"},
		{"Store.Prefix other than prefix", func(c *Config) { c.Store.Prefix = "/other/" }, "Store.Prefix"},
		{"API.Name other than name", func(c *Config) { c.API.Name = "other" }, "API.Name"},
		{"negative shutdown-delay", func(c *Config) { c.API.LameDuck = -time.Second }, "LameDuck"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// The same values, stated twice, are no contradiction.
	c := DefaultConfig()
	c.Store.Prefix, c.API.Name = c.Prefix, c.Name
	if err := c.Validate(); err != nil {
		t.Fatalf("matching Store.Prefix and API.Name: %v", err)
	}
}

func TestElectionOpTimeout(t *testing.T) {
	for _, tt := range []struct{ ttl, want time.Duration }{
		{time.Second, 500 * time.Millisecond},
		{3 * time.Second, 1500 * time.Millisecond},
		{10 * time.Second, 2 * time.Second},
	} {
		if got := ElectionOpTimeout(tt.ttl); got != tt.want {
			t.Errorf("ElectionOpTimeout(%v) = %v, want %v", tt.ttl, got, tt.want)
		}
	}
}
