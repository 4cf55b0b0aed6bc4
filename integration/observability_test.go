package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// metricName matches the series names a PromQL expression of ours can use.
var metricName = regexp.MustCompile(`\b(?:tcpdispatch|process|go)_[a-zA-Z0-9_]+\b`)

// exprMetrics returns the metric families an expression reads: series
// names, with a histogram's _bucket, _sum and _count mapped to the family.
func exprMetrics(expr string, fams map[string]*dto.MetricFamily) []string {
	var out []string
	for _, name := range metricName.FindAllString(expr, -1) {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base := strings.TrimSuffix(name, suffix)
			if f := fams[base]; base != name && f != nil && f.GetType() == dto.MetricType_HISTOGRAM {
				name = base
			}
		}
		out = append(out, name)
	}
	return out
}

// alertRules is the part of a Prometheus rule file the test reads.
type alertRules struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	Title  string `json:"title"`
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestDashboardAndAlerts parses deploy/grafana/tcpdispatch.json and
// deploy/prometheus/alerts.yml and finds every metric they use in a real
// /metrics scrape of a running replica.
func TestDashboardAndAlerts(t *testing.T) {
	var rules alertRules
	raw, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	var dash dashboard
	raw, err = os.ReadFile("../deploy/grafana/tcpdispatch.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("tcpdispatch.json: %v", err)
	}

	c := startCluster(t, clusterOpts{replicas: 1, extra: coreFlags})
	srv := c.startTCPServer("tcp1")
	c.etcdctl("put", c.prefix+"servers/tcp1/addr", srv.addr)
	c.waitEligible(c.replicas, 1)
	r := c.replicas[0]
	eventually(t, 10*time.Second, "replica leads", func() error {
		if c.leader(c.replicas) == nil {
			return errNotYet
		}
		return nil
	})
	if _, _, err := getTCPIP(r.http, ""); err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Get(r.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}

	check := func(where, expr string) {
		t.Helper()
		used := exprMetrics(expr, fams)
		if len(used) == 0 {
			t.Errorf("%s: %q uses no tcpdispatch metric", where, expr)
		}
		for _, name := range used {
			if fams[name] == nil {
				t.Errorf("%s: metric %s is not in a real /metrics scrape", where, name)
			}
		}
		if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
			t.Errorf("%s: unbalanced brackets in %q", where, expr)
		}
	}

	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, rule := range g.Rules {
			where := fmt.Sprintf("alerts.yml %s/%s", g.Name, rule.Alert)
			if rule.Alert == "" || rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" {
				t.Errorf("%s: want alert, labels.severity and annotations.summary", where)
			}
			if rule.For != "" {
				if _, err := model.ParseDuration(rule.For); err != nil {
					t.Errorf("%s: for %q: %v", where, rule.For, err)
				}
			}
			alerts[rule.Alert] = true
			check(where, rule.Expr)
		}
	}
	for _, want := range []string{"TcpdispatchNoLeader", "TcpdispatchSnapshotStale", "TcpdispatchEligibleShareLow", "TcpdispatchEtcdUnreachable"} {
		if !alerts[want] {
			t.Errorf("alerts.yml: no %s alert", want)
		}
	}

	if dash.Title == "" {
		t.Error("tcpdispatch.json: no title")
	}
	exprs := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			check("dashboard panel "+p.Title, tg.Expr)
		}
	}
	t.Logf("checked %d alert rules and %d dashboard queries against %d metric families", len(alerts), exprs, len(fams))
}
