package store

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// Balancing is the cluster-wide balancing policy, read from operator keys
// under <prefix>config/. Every replica reads the same keys, so every replica
// applies the same policy. A missing key takes its default; a bad value is
// reported in Snapshot.Problems and the last good one (or the default) is
// kept. Changes apply with the next snapshot, live.
type Balancing struct {
	// SlowStart (config/slow-start, Go duration, default 30s, "0"
	// disables) is the window over which a server that came up ramps from
	// MinRampShare to its full weight, counted from its health record's
	// since. It applies only while some other eligible server is past its
	// own window: when every server is new (a fresh cluster) there is no
	// one to protect the newcomers from.
	SlowStart time.Duration
	// PanicThreshold (config/panic-threshold, 0..1, default 0.5): when
	// fewer than this share of the healthy, undrained servers are eligible
	// (the rest overloaded), every healthy, undrained server is served on
	// its static weight × slow start, ignoring load. 0 disables panic mode.
	PanicThreshold float64
	// OverloadThreshold (config/overload-threshold, (0..1], default 0.9)
	// and OverloadRecover (config/overload-recover, default threshold −
	// 0.1, must be below the threshold) are the leader's hysteresis marks
	// on a server's raw load.
	OverloadThreshold, OverloadRecover float64
	// HashLoadFactor (config/hash-load-factor, default 1.25, "0" disables,
	// else > 1) bounds hash: no server is given a client while it holds
	// factor × its weighted share of all connections.
	HashLoadFactor float64
	// Accounting (config/assignment-accounting, true|false, default true)
	// counts each replica's assignments per server since its last report
	// and adds them to the report for p2c, least-load and bounded hash.
	Accounting bool
	// MassRemoval (config/mass-removal, apply|hold, default apply) is what
	// a replica does when one update would take more than half of the
	// eligible servers out: apply it (and log an error), or hold, i.e.
	// keep serving the servers the update marked down until an update no
	// longer takes more than half out.
	MassRemoval MassRemovalPolicy
	// AllDown (config/all-down, serve|fail, default serve) is what
	// get-tcp-ip does when servers are registered but none is eligible:
	// serve, i.e. answer from every registered server with a valid addr
	// (Envoy's panic routing; see Snapshot.AllDown), or fail with 503.
	AllDown AllDownPolicy
	// Rebalance (config/rebalance, rebalance-tolerance, rebalance-rate) is
	// the leader's rebalancing of long-lived connections; off by default.
	Rebalance Rebalance
}

// AllDownPolicy is the value of config/all-down.
type AllDownPolicy string

// All-down policies.
const (
	// AllDownServe answers from every registered server with a valid addr,
	// marked degraded, rather than from none.
	AllDownServe AllDownPolicy = "serve"
	// AllDownFail answers 503.
	AllDownFail AllDownPolicy = "fail"
)

// Config key names under <prefix>config/.
const (
	ConfigSlowStart         = "slow-start"
	ConfigPanicThreshold    = "panic-threshold"
	ConfigOverloadThreshold = "overload-threshold"
	ConfigOverloadRecover   = "overload-recover"
	ConfigHashLoadFactor    = "hash-load-factor"
	ConfigAccounting        = "assignment-accounting"
	ConfigMassRemoval       = "mass-removal"
	ConfigAllDown           = "all-down"
)

// MassRemovalPolicy is the value of config/mass-removal.
type MassRemovalPolicy string

// Mass-removal policies.
const (
	// MassRemovalApply applies the update and logs an error.
	MassRemovalApply MassRemovalPolicy = "apply"
	// MassRemovalHold keeps serving the servers the update marked down.
	MassRemovalHold MassRemovalPolicy = "hold"
)

// MinRampShare is the share of its weight a server gets at the start of its
// slow-start window.
const MinRampShare = 0.1

// DefaultBalancing returns the defaults documented on Balancing.
func DefaultBalancing() Balancing {
	return Balancing{
		SlowStart:         30 * time.Second,
		PanicThreshold:    0.5,
		OverloadThreshold: 0.9,
		OverloadRecover:   0.8,
		HashLoadFactor:    1.25,
		Accounting:        true,
		MassRemoval:       MassRemovalApply,
		AllDown:           AllDownServe,
		Rebalance:         DefaultRebalance(),
	}
}

