package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// agreementView is the part of /v1/servers the agreement test compares.
type agreementView struct {
	Revision int64  `json:"revision"`
	Strategy string `json:"strategy"`
	Servers  []struct {
		ID              string   `json:"id"`
		Addr            string   `json:"addr"`
		Weight          int      `json:"weight"`
		EffectiveWeight int      `json:"effective_weight"`
		Eligible        bool     `json:"eligible"`
		Errors          []string `json:"errors"`
	} `json:"servers"`
}

// decisions renders what a replica decides: strategy, and per server its
// addr, static and effective weight and eligibility.
func (v agreementView) decisions() string {
	var b strings.Builder
	b.WriteString("strategy=" + v.Strategy + "\n")
	for _, s := range v.Servers {
		fmt.Fprintf(&b, "%s addr=%s w=%d eff=%d eligible=%v\n", s.ID, s.Addr, s.Weight, s.EffectiveWeight, s.Eligible)
	}
	return b.String()
}

// TestInvalidValuesAgree is issue 9's agreement test: valid operator
// values, then invalid ones over them (weight, addr, strategy), then one
// replica restarted. Every replica, the restarted one included, must decide
// exactly the same: the same effective weights in /v1/servers and the same
// server for each of 200 hash keys; and the typos take no server out and
// change no strategy.
func TestInvalidValuesAgree(t *testing.T) {
	c := startCluster(t, clusterOpts{replicas: 3, extra: coreFlags})
	weights := map[string]string{"tcp1": "300", "tcp2": "200", "tcp3": "100", "tcp4": "50"}
	for _, id := range slices.Sorted(maps.Keys(weights)) {
		s := c.startTCPServer(id)
		c.etcdctl("put", c.prefix+"servers/"+id+"/addr", s.addr)
		c.etcdctl("put", c.prefix+"servers/"+id+"/weight", weights[id])
	}
	// No slow start: effective weights then depend on etcd's state alone,
	// not on when each replica looks.
	c.etcdctl("put", c.prefix+"config/slow-start", "0")
	c.etcdctl("put", c.prefix+"config/strategy", "hash")
	c.waitEligible(c.replicas, 4)

	c.etcdctl("put", c.prefix+"servers/tcp1/weight", "3OO")
	c.etcdctl("put", c.prefix+"servers/tcp2/addr", "127.0.0.1")
	c.etcdctl("put", c.prefix+"config/strategy", "hsah")
	eventually(t, 10*time.Second, "every replica sees the typos", func() error {
		for _, r := range c.replicas {
			var v agreementView
			if err := getJSON(r.http+"/v1/servers", &v); err != nil {
				return err
			}
			n := 0
			for _, s := range v.Servers {
				n += len(s.Errors)
			}
			if n != 2 {
				return fmt.Errorf("%s: %d server errors", r.name, n)
			}
		}
		return nil
	})

	restarted := c.replicas[1]
	restarted.stop()
	restarted.start()
	// Not the snapshot it saved before the restart: its own listing.
	eventually(t, 30*time.Second, restarted.name+" synced with etcd after its restart", func() error {
		s, err := restarted.status()
		if err != nil {
			return err
		}
		if s.Etcd != "ok" {
			return fmt.Errorf("etcd %s", s.Etcd)
		}
		return nil
	})

	var want string
	eventually(t, 30*time.Second, "identical decisions on every replica", func() error {
		var views []string
		for _, r := range c.replicas {
			var v agreementView
			if err := getJSON(r.http+"/v1/servers", &v); err != nil {
				return err
			}
			views = append(views, v.decisions())
		}
		for i, v := range views[1:] {
			if v != views[0] {
				return fmt.Errorf("%s decides\n%s\n%s decides\n%s", c.replicas[0].name, views[0], c.replicas[i+1].name, v)
			}
		}
		want = views[0]
		return nil
	})
	t.Logf("every replica decides:\n%s", want)
	for _, sub := range []string{"strategy=hash", "tcp1 addr=", "w=300 eff=300 eligible=true", "tcp2 addr=127.0.0.1:"} {
		if !strings.Contains(want, sub) {
			t.Errorf("decisions lack %q: the typos changed something\n%s", sub, want)
		}
	}
	if strings.Count(want, "eligible=true") != 4 {
		t.Errorf("not all four servers served:\n%s", want)
	}

	differ := 0
	for i := range 200 {
		q := fmt.Sprintf("?key=client-%d", i)
		var ids []string
		for _, r := range c.replicas {
			p, _, err := getTCPIP(r.http, q)
			if err != nil {
				t.Fatalf("%s %s: %v", r.name, q, err)
			}
			ids = append(ids, p.ID)
		}
		if ids[0] != ids[1] || ids[0] != ids[2] {
			differ++
			if differ <= 5 {
				t.Errorf("key %s: replicas answer %v", q, ids)
			}
		}
	}
	t.Logf("%d of 200 hash keys answered differently", differ)
	if differ > 0 {
		t.Errorf("%d of 200 hash keys answered differently; want 0", differ)
	}
}

