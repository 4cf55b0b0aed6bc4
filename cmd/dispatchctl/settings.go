package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// strategyName is the config key of the strategy for config get/set.
const strategyName = "strategy"

func (a *app) strategyCommand() *cobra.Command {
	cmd := group(&cobra.Command{Use: "strategy", Short: "Show or set the balancing strategy"})
	get := &cobra.Command{
		Use:   "get",
		Short: "Show the strategy in force (config/strategy)",
		Args:  usageArgs(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return a.configGet(cmd.Context(), strategyName) },
	}
	set := &cobra.Command{
		Use:       "set STRATEGY",
		Short:     "Set the strategy: wrr, random, hash, p2c or least-load",
		Args:      usageArgs(cobra.ExactArgs(1)),
		ValidArgs: strategies(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.configSet(cmd.Context(), strategyName, args[0])
		},
	}
	cmd.AddCommand(get, set)
	return cmd
}

func strategies() []string {
	var out []string
	for _, s := range []balancer.Strategy{balancer.WRR, balancer.Random, balancer.Hash, balancer.P2C, balancer.LeastLoad} {
		out = append(out, string(s))
	}
	return out
}

func (a *app) configCommand() *cobra.Command {
	cmd := group(&cobra.Command{Use: "config", Short: "Show or change the balancing settings under config/"})
	names := append([]string{strategyName}, store.ConfigNames()...)
	get := &cobra.Command{
		Use:       "get [KEY]",
		Short:     "Show every setting (or one): the value in etcd, the value in force, the default",
		Args:      usageArgs(cobra.MaximumNArgs(1)),
		ValidArgs: names,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return a.configGet(cmd.Context(), name)
		},
	}
	set := &cobra.Command{
		Use:       "set KEY VALUE",
		Short:     "Set one setting, checked as the replicas check it (keys: " + strings.Join(names, ", ") + ")",
		Args:      usageArgs(cobra.ExactArgs(2)),
		ValidArgs: names,
		RunE:      func(cmd *cobra.Command, args []string) error { return a.configSet(cmd.Context(), args[0], args[1]) },
	}
	unset := &cobra.Command{
		Use:       "unset KEY",
		Short:     "Delete one setting, so that its default applies",
		Args:      usageArgs(cobra.ExactArgs(1)),
		ValidArgs: names,
		RunE:      func(cmd *cobra.Command, args []string) error { return a.configUnset(cmd.Context(), args[0]) },
	}
	cmd.AddCommand(get, set, unset)
	return cmd
}

// settingKey returns the etcd key of a setting name, refusing unknown names.
func (a *app) settingKey(name string) (string, error) {
	if name == strategyName {
		return a.keys.Strategy(), nil
	}
	if !slices.Contains(store.ConfigNames(), name) {
		return "", refuse("config %q: unknown setting (known: %s, %s)", name, strategyName, strings.Join(store.ConfigNames(), ", "))
	}
	return a.keys.Config(name), nil
}

// settingDoc is one setting in config get -o json.
type settingDoc struct {
	Key     string `json:"key"`
	Value   string `json:"value,omitempty"`
	Set     bool   `json:"set"`
	InForce string `json:"in_force"`
	Default string `json:"default"`
	Error   string `json:"error,omitempty"`
}

func (a *app) configGet(ctx context.Context, only string) error {
	names := append([]string{strategyName}, store.ConfigNames()...)
	if only != "" {
		if _, err := a.settingKey(only); err != nil {
			return err
		}
		names = []string{only}
	}
	l, err := a.list(ctx)
	if err != nil {
		return err
	}
	stored := map[string]string{}
	for _, kv := range l.resp.Kvs {
		stored[string(kv.Key)] = string(kv.Value)
	}
	def := store.DefaultBalancing()
	var docs []settingDoc
	for _, n := range names {
		k, _ := a.settingKey(n)
		d := settingDoc{Key: n}
		d.Value, d.Set = stored[k]
		if n == strategyName {
			d.InForce, d.Default = string(l.snap.Strategy), string(balancer.WRR)
		} else {
			d.InForce, d.Default = l.snap.Balancing.Value(n), def.Value(n)
			if n == store.ConfigOverloadRecover {
				d.Default = "overload-threshold - 0.1"
			}
		}
		if d.Set {
			if err := store.CheckKey(a.keys, k, []byte(d.Value)); err != nil {
				d.Error = err.Error()
			}
		}
		docs = append(docs, d)
	}
	if a.json() {
		if only != "" {
			return writeJSON(a.out, docs[0])
		}
		return writeJSON(a.out, docs)
	}
	t := newTable("KEY", "VALUE", "IN-FORCE", "DEFAULT", "ERROR")
	for _, d := range docs {
		v := d.Value
		if !d.Set {
			v = "(not set)"
		}
		t.row(d.Key, v, d.InForce, d.Default, dash(d.Error))
	}
	if err := t.write(a.out); err != nil {
		return err
	}
	var problems []string
	for _, p := range l.snap.Problems {
		if strings.HasPrefix(p, a.keys.Prefix()+"config/") {
			problems = append(problems, p)
		}
	}
	return a.printProblems(problems)
}

// configSet writes one setting after checking it with the replicas'
// parser, and checking that with it the replicas would report no new
// problem (e.g. overload-recover not below overload-threshold). The write
// is conditioned on no setting having changed since that check.
func (a *app) configSet(ctx context.Context, name, value string) error {
	k, err := a.settingKey(name)
	if err != nil {
		return err
	}
	value = strings.TrimSpace(value)
	if err := a.check(k, value); err != nil {
		return err
	}
	l, err := a.list(ctx)
	if err != nil {
		return err
	}
	kvs := make([]*mvccpb.KeyValue, 0, len(l.resp.Kvs)+1)
	for _, kv := range l.resp.Kvs {
		if string(kv.Key) != k {
			kvs = append(kvs, kv)
		}
	}
	kvs = append(kvs, &mvccpb.KeyValue{Key: []byte(k), Value: []byte(value)})
	after, err := store.BuildSnapshot(a.keys, kvs, l.snap.Revision, a.now())
	if err != nil {
		return err
	}
	for _, p := range after.Problems {
		if !slices.Contains(l.snap.Problems, p) {
			return refuse("config %s=%s: the replicas would report: %s", name, value, p)
		}
	}
	unchanged := clientv3.Compare(clientv3.ModRevision(a.keys.Prefix()+"config/"), "<", l.resp.Header.Revision+1).WithPrefix()
	resp, err := a.commit(ctx, []clientv3.Cmp{unchanged}, []clientv3.Op{clientv3.OpPut(k, value)},
		fmt.Errorf("config changed while checking %s; run the command again", name))
	if err != nil {
		return err
	}
	a.done("%s = %s (revision %d)", name, value, resp.Header.Revision)
	return a.reportChange(resp, []string{k})
}

func (a *app) configUnset(ctx context.Context, name string) error {
	k, err := a.settingKey(name)
	if err != nil {
		return err
	}
	resp, err := a.commit(ctx, nil, []clientv3.Op{clientv3.OpDelete(k, clientv3.WithPrevKV())}, nil)
	if err != nil {
		return err
	}
	if resp.Responses[0].GetResponseDeleteRange().Deleted == 0 {
		a.done("%s was not set; its default applies", name)
	} else {
		a.done("%s unset: its default applies (revision %d)", name, resp.Header.Revision)
	}
	return a.reportChange(resp, nil)
}
