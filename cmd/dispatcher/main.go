// Command dispatcher runs one tcpdispatch replica: it answers GET
// /get-tcp-ip with the address of a healthy tcp-server. With no flags it
// embeds a one-member etcd cluster; see --help and README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tcpdispatch/tcpdispatch/cmd/internal/flagconf"
	"github.com/tcpdispatch/tcpdispatch/internal/version"
	"github.com/tcpdispatch/tcpdispatch/node"
)

func main() {
	setGCTarget()
	os.Exit(run(os.Args[1:]))
}

// defaultGCPercent is the replica's garbage-collection target when GOGC is
// not set: the heap may grow by 30 % of its live size between collections,
// not by all of it (Go's default, GOGC=100). A replica's live heap is
// 34-40 MB at 10,000 servers and most of it lives for good (the store, the
// prober's state, etcd's index), so the target sets the resident size:
// at 50 replicas sat at 1.5× live plus what the collector keeps, 82-111 MB
// (make scale, 2026-12-02 07:11); at 30, 75-92 MB. Followers allocate
// little (a collection every ~30 s at 10,000 servers), and the leader
// collects about once a second at 50, 1.5 times a second at 30: a few
// percent of a core (leader 33-49 % at 50, 43 % at 30).
// GOGC and GOMEMLIMIT in the environment are obeyed as for any Go program.
const defaultGCPercent = 30

func setGCTarget() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// options are the parsed command line.
type options struct {
	cfg                            node.Config
	endpoints, logFormat, logLevel string
}