// configParsers validate one config value each; the result is applied to a
// Balancing by set.
var configParsers = map[string]func(string) (any, error){
	ConfigSlowStart: func(v string) (any, error) {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 || d > time.Hour {
			return nil, fmt.Errorf("slow-start %q: want a duration in 0..1h, e.g. 30s", v)
		}
		return d, nil
	},
	ConfigPanicThreshold:    fraction(ConfigPanicThreshold, 0, 1),
	ConfigOverloadThreshold: fraction(ConfigOverloadThreshold, 0.01, 1),
	ConfigOverloadRecover:   fraction(ConfigOverloadRecover, 0, 1),
	ConfigHashLoadFactor: func(v string) (any, error) {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(f == 0 || f > 1 && f <= 100) {
			return nil, fmt.Errorf("hash-load-factor %q: want 0 (unbounded) or a number in (1, 100]", v)
		}
		return f, nil
	},
	ConfigAccounting: func(v string) (any, error) {
		b, err := keyspace.ParseDrain(v)
		if err != nil {
			return nil, fmt.Errorf("assignment-accounting %q: want true or false", v)
		}
		return b, nil
	},
	ConfigMassRemoval: func(v string) (any, error) {
		switch p := MassRemovalPolicy(strings.ToLower(strings.TrimSpace(v))); p {
		case MassRemovalApply, MassRemovalHold:
			return p, nil
		}
		return nil, fmt.Errorf("mass-removal %q: want apply or hold", v)
	},
	ConfigAllDown: func(v string) (any, error) {
		switch p := AllDownPolicy(strings.ToLower(strings.TrimSpace(v))); p {
		case AllDownServe, AllDownFail:
			return p, nil
		}
		return nil, fmt.Errorf("all-down %q: want serve or fail", v)
	},
	ConfigRebalance:          parseRebalanceMode,
	ConfigRebalanceTolerance: fraction(ConfigRebalanceTolerance, 0, 1),
	ConfigRebalanceRate:      parseRebalanceRate,
}

func fraction(name string, lo, hi float64) func(string) (any, error) {
	return func(v string) (any, error) {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || f < lo || f > hi {
			return nil, fmt.Errorf("%s %q: want a number in %v..%v", name, v, lo, hi)
		}
		return f, nil
	}
}

// ParseConfig validates the value of config key name (one of the Config*
// names).
func ParseConfig(name, value string) (any, error) {
	if p := configParsers[name]; p != nil {
		return p(value)
	}
	return nil, fmt.Errorf("config/%s: unknown setting", name)
}

// set applies a parsed config value.
func (b *Balancing) set(name string, v any) {
	switch name {
	case ConfigSlowStart:
		b.SlowStart = v.(time.Duration)
	case ConfigPanicThreshold:
		b.PanicThreshold = v.(float64)
	case ConfigOverloadThreshold:
		b.OverloadThreshold = v.(float64)
	case ConfigOverloadRecover:
		b.OverloadRecover = v.(float64)
	case ConfigHashLoadFactor:
		b.HashLoadFactor = v.(float64)
	case ConfigAccounting:
		b.Accounting = v.(bool)
	case ConfigMassRemoval:
		b.MassRemoval = v.(MassRemovalPolicy)
	case ConfigAllDown:
		b.AllDown = v.(AllDownPolicy)
	default:
		b.setRebalance(name, v)
	}
}

// balancing returns the policy in force and the problems of its keys.
func (m *model) balancing() (Balancing, []string) {
	b := DefaultBalancing()
	var problems []string
	names := make([]string, 0, len(m.config))
	for name := range m.config {
		names = append(names, name)
	}
	// Sorted so problems come in a stable order.
	sort.Strings(names)
	recoverSet := false
	for _, name := range names {
		f := m.config[name]
		if f.hasGood {
			b.set(name, f.good)
			recoverSet = recoverSet || name == ConfigOverloadRecover
		}
		if f.rejected() {
			problems = append(problems, m.keys.Config(name)+": "+f.problem())
		}
	}
	if !recoverSet {
		b.OverloadRecover = max(0, b.OverloadThreshold-0.1)
	}
	if b.OverloadRecover >= b.OverloadThreshold {
		problems = append(problems, fmt.Sprintf("%s: %v is not below overload-threshold %v; using %v",
			m.keys.Config(ConfigOverloadRecover), b.OverloadRecover, b.OverloadThreshold, max(0, b.OverloadThreshold-0.1)))
		b.OverloadRecover = max(0, b.OverloadThreshold-0.1)
	}
	return b, problems
}
