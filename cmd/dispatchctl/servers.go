package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/store"
)

func (a *app) serversCommand() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:     "servers",
		Aliases: []string{"server"},
		Short:   "List, add, re-weight, drain and remove tcp-servers",
	})
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the tcp-servers as the replicas see them: weights, health, drain and errors",
		Args:  usageArgs(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return a.serversLs(cmd.Context()) },
	}

	var weight, statusURL string
	add := &cobra.Command{
		Use:   "add ID ADDR",
		Short: "Register a tcp-server (refused if ID is already registered)",
		Args:  usageArgs(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.serversAdd(cmd.Context(), args[0], args[1], cmd.Flags().Changed("weight"), weight, statusURL)
		},
	}
	add.Flags().StringVar(&weight, "weight", "", fmt.Sprintf("static weight 0..%d (default %d when not set)", keyspace.MaxWeight, keyspace.DefaultWeight))
	add.Flags().StringVar(&statusURL, "status-url", "", "http(s) URL of the server's status document (load reports)")

	w := &cobra.Command{
		Use:               "weight ID N",
		Short:             fmt.Sprintf("Set a server's static weight, 0..%d (0 drains it)", keyspace.MaxWeight),
		Args:              usageArgs(cobra.ExactArgs(2)),
		ValidArgsFunction: a.completeServerID,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.serverPut(cmd.Context(), args[0], keyspace.FieldWeight, args[1])
		},
	}

	var reason, by string
	drain := &cobra.Command{
		Use:               "drain ID",
		Short:             "Give a server no new clients (it stays listed and probed); records why, who and when",
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeServerID,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.serversDrain(cmd.Context(), args[0], reason, by)
		},
	}
	drain.Flags().StringVar(&reason, "reason", "", "why the server is drained (shown by servers ls and /v1/servers)")
	drain.Flags().StringVar(&by, "by", "", "who drains it (default user@host)")

	undrain := &cobra.Command{
		Use:               "undrain ID",
		Short:             "Undo drain: delete the drain flag and its reason",
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeServerID,
		RunE:              func(cmd *cobra.Command, args []string) error { return a.serversUndrain(cmd.Context(), args[0]) },
	}
	rm := &cobra.Command{
		Use:               "rm ID",
		Short:             "Remove a server: delete exactly its keys servers/ID/ and its health record",
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeServerID,
		RunE:              func(cmd *cobra.Command, args []string) error { return a.serversRm(cmd.Context(), args[0]) },
	}
	cmd.AddCommand(ls, add, w, drain, undrain, rm)
	return cmd
}

// listing is one consistent read of the whole prefix, turned into the
// snapshot a replica would build from it.
type listing struct {
	snap *store.Snapshot
	resp *clientv3.GetResponse
}

func (a *app) list(ctx context.Context) (*listing, error) {
	cli, err := a.client()
	if err != nil {
		return nil, err
	}
	octx, cancel := a.opCtx(ctx)
	defer cancel()
	resp, err := cli.Get(octx, a.keys.Prefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", a.keys.Prefix(), err)
	}
	snap, err := store.BuildSnapshot(a.keys, resp.Kvs, resp.Header.Revision, a.now())
	if err != nil {
		return nil, err
	}
	return &listing{snap: snap, resp: resp}, nil
}

// serversDoc is the JSON of servers ls.
type serversDoc struct {
	Revision int64              `json:"revision"`
	Strategy string             `json:"strategy"`
	Leader   string             `json:"leader"`
	Servers  []store.ServerInfo `json:"servers"`
	Problems []string           `json:"problems,omitempty"`
}

func (a *app) serversLs(ctx context.Context) error {
	l, err := a.list(ctx)
	if err != nil {
		return err
	}
	s := l.snap
	if a.json() {
		infos := make([]store.ServerInfo, len(s.Servers))
		for i := range s.Servers {
			infos[i] = s.Servers[i].Info()
		}
		return writeJSON(a.out, serversDoc{Revision: s.Revision, Strategy: string(s.Strategy), Leader: s.Leader, Servers: infos, Problems: s.Problems})
	}
	t := newTable("ID", "ADDR", "WEIGHT", "EFFECTIVE", "STATE", "SINCE", "DRAIN", "NOTES")
	now := a.now()
	for _, srv := range s.Servers {
		drain := "-"
		switch {
		case srv.DrainReason != nil || srv.Draining && srv.Weight > 0:
			drain = "yes"
		case srv.Weight == 0:
			drain = "weight 0"
		}
		var notes []string
		if srv.DrainReason != nil {
			notes = append(notes, "drained: "+describeDrain(*srv.DrainReason, now))
		}
		if srv.Reason != "" {
			notes = append(notes, "probe: "+srv.Reason)
		}
		if srv.Held {
			notes = append(notes, "held by the mass-removal guard")
		}
		for _, e := range srv.Errors {
			notes = append(notes, "ERROR "+e)
		}
		t.row(srv.ID, dash(srv.Addr), strconv.Itoa(srv.Weight), strconv.Itoa(srv.EffectiveWeight), string(srv.State),
			age(srv.Since, now), drain, dash(strings.Join(notes, "; ")))
	}
	if err := t.write(a.out); err != nil {
		return err
	}
	return a.printProblems(s.Problems)
}