// verdictStatus is the part of /v1/status the static-stability test reads.
type verdictStatus struct {
	IsLeader   bool     `json:"is_leader"`
	Leader     string   `json:"leader"`
	VerdictAge float64  `json:"oldest_verdict_age_seconds"`
	AllDown    bool     `json:"all_down"`
	Problems   []string `json:"problems"`
}

// TestElectionBlockedStaticStability puts a lease-less key at the front of
// the election queue, as an operator's stray put would, and deletes the
// replicas' own keys: no replica can lead from then on. Every replica must
// report the blocking key in /v1/status problems, keep serving the last
// verdicts, and report their age growing.
func TestElectionBlockedStaticStability(t *testing.T) {
	c := startCluster(t, clusterOpts{replicas: 3, extra: coreFlags})
	for _, id := range []string{"tcp1", "tcp2"} {
		s := c.startTCPServer(id)
		c.etcdctl("put", c.prefix+"servers/"+id+"/addr", s.addr)
	}
	c.waitEligible(c.replicas, 2)
	c.waitLeader(t, c.replicas)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stray := c.prefix + "election/stray"
	if _, err := c.cli.Put(ctx, stray, "someone"); err != nil {
		t.Fatal(err)
	}
	resp, err := c.cli.Get(ctx, c.prefix+"election/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if string(kv.Key) != stray {
			if _, err := c.cli.Delete(ctx, string(kv.Key)); err != nil {
				t.Fatal(err)
			}
		}
	}

	first := map[string]float64{}
	eventually(t, 15*time.Second, "every replica reports the blocking key and nobody leads", func() error {
		for _, r := range c.replicas {
			var s verdictStatus
			if err := getJSON(r.http+"/v1/status", &s); err != nil {
				return err
			}
			if s.IsLeader || !strings.Contains(strings.Join(s.Problems, "|"), "election/stray: election key without a lease") {
				return fmt.Errorf("%s: is_leader %v, problems %q", r.name, s.IsLeader, s.Problems)
			}
			first[r.name] = s.VerdictAge
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	for _, r := range c.replicas {
		var s verdictStatus
		if err := getJSON(r.http+"/v1/status", &s); err != nil {
			t.Fatal(err)
		}
		if s.IsLeader || s.AllDown || s.VerdictAge < first[r.name]+2.5 {
			t.Errorf("%s after 3s without a leader: is_leader %v, all_down %v, verdict age %.1fs (was %.1fs); want no leader, serving, age grown by ~3s",
				r.name, s.IsLeader, s.AllDown, s.VerdictAge, first[r.name])
		}
		for i := range 20 {
			if _, _, err := getTCPIP(r.http, fmt.Sprintf("?key=k%d", i)); err != nil {
				t.Errorf("%s without a leader: %v", r.name, err)
				break
			}
		}
		if b, err := os.ReadFile(r.logPath); err != nil || !strings.Contains(string(b), "ELECTION BLOCKED") {
			t.Errorf("%s logged no ELECTION BLOCKED line (%v)", r.name, err)
		}
	}
}

// TestAllDownServes kills every tcp-server: every replica must keep
// answering from all of them, marked degraded, with alternatives, and
// report it; under config/all-down fail they answer 503.
func TestAllDownServes(t *testing.T) {
	c := startCluster(t, clusterOpts{replicas: 3, extra: coreFlags})
	var servers []*tcpServer
	for _, id := range []string{"tcp1", "tcp2", "tcp3"} {
		s := c.startTCPServer(id)
		servers = append(servers, s)
		c.etcdctl("put", c.prefix+"servers/"+id+"/addr", s.addr)
	}
	c.waitEligible(c.replicas, 3)
	for _, s := range servers {
		s.kill()
	}
	eventually(t, 15*time.Second, "every replica all down", func() error {
		for _, r := range c.replicas {
			var s verdictStatus
			if err := getJSON(r.http+"/v1/status", &s); err != nil {
				return err
			}
			if !s.AllDown {
				return fmt.Errorf("%s: all_down false", r.name)
			}
		}
		return nil
	})
	for _, r := range c.replicas {
		resp, err := clientFor(r.http).Get(r.http + "/get-tcp-ip?n=3")
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			ID           string `json:"id"`
			Alternatives []pick `json:"alternatives"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(body.Alternatives) != 2 || resp.Header.Get("X-Tcpdispatch-Degraded") != "all-down" {
			t.Errorf("%s all down: %d %+v (%v), header %q; want 200 with 2 alternatives, degraded all-down",
				r.name, resp.StatusCode, body, err, resp.Header.Get("X-Tcpdispatch-Degraded"))
		}
		var st struct {
			DegradedAnswers int `json:"degraded_answers"`
		}
		if err := getJSON(r.http+"/v1/status", &st); err != nil || st.DegradedAnswers < 1 {
			t.Errorf("%s: degraded_answers %d (%v); want >= 1", r.name, st.DegradedAnswers, err)
		}
	}
	c.etcdctl("put", c.prefix+"config/all-down", "fail")
	eventually(t, 10*time.Second, "503 everywhere under config/all-down fail", func() error {
		for _, r := range c.replicas {
			if _, code, _ := getTCPIP(r.http, ""); code != 503 {
				return fmt.Errorf("%s: %d", r.name, code)
			}
		}
		return nil
	})
}
