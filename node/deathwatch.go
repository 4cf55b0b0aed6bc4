package node

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/election"
)

// Why the death watch links to the leader's etcd peer URL rather than its
// advertised HTTP address (issue 11):
//
//   - The peer listener belongs to the embedded member, which lives and
//     dies with the dispatcher process: a SIGKILL closes it at once, and a
//     member that fails on its own ends the process (watchMember).
//   - It is quiet about an idle connection: etcd's peer server gives it
//     minutes before closing it, logs nothing and counts it nowhere. The
//     public HTTP listener cuts a silent connection after
//     its read-header timeout (5s) with a 408, which would show in the
//     request metrics and churn every few seconds.
//   - Member name and replica name are the same (startMember), so the
//     member list maps the leader key's value to its peer URL without a
//     second directory.
//
// In external mode there is no member to link to: the dispatcher's death
// leaves etcd up, and failover takes the leader TTL as before.

// newDeathWatch returns the death watch of an embedded replica, or nil if
// the replica has no member or cfg turns it off.
func newDeathWatch(cfg Config, prefix string, opTimeout time.Duration, cli *clientv3.Client, log *logrus.Entry, reg prometheus.Registerer) (*election.DeathWatch, error) {
	if len(cfg.EtcdEndpoints) > 0 || !cfg.LeaderDeathNotice {
		return nil, nil
	}
	dcfg := election.DefaultDeathWatchConfig()
	dcfg.Name, dcfg.Prefix, dcfg.OpTimeout = cfg.Name, prefix, opTimeout
	dcfg.Confirm = memberLocator(cli, "client", func(m *etcdserverpb.Member) []string { return m.ClientURLs })
	return election.NewDeathWatch(dcfg, cli, memberLocator(cli, "peer", func(m *etcdserverpb.Member) []string { return m.PeerURLs }), log, reg)
}

// memberLocator locates a replica at the first of its embedded member's
// URLs of one kind (peer or client).
func memberLocator(cli *clientv3.Client, kind string, urls func(*etcdserverpb.Member) []string) election.Locator {
	return func(ctx context.Context, name string) (string, error) {
		ml, err := cli.MemberList(ctx)
		if err != nil {
			return "", fmt.Errorf("list members: %w", err)
		}
		for _, m := range ml.Members {
			if m.Name != name || len(urls(m)) == 0 {
				continue
			}
			u, err := url.Parse(urls(m)[0])
			if err != nil || u.Host == "" {
				return "", fmt.Errorf("member %s: %s URL %q: want scheme://host:port", name, kind, urls(m)[0])
			}
			return u.Host, nil
		}
		return "", fmt.Errorf("no member named %s", name)
	}
}
