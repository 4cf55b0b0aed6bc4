// Package node wires one dispatcher replica: an embedded etcd member (or a
// client of an external cluster), the store watcher that keeps the local
// snapshot, the election, the prober that runs while this replica leads, and
// the HTTP API.
//
// Start-up never waits for etcd: the HTTP listener is up first and answers
// from whatever snapshot exists (503 with a reason until there is one).
// Shutdown runs in the order that keeps clients served: leadership is
// resigned at once so a successor takes over in milliseconds, /readyz fails
// for the lame-duck window while get-tcp-ip still answers, the listener
// closes, and only then the watcher, the client and the embedded member stop.
// Both orders are the one list of stages at the end of Node.Run (see
// lifecycle.go).
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sirupsen/logrus"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"

	"github.com/tcpdispatch/tcpdispatch/api"
	"github.com/tcpdispatch/tcpdispatch/election"
	"github.com/tcpdispatch/tcpdispatch/etcdconn"
	"github.com/tcpdispatch/tcpdispatch/internal/logging"
	"github.com/tcpdispatch/tcpdispatch/prober"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// Node is one replica.
type Node struct {
	cfg Config
	log *logrus.Entry
}

// New validates cfg and returns a replica ready to Run.
func New(cfg Config, log *logrus.Entry) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = logging.OrDiscard(log)
	return &Node{cfg: cfg, log: log}, nil
}