func (a *app) printProblems(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	fmt.Fprintln(a.out, "\nproblems:")
	for _, p := range problems {
		fmt.Fprintln(a.out, "  "+p)
	}
	return nil
}

func describeDrain(n keyspace.DrainNote, now time.Time) string {
	s := n.Reason
	if s == "" {
		s = "(no reason given)"
	}
	var who []string
	if n.By != "" {
		who = append(who, "by "+n.By)
	}
	if !n.At.IsZero() {
		who = append(who, n.At.UTC().Format(time.RFC3339)+", "+age(n.At, now)+" ago")
	}
	if len(who) > 0 {
		s += " (" + strings.Join(who, ", ") + ")"
	}
	return s
}

// check validates a put with the replicas' parsers; a refusal names the
// key relative to the prefix.
func (a *app) check(key, value string) error {
	if err := store.CheckKey(a.keys, key, []byte(value)); err != nil {
		return refuse("%s: %w", strings.TrimPrefix(key, a.keys.Prefix()), err)
	}
	return nil
}

func (a *app) validID(id string) error {
	if err := tcpdispatch.ValidateID(id); err != nil {
		return refusedError{err}
	}
	return nil
}

// registered is the condition of a change to an existing server: its addr
// key exists.
func (a *app) registered(id string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(a.keys.ServerField(id, keyspace.FieldAddr)), ">", 0)
}

// commit runs one transaction; when cond fails nothing was written and
// the refusal is returned.
func (a *app) commit(ctx context.Context, cond []clientv3.Cmp, ops []clientv3.Op, refusal error) (*clientv3.TxnResponse, error) {
	cli, err := a.client()
	if err != nil {
		return nil, err
	}
	octx, cancel := a.opCtx(ctx)
	defer cancel()
	resp, err := cli.Txn(octx).If(cond...).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("write to etcd: %w", err)
	}
	if !resp.Succeeded {
		return nil, refusal
	}
	return resp, nil
}

func (a *app) notRegistered(id string) error {
	return refuse("server %s is not registered (no %s); see dispatchctl servers ls", id, a.keys.ServerField(id, keyspace.FieldAddr))
}

func (a *app) done(format string, args ...any) {
	if !a.json() {
		fmt.Fprintf(a.out, format+"\n", args...)
	}
}

// changeDoc is the JSON answer of a change.
type changeDoc struct {
	Revision int64    `json:"revision"`
	Put      []string `json:"put,omitempty"`
	Deleted  []string `json:"deleted,omitempty"`
}

func (a *app) reportChange(resp *clientv3.TxnResponse, put []string) error {
	doc := changeDoc{Revision: resp.Header.Revision, Put: put}
	for _, r := range resp.Responses {
		if d := r.GetResponseDeleteRange(); d != nil {
			for _, kv := range d.PrevKvs {
				doc.Deleted = append(doc.Deleted, string(kv.Key))
			}
		}
	}
	if a.json() {
		return writeJSON(a.out, doc)
	}
	return nil
}

func (a *app) serversAdd(ctx context.Context, id, addr string, hasWeight bool, weight, statusURL string) error {
	if err := a.validID(id); err != nil {
		return err
	}
	puts := map[string]string{keyspace.FieldAddr: addr}
	if hasWeight {
		puts[keyspace.FieldWeight] = weight
	}
	if statusURL != "" {
		puts[keyspace.FieldStatusURL] = statusURL
	}
	var ops []clientv3.Op
	var keys []string
	for _, f := range []string{keyspace.FieldAddr, keyspace.FieldWeight, keyspace.FieldStatusURL} {
		v, ok := puts[f]
		if !ok {
			continue
		}
		k := a.keys.ServerField(id, f)
		if err := a.check(k, v); err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(k, strings.TrimSpace(v)))
		keys = append(keys, k)
	}
	addrKey := a.keys.ServerField(id, keyspace.FieldAddr)
	resp, err := a.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(addrKey), "=", 0)}, ops,
		refuse("server %s is already registered (%s exists); remove it first (dispatchctl servers rm %s) or change one field", id, addrKey, id))
	if err != nil {
		return err
	}
	a.done("added %s at %s (revision %d)", id, strings.TrimSpace(addr), resp.Header.Revision)
	return a.reportChange(resp, keys)
}

