package node

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/tcpdispatch/tcpdispatch/api"
	"github.com/tcpdispatch/tcpdispatch/election"
	"github.com/tcpdispatch/tcpdispatch/etcdconn"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/prober"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// Config is everything one replica needs. Flags of cmd/dispatcher map onto
// it one to one.
type Config struct {
	// Name names the replica (reported as leader) and its embedded etcd
	// member.
	Name string
	// ListenHTTP is the address of the HTTP API, e.g. ":8080".
	ListenHTTP string
	// ListenAdmin, when set, is the address of the operator routes (/v1/*,
	// /metrics, /debug/pprof/), which then leave ListenHTTP.
	ListenAdmin string
	// AllowedTargets restricts the IP addresses a server's addr and
	// status-url may name; nil allows all but link-local (see
	// store.TargetPolicy).
	AllowedTargets []netip.Prefix
	// AdvertiseHTTP is the base URL other replicas reach this one's HTTP
	// API at (the leader's second-opinion requests), e.g.
	// "http://10.0.1.1:8080". Empty: the listener's address, with the
	// host name when it listens on every interface.
	AdvertiseHTTP string
	// Prefix is the etcd key prefix of the layout.
	Prefix string
	// EtcdEndpoints selects external mode: use this etcd cluster and embed
	// no member.
	EtcdEndpoints []string
	// Embed configures the embedded member when EtcdEndpoints is empty.
	Embed EmbedConfig
	// EtcdClient is how the replica's etcd client proves who it is and whom
	// it trusts: TLS files and etcd user (its Endpoints and DialTimeout are
	// ignored: EtcdEndpoints or the member's advertised client URLs, and
	// EtcdDialTimeout, are used).
	EtcdClient etcdconn.Config
	// EtcdDialTimeout bounds establishing the client's connection. It does
	// not delay serving: HTTP answers from whatever snapshot it has.
	EtcdDialTimeout time.Duration
	// EtcdLogLevel is the level at which etcd's own logs (embedded member,
	// client) are passed on: debug, info, warn, error.
	EtcdLogLevel string
	// SnapshotFile is where the replica keeps a copy of its last snapshot,
	// so that a restart while etcd has no quorum still answers (stale, with
	// its true age). Empty: "<data-dir>/tcpdispatch-snapshot.json" when
	// embedding a member, none in external mode. "-" disables it.
	SnapshotFile string
	// LeaderTTL is the election session TTL: how long a dead leader holds
	// leadership. Whole seconds; etcd enforces a minimum of 1.5 election
	// timeouts (Validate rejects a lower one with an embedded member). Each
	// election call is bounded by ElectionOpTimeout(LeaderTTL).
	LeaderTTL time.Duration
	// LeaderDeathNotice, with an embedded member, makes each replica that
	// does not lead keep an idle TCP connection to the leader's member's
	// peer URL, and revoke the leader's election lease when that
	// connection ends and a new connect is refused: a leader process
	// killed on a live host is replaced in well under LeaderTTL. Timeouts,
	// partitions and paused leaders still take LeaderTTL. Ignored in
	// external mode. Default on. See election.DeathWatch and deathwatch.go.
	LeaderDeathNotice bool
	// Probe configures the prober; its Targets are taken from
	// AllowedTargets.
	Probe prober.Config
	// API configures the HTTP server. Its Name is taken from Name: leave
	// it empty (Validate rejects a different one).
	API api.Config
	// Store configures the watcher. Its Prefix is taken from Prefix:
	// leave it empty (Validate rejects a different one); its Targets from
	// AllowedTargets.
	Store store.Config
}

// ElectionOpTimeout is the bound of each election call at a leader TTL of
// ttl: the election's default (2s), lowered to ttl/2 so that a call that
// cannot complete is noticed while the lease may still be alive.
func ElectionOpTimeout(ttl time.Duration) time.Duration {
	return min(election.DefaultConfig().OpTimeout, ttl/2)
}

// EmbedConfig carries the embedded member's settings, named and defaulted
// as etcd's own flags.
type EmbedConfig struct {
	DataDir                  string
	ListenClientURLs         string
	AdvertiseClientURLs      string
	ListenPeerURLs           string
	InitialAdvertisePeerURLs string
	InitialCluster           string
	InitialClusterState      string
	InitialClusterToken      string
	// HeartbeatMs and ElectionMs are etcd's --heartbeat-interval and
	// --election-timeout, in milliseconds.
	HeartbeatMs, ElectionMs uint
	// AutoCompactionRetention is etcd's --auto-compaction-retention in
	// periodic mode (e.g. "1h"); "0" disables it.
	AutoCompactionRetention string
	// QuotaBackendBytes is etcd's --quota-backend-bytes: the size the
	// member's database may reach before etcd raises the NOSPACE alarm and
	// refuses writes (reported in /v1/status problems and
	// tcpdispatch_etcd_alarms). Default 2 GiB, etcd's own; 0 means that
	// default too. See docs/OPERATIONS.md for the growth to expect.
	QuotaBackendBytes int64
	// ClientTLS and PeerTLS secure the member's client and peer URLs
	// (etcd's --cert-file ... and --peer-cert-file ...); ClientAutoTLS and
	// PeerAutoTLS are etcd's --auto-tls and --peer-auto-tls. See tls.go.
	ClientTLS, PeerTLS         TLSFiles
	ClientAutoTLS, PeerAutoTLS bool
}