// Run runs the replica until ctx is cancelled, then shuts down in order and
// returns nil; it returns an error if a component cannot start (the HTTP
// address is taken, the embedded member cannot start) or fails.
//
// The order is the stages list at the end of Run: started top to bottom,
// stopped bottom to top, the units of one stage together.
func (n *Node) Run(ctx context.Context) error {
	cfg := n.cfg
	ln, err := net.Listen("tcp", cfg.ListenHTTP)
	if err != nil {
		return fmt.Errorf("listen http: %w", err)
	}
	defer ln.Close()
	listeners := api.Listeners{Public: ln}
	if cfg.ListenAdmin != "" {
		if listeners.Admin, err = net.Listen("tcp", cfg.ListenAdmin); err != nil {
			return fmt.Errorf("listen admin: %w", err)
		}
		defer listeners.Admin.Close()
	}

	level, err := zapcore.ParseLevel(cfg.EtcdLogLevel)
	if err != nil {
		return fmt.Errorf("etcd-log-level: %w", err)
	}
	etcdLog := newZapLogger(n.log.WithField("component", "etcd"), level)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	endpoints := cfg.EtcdEndpoints
	embedded := len(endpoints) == 0
	if embedded {
		endpoints = strings.Split(cfg.Embed.AdvertiseClientURLs, ",")
	}
	// etcdconn.New does not wait for etcd, even to authenticate.
	ccfg, err := n.etcdClientConfig(endpoints)
	if err != nil {
		return err
	}
	ccfg.DialKeepAliveTime, ccfg.DialKeepAliveTimeout = 5*time.Second, 2*time.Second
	ccfg.Logger = etcdLog.Named("client")
	cli, err := etcdconn.New(ccfg)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	// Closed by its stage, or earlier to unblock a stuck election.
	closeClient := sync.OnceFunc(func() { cli.Close() })

	storeCfg := cfg.Store
	storeCfg.Prefix = cfg.Prefix // Validate rejected a different one
	storeCfg.Targets = store.NewTargetPolicy(cfg.AllowedTargets)
	watcher, err := store.NewWatcher(storeCfg, cli, n.log.WithField("component", "store"), reg)
	if err != nil {
		closeClient()
		return err
	}
	ecfg := election.DefaultConfig()
	ecfg.Name, ecfg.Prefix, ecfg.TTL = cfg.Name, watcher.Keys().Election(), cfg.LeaderTTL
	// Each election call must finish well inside one TTL, or a slow etcd
	// could hold a deposed leader past its lease.
	if ecfg.OpTimeout = ElectionOpTimeout(cfg.LeaderTTL); ecfg.OpTimeout < election.DefaultConfig().OpTimeout {
		n.log.WithFields(logrus.Fields{"op_timeout": ecfg.OpTimeout, "leader_ttl": cfg.LeaderTTL}).
			Info("election calls bounded by half the leader TTL")
	}
	elect, err := election.New(ecfg, cli, n.log.WithField("component", "election"))
	if err != nil {
		closeClient()
		return err
	}
	deathWatch, err := newDeathWatch(cfg, ecfg.Prefix, ecfg.OpTimeout, cli, n.log.WithField("component", "deathwatch"), reg)
	if err != nil {
		closeClient()
		return err
	}
	probeCfg := cfg.Probe
	probeCfg.Targets = storeCfg.Targets
	prb, err := prober.New(probeCfg, watcher.Keys(), watcher, n.log.WithField("component", "prober"), reg)
	if err != nil {
		closeClient()
		return err
	}
	apiCfg := cfg.API
	apiCfg.Name = cfg.Name // Validate rejected a different one
	srv, err := api.New(apiCfg, watcher, elect, n.log.WithField("component", "api"), reg, reg)
	if err != nil {
		closeClient()
		return err
	}

	// Second opinions: every replica announces where it answers and
	// probes for the leader on request.
	dir, err := prober.NewDirectory(cli, watcher.Keys(), cfg.Name, advertisedHTTP(cfg.AdvertiseHTTP, ln.Addr()),
		announceTTL(cfg.LeaderTTL), ecfg.OpTimeout, n.log.WithField("component", "directory"))
	if err != nil {
		closeClient()
		return err
	}
	prb.UsePeers(dir)
	srv.HandleInternal(prober.OpinionPath, prb.OpinionHandler(cfg.Name, dir, 2))

	snapFile := n.snapshotFile()
	if snapFile != "" {
		n.restore(watcher, snapFile)
	}

	// memberUp is closed once the embedded member has started (at once in
	// external mode); member is set before. The units that talk to etcd
	// wait for it, so that their first calls do not meet a closed port.
	memberUp := make(chan struct{})
	var member *embed.Etcd
	if !embedded {
		close(memberUp)
	}
	afterMember := func(run func(ctx context.Context) error) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			select {
			case <-memberUp:
				return run(ctx)
			case <-ctx.Done():
				return nil
			}
		}
	}
	nilOnCancel := func(run func(ctx context.Context)) func(ctx context.Context) error {
		return func(ctx context.Context) error { run(ctx); return nil }
	}

	memberStage := stage{name: "etcd member"}
	if embedded {
		memberStage.units = []unit{{name: "member", run: func(ctx context.Context) error {
			m, err := n.startMember()
			if err != nil {
				return err
			}
			member = m
			close(memberUp)
			return n.watchMember(ctx, m)
		}}}
		memberStage.release = func() {
			if member != nil {
				member.Close()
				n.log.Info("embedded etcd member stopped")
			}
		}
	}
	dataUnits := []unit{
		{name: "store watcher", run: afterMember(watcher.Run)},
		{name: "replica directory", run: afterMember(dir.Run)},
	}
	if snapFile != "" {
		dataUnits = append(dataUnits, unit{name: "snapshot saving", run: nilOnCancel(func(ctx context.Context) {
			n.saveSnapshots(ctx, watcher, snapFile)
		})})
	}
	lead := func(mover *raftMover) func(ctx context.Context, l *election.Leadership) error {
		return func(lctx context.Context, l *election.Leadership) error {
			// Probe only from a snapshot that holds every earlier term's
			// verdicts: one restored from disk, or lagging behind, would
			// seed the prober with stale health and its first round would
			// write that back.
			moved := make(chan struct{})
			go func() { defer close(moved); mover.Move(lctx) }() // bounded; see raftmove.go
			err := watcher.WaitSynced(lctx, l.Revision())
			<-moved // no fenced write while raft leadership is in transfer
			if err != nil {
				return nil // leadership ended first
			}
			if s := watcher.Snapshot(); s != nil {
				if err := probeCfg.CheckFleet(len(s.Servers)); err != nil {
					n.log.WithError(err).Warn("probe rounds can outlast the probe interval")
				}
			}
			err = prb.Run(lctx, l)
			if errors.Is(err, prober.ErrSelfFault) {
				// A replica that can probe should lead instead.
				l.StepDown(cfg.Probe.SelfFaultBackoff)
			}
			return err
		}
	}
	campaign := unit{
		name: "election",
		run: afterMember(func(ctx context.Context) error {
			mover, err := newRaftMover(cli, member, n.log.WithField("component", "raftmove"), reg)
			if err != nil {
				return err
			}
			return elect.Run(ctx, lead(mover))
		}),
		// It resigns within its OpTimeout, except that an interrupted
		// campaign blocks on a dead etcd until the client closes.
		grace: cfg.API.LameDuck + cfg.API.ShutdownTimeout + 2*cfg.LeaderTTL,
		force: closeClient,
	}

	serveUnits := []unit{
		{name: "http", run: func(ctx context.Context) error { return srv.Serve(ctx, listeners) }},
		campaign,
		// systemd (Type=notify): READY=1 with the first snapshot,
		// STOPPING=1 when shutdown starts.
		{name: "systemd notify", run: nilOnCancel(func(ctx context.Context) { n.notifySystemd(ctx, watcher) })},
	}
	if deathWatch != nil {
		serveUnits = append(serveUnits, unit{name: "leader death watch", run: afterMember(deathWatch.Run)})
	}

	admin := ""
	if listeners.Admin != nil {
		admin = listeners.Admin.Addr().String()
	}
	n.log.WithFields(logrus.Fields{"http": ln.Addr().String(), "admin": admin, "etcd": strings.Join(endpoints, ","),
		"embedded": embedded}).Info("replica started")

	// Started top to bottom, stopped bottom to top. HTTP answers (503
	// with a reason, or the saved snapshot) while the member opens its
	// database and replays its WAL. On shutdown the leader resigns at once
	// so a successor takes over in milliseconds, systemd hears STOPPING=1,
	// and /readyz fails for the lame-duck window while get-tcp-ip still
	// answers from a current snapshot: the watcher outlives the listener.
	return runStages(ctx, n.log, []stage{
		memberStage,
		{name: "etcd client", release: closeClient},
		{name: "data", units: dataUnits},
		{name: "serve", units: serveUnits},
	})
}