// serverPut writes one field of a registered server.
func (a *app) serverPut(ctx context.Context, id, field, value string) error {
	if err := a.validID(id); err != nil {
		return err
	}
	k := a.keys.ServerField(id, field)
	if err := a.check(k, value); err != nil {
		return err
	}
	resp, err := a.commit(ctx, []clientv3.Cmp{a.registered(id)}, []clientv3.Op{clientv3.OpPut(k, strings.TrimSpace(value))}, a.notRegistered(id))
	if err != nil {
		return err
	}
	a.done("%s %s = %s (revision %d)", id, field, strings.TrimSpace(value), resp.Header.Revision)
	return a.reportChange(resp, []string{k})
}

func (a *app) serversDrain(ctx context.Context, id, reason, by string) error {
	if err := a.validID(id); err != nil {
		return err
	}
	if by == "" {
		by = whoAmI()
	}
	note, err := keyspace.DrainNote{Reason: strings.TrimSpace(reason), By: by, At: a.now().UTC().Truncate(time.Second)}.Encode()
	if err != nil {
		return refusedError{err}
	}
	dk, rk := a.keys.ServerField(id, keyspace.FieldDrain), a.keys.ServerField(id, keyspace.FieldDrainReason)
	for k, v := range map[string]string{dk: "true", rk: note} {
		if err := a.check(k, v); err != nil {
			return err
		}
	}
	resp, err := a.commit(ctx, []clientv3.Cmp{a.registered(id)},
		[]clientv3.Op{clientv3.OpPut(dk, "true"), clientv3.OpPut(rk, note)}, a.notRegistered(id))
	if err != nil {
		return err
	}
	a.done("drained %s: no new clients (revision %d)", id, resp.Header.Revision)
	return a.reportChange(resp, []string{dk, rk})
}

func (a *app) serversUndrain(ctx context.Context, id string) error {
	if err := a.validID(id); err != nil {
		return err
	}
	resp, err := a.commit(ctx, []clientv3.Cmp{a.registered(id)}, []clientv3.Op{
		clientv3.OpDelete(a.keys.ServerField(id, keyspace.FieldDrain), clientv3.WithPrevKV()),
		clientv3.OpDelete(a.keys.ServerField(id, keyspace.FieldDrainReason), clientv3.WithPrevKV()),
		clientv3.OpGet(a.keys.ServerField(id, keyspace.FieldWeight)),
	}, a.notRegistered(id))
	if err != nil {
		return err
	}
	a.done("undrained %s (revision %d)", id, resp.Header.Revision)
	if g := resp.Responses[2].GetResponseRange(); g != nil && len(g.Kvs) == 1 {
		if w, err := keyspace.ParseWeight(string(g.Kvs[0].Value)); err == nil && w == 0 {
			fmt.Fprintf(a.errOut, "dispatchctl: note: %s still gets no clients: its weight is 0 (dispatchctl servers weight %s N)\n", id, id)
		}
	}
	return a.reportChange(resp, nil)
}

func (a *app) serversRm(ctx context.Context, id string) error {
	// ValidateID refuses "/" in an id, so servers/<id>/ is exactly this
	// server's keys: rm tcp1 never touches tcp10.
	if err := a.validID(id); err != nil {
		return err
	}
	prefix := a.keys.Server(id)
	resp, err := a.commit(ctx,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(prefix), ">", 0).WithPrefix()},
		[]clientv3.Op{
			clientv3.OpDelete(prefix, clientv3.WithPrefix(), clientv3.WithPrevKV()),
			clientv3.OpDelete(a.keys.Health(id), clientv3.WithPrevKV()),
		},
		refuse("server %s: no keys under %s", id, prefix))
	if err != nil {
		return err
	}
	n := resp.Responses[0].GetResponseDeleteRange().Deleted + resp.Responses[1].GetResponseDeleteRange().Deleted
	a.done("removed %s: %d keys deleted (revision %d)", id, n, resp.Header.Revision)
	return a.reportChange(resp, nil)
}

// completeServerID offers the registered server ids for the first argument.
func (a *app) completeServerID(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if err := a.setup(); err != nil {
		cobra.CompDebugln("setup: "+err.Error(), true)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	l, err := a.list(cmd.Context())
	if err != nil {
		cobra.CompDebugln("list: "+err.Error(), true)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ids := make([]string, 0, len(l.snap.Servers))
	for _, s := range l.snap.Servers {
		ids = append(ids, s.ID)
	}
	sort.Strings(ids)
	return ids, cobra.ShellCompDirectiveNoFileComp
}

// whoAmI returns user@host for the drain record.
func whoAmI() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return name + "@" + host
}