// DefaultQuotaBackendBytes is the embedded member's default backend quota:
// etcd's own default, 2 GiB.
const DefaultQuotaBackendBytes = 2 << 30

// DefaultConfig returns a working one-node configuration.
func DefaultConfig() Config {
	return Config{
		Name:            "default",
		ListenHTTP:      ":8080",
		Prefix:          keyspace.DefaultPrefix,
		EtcdDialTimeout: 5 * time.Second,
		EtcdLogLevel:    "warn",
		LeaderTTL:       election.DefaultConfig().TTL,
		// A positive refusal is the only trigger; see deathwatch.go.
		LeaderDeathNotice: true,
		Embed: EmbedConfig{
			ListenClientURLs:         "http://localhost:2379",
			AdvertiseClientURLs:      "http://localhost:2379",
			ListenPeerURLs:           "http://localhost:2380",
			InitialAdvertisePeerURLs: "http://localhost:2380",
			InitialClusterState:      "new",
			InitialClusterToken:      "etcd-cluster",
			// Half of etcd's 100ms/1000ms: when the dispatcher leader's
			// member is also the raft leader, a failover waits for a raft
			// election, then etcd extends every lease by one election
			// timeout, then the dead leader's TTL runs out. With etcd's
			// timers that sum is over 4s at a 2s TTL. Raise both for
			// members spread over a WAN.
			HeartbeatMs:             50,
			ElectionMs:              500,
			AutoCompactionRetention: "1h",
			QuotaBackendBytes:       DefaultQuotaBackendBytes,
		},
		Probe: prober.DefaultConfig(),
		API:   api.DefaultConfig(),
		Store: storeDefaults(),
	}
}

// storeDefaults is store.DefaultConfig without the Prefix, which comes from
// Config.Prefix.
func storeDefaults() store.Config {
	c := store.DefaultConfig()
	c.Prefix = ""
	return c
}

// Validate checks the rules that span components.
func (c Config) Validate() error {
	if c.Name == "" {
		return errors.New("name must not be empty")
	}
	if c.ListenHTTP == "" {
		return errors.New("listen-http must not be empty")
	}
	if c.ListenAdmin != "" && c.ListenAdmin == c.ListenHTTP {
		return errors.New("listen-admin must differ from listen-http")
	}
	if c.API.Name != "" && c.API.Name != c.Name {
		return fmt.Errorf("API.Name %q contradicts name %q: leave it empty, it is taken from name", c.API.Name, c.Name)
	}
	if err := c.API.Validate(); err != nil {
		return err
	}
	if _, err := keyspace.New(c.Prefix); err != nil {
		return err
	}
	if c.Store.Prefix != "" && c.Store.Prefix != c.Prefix {
		return fmt.Errorf("Store.Prefix %q contradicts prefix %q: leave it empty, it is taken from prefix", c.Store.Prefix, c.Prefix)
	}
	if c.LeaderTTL < time.Second {
		return fmt.Errorf("leader-ttl %v: must be at least 1s", c.LeaderTTL)
	}
	if c.Probe.Timeout >= c.LeaderTTL {
		return fmt.Errorf("probe-timeout %v must be below leader-ttl %v", c.Probe.Timeout, c.LeaderTTL)
	}
	if err := c.Probe.Validate(); err != nil {
		return err
	}
	if err := c.validateEtcdSecurity(); err != nil {
		return err
	}
	if len(c.EtcdEndpoints) > 0 {
		return nil
	}
	e := c.Embed
	for name, v := range map[string]string{"listen-client-urls": e.ListenClientURLs, "advertise-client-urls": e.AdvertiseClientURLs,
		"listen-peer-urls": e.ListenPeerURLs, "initial-advertise-peer-urls": e.InitialAdvertisePeerURLs} {
		if _, err := parseURLs(v); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if e.InitialClusterState != "new" && e.InitialClusterState != "existing" {
		return fmt.Errorf("initial-cluster-state %q: must be new or existing", e.InitialClusterState)
	}
	if e.QuotaBackendBytes < 0 {
		return fmt.Errorf("quota-backend-bytes %d: must not be negative", e.QuotaBackendBytes)
	}
	if e.HeartbeatMs == 0 || e.ElectionMs < 5*e.HeartbeatMs {
		return fmt.Errorf("election-timeout (%dms) must be at least 5 × heartbeat-interval (%dms)", e.ElectionMs, e.HeartbeatMs)
	}
	if minTTL := time.Duration(e.ElectionMs) * time.Millisecond * 3 / 2; c.LeaderTTL < minTTL {
		return fmt.Errorf("leader-ttl %v: etcd raises any lease below 1.5 × election-timeout (%v)", c.LeaderTTL, minTTL)
	}
	return nil
}

// parseURLs parses a comma-separated URL list as etcd does.
func parseURLs(s string) ([]url.URL, error) {
	var out []url.URL
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, err
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("URL %q: want http://host:port", part)
		}
		out = append(out, *u)
	}
	if len(out) == 0 {
		return nil, errors.New("no URL given")
	}
	return out, nil
}