// newFlags defines every flag on a new flag set writing into the options.
func newFlags() (*flag.FlagSet, *options) {
	o := &options{cfg: node.DefaultConfig()}
	cfg := &o.cfg
	fs := flag.NewFlagSet("dispatcher", flag.ContinueOnError)
	fs.StringVar(&cfg.Name, "name", cfg.Name, "replica name; also the embedded etcd member's name")
	fs.StringVar(&cfg.ListenHTTP, "listen-http", cfg.ListenHTTP, "address of the HTTP API (get-tcp-ip, /healthz, /readyz; and /v1/*, /metrics unless --listen-admin is set)")
	fs.StringVar(&cfg.Prefix, "prefix", cfg.Prefix, "etcd key prefix")
	fs.StringVar(&o.endpoints, "etcd-endpoints", "", "comma-separated client URLs of an existing etcd cluster; when set, no member is embedded")
	fs.DurationVar(&cfg.EtcdDialTimeout, "etcd-dial-timeout", cfg.EtcdDialTimeout, "timeout for connecting to etcd (serving never waits for it)")
	fs.StringVar(&cfg.EtcdLogLevel, "etcd-log-level", cfg.EtcdLogLevel, "level of etcd's own log lines passed on: debug, info, warn, error")

	e := &cfg.Embed
	fs.StringVar(&e.DataDir, "data-dir", "", "embedded member: path to the data directory (default \"<name>.etcd\")")
	fs.StringVar(&e.ListenClientURLs, "listen-client-urls", e.ListenClientURLs, "embedded member: URLs to listen on for client traffic")
	fs.StringVar(&e.AdvertiseClientURLs, "advertise-client-urls", e.AdvertiseClientURLs, "embedded member: client URLs to advertise; the replica's own client uses them")
	fs.StringVar(&e.ListenPeerURLs, "listen-peer-urls", e.ListenPeerURLs, "embedded member: URLs to listen on for peer traffic")
	fs.StringVar(&e.InitialAdvertisePeerURLs, "initial-advertise-peer-urls", e.InitialAdvertisePeerURLs, "embedded member: peer URLs to advertise")
	fs.StringVar(&e.InitialCluster, "initial-cluster", "", "embedded member: initial cluster, name=peerURL,... (default \"<name>=<initial-advertise-peer-urls>\")")
	fs.StringVar(&e.InitialClusterState, "initial-cluster-state", e.InitialClusterState, "embedded member: new or existing")
	fs.StringVar(&e.InitialClusterToken, "initial-cluster-token", e.InitialClusterToken, "embedded member: initial cluster token")
	fs.UintVar(&e.HeartbeatMs, "heartbeat-interval", e.HeartbeatMs, "embedded member: raft heartbeat interval in milliseconds")
	fs.UintVar(&e.ElectionMs, "election-timeout", e.ElectionMs, "embedded member: raft election timeout in milliseconds")
	fs.StringVar(&e.AutoCompactionRetention, "auto-compaction-retention", e.AutoCompactionRetention, "embedded member: periodic compaction retention (e.g. 1h); 0 disables")
	fs.Int64Var(&e.QuotaBackendBytes, "quota-backend-bytes", e.QuotaBackendBytes, "embedded member: database size at which etcd raises the NOSPACE alarm and refuses writes (reported in /v1/status problems and tcpdispatch_etcd_alarms); 0 is etcd's default, 2 GiB")

	// The embedded member's TLS, with etcd's flag names and meaning; the
	// etcd client's TLS files and user (--etcd-*), shared by every
	// tcpdispatch program, come from etcdconn.
	fs.StringVar(&e.ClientTLS.CertFile, "cert-file", "", "embedded member: TLS certificate for https:// client URLs")
	fs.StringVar(&e.ClientTLS.KeyFile, "key-file", "", "embedded member: TLS key of --cert-file")
	fs.StringVar(&e.ClientTLS.TrustedCAFile, "trusted-ca-file", "", "embedded member: CA file of the client certificates --client-cert-auth accepts")
	fs.BoolVar(&e.ClientTLS.ClientCertAuth, "client-cert-auth", false, "embedded member: refuse clients without a certificate signed by --trusted-ca-file")
	fs.BoolVar(&e.ClientAutoTLS, "auto-tls", false, "embedded member: serve https:// client URLs with a generated self-signed certificate")
	fs.StringVar(&e.PeerTLS.CertFile, "peer-cert-file", "", "embedded member: TLS certificate for https:// peer URLs")
	fs.StringVar(&e.PeerTLS.KeyFile, "peer-key-file", "", "embedded member: TLS key of --peer-cert-file")
	fs.StringVar(&e.PeerTLS.TrustedCAFile, "peer-trusted-ca-file", "", "embedded member: CA file of the peer certificates --peer-client-cert-auth accepts")
	fs.BoolVar(&e.PeerTLS.ClientCertAuth, "peer-client-cert-auth", false, "embedded member: refuse peers without a certificate signed by --peer-trusted-ca-file")
	fs.BoolVar(&e.PeerAutoTLS, "peer-auto-tls", false, "embedded member: serve https:// peer URLs with a generated self-signed certificate")
	cfg.EtcdClient.RegisterFlags(fs)

	fs.StringVar(&cfg.SnapshotFile, "snapshot-file", "", "where to keep a copy of the last snapshot, served after a restart while etcd has no quorum (default \"<data-dir>/tcpdispatch-snapshot.json\" with an embedded member, none otherwise; \"-\" disables)")
	fs.DurationVar(&cfg.LeaderTTL, "leader-ttl", cfg.LeaderTTL, "leader session TTL: how long a dead leader keeps leadership (whole seconds)")
	fs.BoolVar(&cfg.LeaderDeathNotice, "leader-death-notice", cfg.LeaderDeathNotice, "embedded member: keep an idle connection to the leader's member and revoke the leader's lease at once when it ends and a connect is refused (the leader's process died on a live host); false leaves every failover to --leader-ttl")
	fs.DurationVar(&cfg.Probe.Interval, "probe-interval", cfg.Probe.Interval, "time between two probes of one tcp-server")
	fs.DurationVar(&cfg.Probe.Timeout, "probe-timeout", cfg.Probe.Timeout, "timeout of one probe (TCP connect)")
	fs.IntVar(&cfg.Probe.Rise, "rise", cfg.Probe.Rise, "consecutive successful probes that bring a down server up")
	fs.IntVar(&cfg.Probe.Fall, "fall", cfg.Probe.Fall, "consecutive failed probes that take an up server down")
	fs.IntVar(&cfg.Probe.Concurrency, "probe-concurrency", cfg.Probe.Concurrency, "fewest probes allowed in flight at once; the capacity grows with the fleet (1.5 × servers × probe-timeout ÷ probe-interval more) up to --probe-max-inflight")
	fs.IntVar(&cfg.Probe.MaxInFlight, "probe-max-inflight", cfg.Probe.MaxInFlight, "most probes (sockets) in flight at once; also capped at half the open-file limit")
	fs.IntVar(&cfg.Probe.MaxLinks, "probe-max-links", cfg.Probe.MaxLinks, "most persistent connections the leader holds to servers for death notices (one per server; capped by the open-file limit)")
	fs.DurationVar(&cfg.Probe.Recheck, "probe-recheck", cfg.Probe.Recheck, "how often a server whose open persistent connection, or last status pull on a kept-alive connection, vouches for it is still connect-probed (at most --probe-interval: every interval)")
	fs.BoolVar(&cfg.Probe.DisableLinks, "probe-no-links", cfg.Probe.DisableLinks, "hold no persistent connections: deaths are noticed by the regular probes only")
	fs.DurationVar(&cfg.Probe.RefreshInterval, "health-refresh", cfg.Probe.RefreshInterval, "rewrite every health record this often even without a transition; 0 never does (the leader's heartbeat proves the records current)")
	fs.DurationVar(&cfg.Probe.LoadRefresh, "load-refresh", cfg.Probe.LoadRefresh, "rewrite a server's load report this often even without a meaningful change (servers with a status-url); 0 never does (the heartbeat keeps reports in use)")
	fs.DurationVar(&cfg.Probe.ReportTTL, "report-ttl", cfg.Probe.ReportTTL, "how long replicas use a load report after the leader pulled it or last sent its heartbeat; must exceed --load-refresh")
	fs.DurationVar(&cfg.API.LameDuck, "shutdown-delay", cfg.API.LameDuck, "lame-duck window on shutdown: /readyz fails while get-tcp-ip still answers")
	fs.BoolVar(&cfg.API.MetricsPerServer, "metrics-per-server", cfg.API.MetricsPerServer, "export the tcpdispatch_server_* series, five per registered server (about 50,000 series at 10,000 servers)")
	fs.BoolVar(&cfg.API.EventLoop, "http-event-loop", cfg.API.EventLoop, "serve get-tcp-ip, /healthz and /readyz on a plain-HTTP --listen-http from epoll event loops (Linux; ignored with TLS or the PROXY protocol); every other request is served as without it")
	securityFlags(fs, cfg)
	fs.StringVar(&cfg.AdvertiseHTTP, "advertise-http", "", "base URL other replicas reach this replica's HTTP API at, for the leader's second opinions (default: the listener's address)")
	fs.Float64Var(&cfg.Probe.SuspectShare, "suspect-share", cfg.Probe.SuspectShare, "a probe round that would take more than this share of the up servers down at once (and at least --suspect-min) waits for other replicas to confirm; 1 disables")
	fs.IntVar(&cfg.Probe.SuspectMin, "suspect-min", cfg.Probe.SuspectMin, "fewest down-verdicts of one round that make the leader suspect")
	fs.IntVar(&cfg.Probe.SelfFaultRounds, "self-fault-rounds", cfg.Probe.SelfFaultRounds, "consecutive rounds the leader may fail its own checks before it steps down")
	fs.DurationVar(&cfg.Probe.SelfFaultBackoff, "self-fault-backoff", cfg.Probe.SelfFaultBackoff, "how long a leader that stepped down for failing its own checks stays out of the election")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: dispatcher [flags]\n\nEvery flag can also be set by the environment variable TCPDISPATCH_<FLAG>, upper-cased with - as _ (e.g. TCPDISPATCH_LISTEN_HTTP=:9090), or in the YAML file of --config (listen-http: \":9090\"); a flag on the command line wins over the environment, which wins over the file.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs, o
}

func run(args []string) int {
	fs, o := newFlags()
	layers := flagconf.Bind(fs)
	cfg, endpoints, logFormat, logLevel := &o.cfg, &o.endpoints, &o.logFormat, &o.logLevel
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			// Asked-for help goes to stdout, so that it can be paged.
			fs.SetOutput(os.Stdout)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if layers.VersionRequested() {
		fmt.Println(version.Line("dispatcher"))
		return 0
	}
	if err := layers.Apply(os.Environ()); err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		return 2
	}
	if err := cfg.EtcdClient.LoadPassword(os.LookupEnv); err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "dispatcher: unexpected arguments %q\n", fs.Args())
		return 2
	}
	for _, ep := range strings.Split(*endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			cfg.EtcdEndpoints = append(cfg.EtcdEndpoints, ep)
		}
	}

	logger := logrus.New()
	logger.Out = os.Stderr
	switch *logFormat {
	case "text":
		logger.Formatter = &logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano}
	case "json":
		logger.Formatter = &logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano}
	default:
		fmt.Fprintf(os.Stderr, "dispatcher: log-format %q: want text or json\n", *logFormat)
		return 2
	}
	lvl, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher: log-level:", err)
		return 2
	}
	logger.SetLevel(lvl)
	log := logrus.NewEntry(logger).WithField("replica", cfg.Name)

	n, err := node.New(*cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := n.Run(ctx); err != nil {
		log.WithError(err).Error("replica failed")
		return 1
	}
	log.Info("replica stopped")
	return 0
}