// snapshotFile returns the path of the saved snapshot, or "" for none.
func (n *Node) snapshotFile() string {
	switch f := n.cfg.SnapshotFile; {
	case f == "-":
		return ""
	case f != "":
		return f
	case len(n.cfg.EtcdEndpoints) == 0:
		return filepath.Join(n.dataDir(), "tcpdispatch-snapshot.json")
	}
	return ""
}

// restore installs the saved snapshot, if any, before etcd answers.
func (n *Node) restore(w *store.Watcher, path string) {
	s, confirmed, err := store.LoadSnapshot(path, time.Now())
	switch {
	case errors.Is(err, store.ErrNoSavedSnapshot):
		return
	case err != nil:
		n.log.WithError(err).Warn("ignoring the saved snapshot")
		return
	}
	if w.Restore(s, confirmed) {
		n.log.WithFields(logrus.Fields{"revision": s.Revision, "servers": len(s.Servers),
			"age": time.Since(confirmed).Round(time.Millisecond)}).Info("serving the saved snapshot until etcd answers")
	}
}

// snapshotSaveInterval is the least time between two writes of the saved
// snapshot. At 10,000 servers the file is a few megabytes of JSON, so it is
// not rewritten for every change: a replica restarted without quorum serves
// a copy at most this much older than what it last served, and its true
// age is reported either way.
const snapshotSaveInterval = 5 * time.Second

