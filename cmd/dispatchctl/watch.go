package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/store"
)

func (a *app) watchCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "watch",
		Short: "Print every change under the prefix as it happens, with the replicas' verdict on bad values (Ctrl-C stops)",
		Args:  usageArgs(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return a.watch(cmd.Context()) },
	}
}

// eventDoc is one line of watch -o json.
type eventDoc struct {
	Time     time.Time `json:"time"`
	Revision int64     `json:"revision"`
	Type     string    `json:"type"` // PUT or DELETE
	Key      string    `json:"key"`  // relative to the prefix
	Value    string    `json:"value,omitempty"`
	Previous string    `json:"previous,omitempty"`
	// Invalid is what the replicas reject in this put; empty if nothing.
	Invalid string `json:"invalid,omitempty"`
}

// watch prints changes until ctx ends, then returns nil.
func (a *app) watch(ctx context.Context) error {
	cli, err := a.client()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, a.keys.Prefix(), clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch %s: %w", a.keys.Prefix(), err)
		}
		if resp.Created {
			fmt.Fprintf(a.errOut, "watching %s from revision %d (Ctrl-C stops)\n", a.keys.Prefix(), resp.Header.Revision+1)
			continue
		}
		for _, ev := range resp.Events {
			d := eventDoc{Time: a.now().UTC(), Revision: ev.Kv.ModRevision, Key: strings.TrimPrefix(string(ev.Kv.Key), a.keys.Prefix())}
			if ev.PrevKv != nil {
				d.Previous = string(ev.PrevKv.Value)
			}
			if ev.Type == clientv3.EventTypeDelete {
				d.Type, d.Revision = "DELETE", resp.Header.Revision
			} else {
				d.Type, d.Value = "PUT", string(ev.Kv.Value)
				if err := store.CheckKey(a.keys, string(ev.Kv.Key), ev.Kv.Value); err != nil {
					d.Invalid = err.Error()
				}
			}
			if err := a.printEvent(d); err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		return nil // interrupted: the normal end of a watch
	}
	return fmt.Errorf("watch %s: closed by etcd", a.keys.Prefix())
}

func (a *app) printEvent(d eventDoc) error {
	if a.json() {
		// One compact object per line, for jq and line-oriented scripts.
		return writeJSONLine(a.out, d)
	}
	line := fmt.Sprintf("%s  rev %-6d %-6s %s", d.Time.Format(time.RFC3339), d.Revision, d.Type, d.Key)
	switch {
	case d.Type == "PUT" && d.Previous != "":
		line += fmt.Sprintf(" = %q (was %q)", d.Value, d.Previous)
	case d.Type == "PUT":
		line += fmt.Sprintf(" = %q", d.Value)
	case d.Previous != "":
		line += fmt.Sprintf(" (was %q)", d.Previous)
	}
	if d.Invalid != "" {
		line += "  REJECTED BY REPLICAS: " + d.Invalid
	}
	_, err := fmt.Fprintln(a.out, line)
	return err
}
