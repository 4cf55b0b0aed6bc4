package store

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Config key names of rebalancing (issue 13), under <prefix>config/.
const (
	// ConfigRebalance is "off" (default) or "on".
	ConfigRebalance = "rebalance"
	// ConfigRebalanceTolerance is how far above its fair share a server
	// may hold connections before it is asked to shed: a fraction in
	// 0..1, default 0.10.
	ConfigRebalanceTolerance = "rebalance-tolerance"
	// ConfigRebalanceRate is the pacing of rebalancing; see ParseRebalanceRate.
	ConfigRebalanceRate = "rebalance-rate"
)

// RebalanceMode is the value of config/rebalance.
type RebalanceMode string

// Rebalance modes.
const (
	RebalanceOff RebalanceMode = "off"
	RebalanceOn  RebalanceMode = "on"
)

// RebalanceRate paces rebalancing. Both limits hold at once.
type RebalanceRate struct {
	// ServerPerSecond is the most a server is asked to shed per second, as
	// a fraction of its connections (0.01 = 1% per second).
	ServerPerSecond float64
	// FleetPerMinute is the most connections asked to move over any
	// minute, as a fraction of the fleet's connections (0.05 = 5% per
	// minute).
	FleetPerMinute float64
}

// DefaultRebalanceRate is 1% of a server's connections per second and 5% of
// the fleet's per minute.
var DefaultRebalanceRate = RebalanceRate{ServerPerSecond: 0.01, FleetPerMinute: 0.05}

// String formats r as config/rebalance-rate takes it.
func (r RebalanceRate) String() string {
	f := func(x float64) string { return strconv.FormatFloat(x*100, 'f', -1, 64) }
	return f(r.ServerPerSecond) + "%/s," + f(r.FleetPerMinute) + "%/m"
}

// Rebalance is the rebalancing policy, part of Balancing.
type Rebalance struct {
	// Mode (config/rebalance) turns rebalancing on; default off.
	Mode RebalanceMode
	// Tolerance (config/rebalance-tolerance): a server is over its share
	// when its conns exceed share × (1 + Tolerance). Default 0.10.
	Tolerance float64
	// Rate (config/rebalance-rate) paces the shedding.
	Rate RebalanceRate
}

// DefaultRebalance returns the defaults documented on Rebalance.
func DefaultRebalance() Rebalance {
	return Rebalance{Mode: RebalanceOff, Tolerance: 0.10, Rate: DefaultRebalanceRate}
}

// On reports whether rebalancing is on.
func (r Rebalance) On() bool { return r.Mode == RebalanceOn }

// ParseRebalanceMode validates config/rebalance: "on" or "off", any case,
// surrounding space ignored.
func ParseRebalanceMode(v string) (RebalanceMode, error) {
	switch m := RebalanceMode(strings.ToLower(strings.TrimSpace(v))); m {
	case RebalanceOn, RebalanceOff:
		return m, nil
	}
	return "", fmt.Errorf("rebalance %q: want on or off", v)
}

// ParseRebalanceRate validates config/rebalance-rate. The value is two
// terms separated by a comma, in either order, each exactly once:
//
//	<P>%/s   at most P percent of a server's connections shed per second
//	<Q>%/m   at most Q percent of the fleet's connections moved per minute
//
// P and Q are decimal numbers in (0, 100]; spaces around terms are
// ignored. The default is "1%/s,5%/m".
func ParseRebalanceRate(v string) (RebalanceRate, error) {
	bad := func(why string) (RebalanceRate, error) {
		return RebalanceRate{}, fmt.Errorf("rebalance-rate %q: %s; want e.g. 1%%/s,5%%/m (percent of a server's conns per second, of the fleet's per minute, each in (0, 100])", v, why)
	}
	terms := strings.Split(v, ",")
	if len(terms) != 2 {
		return bad("want two terms")
	}
	var r RebalanceRate
	for _, term := range terms {
		term = strings.TrimSpace(term)
		num, unit, ok := strings.Cut(term, "%/")
		if !ok {
			return bad(fmt.Sprintf("term %q has no %%/s or %%/m", term))
		}
		p, err := strconv.ParseFloat(num, 64)
		if err != nil || math.IsNaN(p) || p <= 0 || p > 100 {
			return bad(fmt.Sprintf("percent %q not in (0, 100]", num))
		}
		switch unit {
		case "s":
			if r.ServerPerSecond != 0 {
				return bad("%/s given twice")
			}
			r.ServerPerSecond = p / 100
		case "m":
			if r.FleetPerMinute != 0 {
				return bad("%/m given twice")
			}
			r.FleetPerMinute = p / 100
		default:
			return bad(fmt.Sprintf("unit %q: want s or m", unit))
		}
	}
	return r, nil
}

// parseRebalanceMode and parseRebalanceRate are the configParsers entries
// of config/rebalance and config/rebalance-rate.
func parseRebalanceMode(v string) (any, error) {
	m, err := ParseRebalanceMode(v)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func parseRebalanceRate(v string) (any, error) {
	r, err := ParseRebalanceRate(v)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// setRebalance applies a parsed value of one of the rebalance keys; other
// names are ignored.
func (b *Balancing) setRebalance(name string, v any) {
	switch name {
	case ConfigRebalance:
		b.Rebalance.Mode = v.(RebalanceMode)
	case ConfigRebalanceTolerance:
		b.Rebalance.Tolerance = v.(float64)
	case ConfigRebalanceRate:
		b.Rebalance.Rate = v.(RebalanceRate)
	}
}