// saveSnapshots writes the current snapshot to path when it changed, at
// most once per snapshotSaveInterval, until ctx is cancelled; then it
// writes the last one if it is not on disk yet, so that a clean stop
// leaves the newest copy.
func (n *Node) saveSnapshots(ctx context.Context, w *store.Watcher, path string) {
	var saved *store.Snapshot
	save := func() {
		if s := w.Snapshot(); s != nil && s != saved {
			if err := store.SaveSnapshot(path, s, w.Sync().At, time.Now()); err != nil {
				n.log.WithError(err).Warn("save snapshot")
			} else {
				saved = s
			}
		}
	}
	t := time.NewTimer(snapshotSaveInterval)
	defer t.Stop()
	for {
		changed := w.Changed()
		save()
		select {
		case <-ctx.Done():
			save()
			return
		case <-changed:
		}
		t.Reset(snapshotSaveInterval)
		select {
		case <-ctx.Done():
			save()
			return
		case <-t.C:
		}
	}
}

// dataDir returns the embedded member's data directory.
func (n *Node) dataDir() string {
	if n.cfg.Embed.DataDir != "" {
		return n.cfg.Embed.DataDir
	}
	return n.cfg.Name + ".etcd"
}

// startMember starts the embedded etcd member. It does not wait for the
// member to join its cluster: a three-member cluster needs its peers, and
// HTTP must answer meanwhile.
func (n *Node) startMember() (*embed.Etcd, error) {
	e := n.cfg.Embed
	cfg := embed.NewConfig()
	cfg.Name = n.cfg.Name
	cfg.Dir = n.dataDir()
	var err error
	if cfg.ListenClientUrls, err = parseURLs(e.ListenClientURLs); err != nil {
		return nil, err
	}
	if cfg.AdvertiseClientUrls, err = parseURLs(e.AdvertiseClientURLs); err != nil {
		return nil, err
	}
	if cfg.ListenPeerUrls, err = parseURLs(e.ListenPeerURLs); err != nil {
		return nil, err
	}
	if cfg.AdvertisePeerUrls, err = parseURLs(e.InitialAdvertisePeerURLs); err != nil {
		return nil, err
	}
	cfg.InitialCluster = e.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	}
	cfg.ClusterState = e.InitialClusterState
	cfg.InitialClusterToken = e.InitialClusterToken
	cfg.TickMs, cfg.ElectionMs = e.HeartbeatMs, e.ElectionMs
	e.applyMemberTLS(cfg)
	if e.AutoCompactionRetention != "" && e.AutoCompactionRetention != "0" {
		cfg.AutoCompactionMode = "periodic"
		cfg.AutoCompactionRetention = e.AutoCompactionRetention
	}
	cfg.QuotaBackendBytes = e.QuotaBackendBytes
	level, err := zapcore.ParseLevel(n.cfg.EtcdLogLevel)
	if err != nil {
		return nil, err
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(n.log.WithField("component", "etcd"), level))
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("embedded etcd config: %w", err)
	}
	m, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	n.log.WithFields(logrus.Fields{"data_dir": cfg.Dir, "client": urlsString(cfg.AdvertiseClientUrls),
		"peer": urlsString(cfg.AdvertisePeerUrls)}).Info("embedded etcd member starting")
	return m, nil
}

// watchMember reports the member joining its cluster, and returns an error
// if the member fails before ctx is cancelled.
func (n *Node) watchMember(ctx context.Context, m *embed.Etcd) error {
	start := time.Now()
	select {
	case <-ctx.Done():
		return nil
	case <-m.Server.ReadyNotify():
		n.log.WithField("after", time.Since(start).Round(time.Millisecond)).Info("embedded etcd member ready")
	case <-m.Server.StopNotify():
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-m.Err():
		return fmt.Errorf("embedded etcd: %w", err)
	case <-m.Server.StopNotify():
		return errors.New("embedded etcd member stopped")
	}
}

func urlsString(us []url.URL) string {
	s := make([]string, len(us))
	for i, u := range us {
		s[i] = u.String()
	}
	return strings.Join(s, ",")
}
