package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) statusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show etcd, the elected leader and epoch, each replica's revision and snapshot age, and problems",
		Long: `status reads etcd (members' status, the election keys under election/, every
key under the prefix) and, for the replicas named by --dispatchers, their
GET /v1/status. Replicas publish only their name in etcd (the value of
their election key), not their HTTP address, so without --dispatchers the
replicas are listed as election candidates only.

Problems: no leader elected, rejected operator values and keys, no
eligible server, panic mode, and per replica: unreachable, not ready, etcd
unreachable from it, a leader other than the elected one, a revision
behind the last change under the prefix.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return a.status(cmd.Context(), a.dispatchers) },
	}
	return cmd
}

// replicaStatus is a replica's GET /v1/status (api's statusResponse) plus
// what dispatchctl adds.
type replicaStatus struct {
	URL           string `json:"url"`
	Name          string `json:"name,omitempty"`
	Leader        string `json:"leader,omitempty"`
	IsLeader      bool   `json:"is_leader"`
	LeaderEpoch   int64  `json:"leader_epoch,omitempty"`
	Revision      int64  `json:"revision,omitempty"`
	SnapshotAgeMs int64  `json:"snapshot_age_ms"`
	Etcd          string `json:"etcd,omitempty"`
	Ready         bool   `json:"ready"`
	Servers       int    `json:"servers"`
	Eligible      int    `json:"eligible"`
	Error         string `json:"error,omitempty"`
}

type endpointStatus struct {
	Endpoint    string `json:"endpoint"`
	Version     string `json:"version,omitempty"`
	Revision    int64  `json:"revision,omitempty"`
	RaftLeader  bool   `json:"raft_leader"`
	DBSizeBytes int64  `json:"db_size_bytes,omitempty"`
	Error       string `json:"error,omitempty"`
}

type candidate struct {
	Name           string `json:"name"`
	Lease          string `json:"lease"`
	CreateRevision int64  `json:"create_revision"`
}

// statusDoc is the JSON of status.
type statusDoc struct {
	Etcd       []endpointStatus `json:"etcd"`
	Revision   int64            `json:"revision"`
	Leader     string           `json:"leader"`
	Epoch      int64            `json:"epoch"`
	Candidates []candidate      `json:"candidates"`
	Strategy   string           `json:"strategy"`
	Servers    int              `json:"servers"`
	Eligible   int              `json:"eligible"`
	Panic      bool             `json:"panic"`
	Replicas   []replicaStatus  `json:"replicas"`
	Problems   []string         `json:"problems"`
}

func (a *app) status(ctx context.Context, dispatchers []string) error {
	cli, err := a.client()
	if err != nil {
		return err
	}
	doc := statusDoc{Candidates: []candidate{}, Replicas: []replicaStatus{}, Problems: []string{}}
	for _, ep := range a.etcd.endpoints {
		es := endpointStatus{Endpoint: ep}
		octx, cancel := a.opCtx(ctx)
		st, err := cli.Status(octx, ep)
		cancel()
		if err != nil {
			es.Error = err.Error()
			doc.Problems = append(doc.Problems, fmt.Sprintf("etcd %s: %v", ep, err))
		} else {
			es.Version, es.Revision, es.DBSizeBytes = st.Version, st.Header.Revision, st.DbSize
			es.RaftLeader = st.Leader == st.Header.MemberId
		}
		doc.Etcd = append(doc.Etcd, es)
	}
	// With etcd unreachable the replicas' own view matters most: report
	// the failure as a problem and go on to them.
	l, listErr := a.list(ctx)
	var lastChange int64
	if listErr != nil {
		doc.Problems = append(doc.Problems, fmt.Sprintf("etcd: cannot read the keys: %v", listErr))
	} else {
		lastChange = a.keysStatus(&doc, l)
	}

	hc := &http.Client{Timeout: a.etcd.commandTimeout}
	for _, u := range dispatchers {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		r := fetchStatus(ctx, hc, u)
		switch {
		case r.Error != "":
			doc.Problems = append(doc.Problems, fmt.Sprintf("replica %s: unreachable: %s", r.URL, r.Error))
		default:
			if !r.Ready {
				doc.Problems = append(doc.Problems, fmt.Sprintf("replica %s (%s): not ready", r.Name, r.URL))
			}
			if r.Etcd != "ok" {
				doc.Problems = append(doc.Problems, fmt.Sprintf("replica %s (%s): etcd %s from it; serving a snapshot %s old", r.Name, r.URL, r.Etcd, duration(time.Duration(r.SnapshotAgeMs)*time.Millisecond)))
			}
			if l != nil && r.Leader != doc.Leader {
				doc.Problems = append(doc.Problems, fmt.Sprintf("replica %s (%s): sees leader %q, etcd's election says %q", r.Name, r.URL, r.Leader, doc.Leader))
			}
			if l != nil && r.Revision < lastChange {
				doc.Problems = append(doc.Problems, fmt.Sprintf("replica %s (%s): at revision %d, behind the last change under the prefix (%d)", r.Name, r.URL, r.Revision, lastChange))
			}
		}
		doc.Replicas = append(doc.Replicas, r)
	}

	if err := a.printStatus(doc, listErr == nil); err != nil {
		return err
	}
	if listErr != nil {
		return listErr
	}
	return nil
}

// keysStatus fills doc from one listing of the keys and returns the
// revision of the last change under the prefix.
func (a *app) keysStatus(doc *statusDoc, l *listing) (lastChange int64) {
	s := l.snap
	doc.Revision, doc.Leader, doc.Epoch = s.Revision, s.Leader, s.LeaderEpoch
	doc.Strategy, doc.Servers, doc.Eligible, doc.Panic = string(s.Strategy), len(s.Servers), s.Eligible(), s.Panic
	for _, kv := range l.resp.Kvs {
		lastChange = max(lastChange, kv.ModRevision)
		if lease, ok := strings.CutPrefix(string(kv.Key), a.keys.Election()+"/"); ok {
			doc.Candidates = append(doc.Candidates, candidate{Name: string(kv.Value), Lease: lease, CreateRevision: kv.CreateRevision})
		}
	}
	sort.Slice(doc.Candidates, func(i, j int) bool { return doc.Candidates[i].CreateRevision < doc.Candidates[j].CreateRevision })
	if s.Leader == "" {
		doc.Problems = append(doc.Problems, "no leader elected: no replica holds a key under "+a.keys.Election()+"/")
	}
	doc.Problems = append(doc.Problems, s.Problems...)
	for _, srv := range s.Servers {
		for _, e := range srv.Errors {
			doc.Problems = append(doc.Problems, fmt.Sprintf("server %s: %s", srv.ID, e))
		}
	}
	if len(s.Servers) > 0 && s.Eligible() == 0 {
		doc.Problems = append(doc.Problems, fmt.Sprintf("no eligible server: %d registered, get-tcp-ip answers 503", len(s.Servers)))
	}
	if s.Panic {
		doc.Problems = append(doc.Problems, "panic mode: too few servers eligible, every healthy one is served on its static weight")
	}
	return lastChange
}

// printStatus writes doc; haveKeys is false when etcd could not be read.
func (a *app) printStatus(doc statusDoc, haveKeys bool) error {
	if a.json() {
		return writeJSON(a.out, doc)
	}
	t := newTable("ETCD ENDPOINT", "VERSION", "REVISION", "RAFT LEADER", "DB SIZE", "ERROR")
	for _, e := range doc.Etcd {
		t.row(e.Endpoint, dash(e.Version), strconv.FormatInt(e.Revision, 10), yesNo(e.RaftLeader), strconv.FormatInt(e.DBSizeBytes, 10), dash(e.Error))
	}
	if err := t.write(a.out); err != nil {
		return err
	}
	var names []string
	for _, c := range doc.Candidates {
		names = append(names, c.Name)
	}
	leader := "none"
	if doc.Leader != "" {
		leader = fmt.Sprintf("%s (epoch %d)", doc.Leader, doc.Epoch)
	}
	if haveKeys {
		fmt.Fprintf(a.out, "\nleader: %s; candidates: %s\nkeys at revision %d: %d servers, %d eligible, strategy %s\n",
			leader, dash(strings.Join(names, ", ")), doc.Revision, doc.Servers, doc.Eligible, doc.Strategy)
	} else {
		fmt.Fprintln(a.out, "\nleader: unknown (etcd cannot be read)")
	}
	if len(doc.Replicas) > 0 {
		fmt.Fprintln(a.out)
		t := newTable("REPLICA", "URL", "LEADER", "EPOCH", "REVISION", "SNAPSHOT AGE", "ETCD", "READY", "ELIGIBLE", "ERROR")
		for _, r := range doc.Replicas {
			lead := dash(r.Leader)
			if r.IsLeader {
				lead += " (self)"
			}
			t.row(dash(r.Name), r.URL, lead, strconv.FormatInt(r.LeaderEpoch, 10), strconv.FormatInt(r.Revision, 10),
				duration(time.Duration(r.SnapshotAgeMs)*time.Millisecond), dash(r.Etcd), yesNo(r.Ready),
				fmt.Sprintf("%d/%d", r.Eligible, r.Servers), dash(r.Error))
		}
		if err := t.write(a.out); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(a.out, "(replicas' own view: add --dispatchers http://HOST:PORT,...)")
	}
	if len(doc.Problems) == 0 {
		fmt.Fprintln(a.out, "\nno problems")
		return nil
	}
	return a.printProblems(doc.Problems)
}

// maxStatusBody bounds the read of a replica's status document.
const maxStatusBody = 1 << 20

// fetchStatus gets u's /v1/status; failures are in the result's Error.
func fetchStatus(ctx context.Context, hc *http.Client, u string) replicaStatus {
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	u = strings.TrimRight(u, "/")
	r := replicaStatus{URL: u}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/v1/status", nil)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	resp, err := hc.Do(req)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBody))
	switch {
	case err != nil:
		r.Error = fmt.Sprintf("read /v1/status: %v", err)
	case resp.StatusCode != http.StatusOK:
		r.Error = fmt.Sprintf("GET /v1/status: %s", resp.Status)
	default:
		if err := json.Unmarshal(body, &r); err != nil {
			r.Error = fmt.Sprintf("decode /v1/status: %v", err)
		}
		r.URL = u
	}
	return r
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
