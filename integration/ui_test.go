package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tcpdispatch/tcpdispatch/api"
	"github.com/tcpdispatch/tcpdispatch/balancer"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// uiPoll is how often the status page refreshes (api/ui.html).
const uiPoll = time.Second

// chromium returns Debian's Chromium (or another Chrome) or fails the test
// with how to install it: the browser test must not pass by skipping.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the status page test needs Chromium: apt-get update && apt-get install -y chromium (.ci/run installs it when missing)")
	return ""
}

// TestStatusPage loads /ui of a real cluster in headless Chromium, checks
// that it shows the servers and the leader, then SIGKILLs a tcp-server and
// checks that its row turns down without a reload, within the detection
// bound plus one refresh of the page.
func TestStatusPage(t *testing.T) {
	exe := chromium(t)
	c := startCluster(t, clusterOpts{replicas: 3, extra: coreFlags})
	servers := map[string]*tcpServer{}
	ids := []string{"tcp1", "tcp2", "tcp3"}
	for _, id := range ids {
		servers[id] = c.startTCPServer(id)
		c.etcdctl("put", c.prefix+"servers/"+id+"/addr", servers[id].addr)
	}
	c.etcdctl("put", c.prefix+"servers/tcp2/weight", "250")
	c.waitEligible(c.replicas, 3)
	r := c.replicas[0]
	var leader string
	eventually(t, 10*time.Second, "a leader", func() error {
		s, err := r.status()
		if err == nil && s.Leader == "" {
			err = errNotYet
		}
		leader = s.Leader
		return err
	})
	for range 50 {
		if _, _, err := getTCPIP(r.http, ""); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe),
		chromedp.NoSandbox, // the test may run as root, where Chromium's sandbox refuses to start
		chromedp.DisableGPU, chromedp.WindowSize(1280, 800), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()

	shots := t.TempDir()
	screenshot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		for _, dir := range []string{shots, os.Getenv("TCPDISPATCH_SCREENSHOT_DIR")} {
			if dir == "" {
				continue
			}
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("screenshot: %s", path)
		}
	}
	stateOf := func(id string) (string, error) {
		return chromedp.Run(bctx, chromedp.Evaluate[string](fmt.Sprintf(
			`(document.querySelector('tr[data-id=%q]') || {dataset: {state: "missing"}}).dataset.state`, id)))
	}

	if err := chromedp.Do(bctx, chromedp.Navigate(r.http+"/ui"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="tcp3"]`))); err != nil {
		t.Fatalf("load /ui: %v", err)
	}
	// The page renders the live state: a row per server, all up, the
	// leader named in the header and marked among the replicas.
	type pageState struct {
		Rows     []string `json:"rows"`
		States   []string `json:"states"`
		Leader   string   `json:"leader"`
		Marked   string   `json:"marked"`
		Replicas int      `json:"replicas"`
		Weight   string   `json:"weight"`
	}
	var page pageState
	eventually(t, 5*time.Second, "the page shows every server up and the leader", func() error {
		var err error
		page, err = chromedp.Run(bctx, chromedp.Evaluate[pageState](`({
			rows: [...document.querySelectorAll('#rows tr')].map(tr => tr.dataset.id),
			states: [...document.querySelectorAll('#rows tr')].map(tr => tr.dataset.state),
			leader: document.getElementById('leader').textContent,
			marked: (document.querySelector('#replicas li.leader') || {textContent: ""}).textContent,
			replicas: document.querySelectorAll('#replicas li').length,
			weight: document.querySelector('tr[data-id="tcp2"] td[data-col="weight"]').textContent,
		})`))
		switch {
		case err != nil:
			return err
		case strings.Join(page.Rows, ",") != strings.Join(ids, ","):
			return fmt.Errorf("rows %v, want %v", page.Rows, ids)
		case strings.Join(page.States, ",") != "up,up,up":
			return fmt.Errorf("states %v, want all up", page.States)
		case page.Leader != leader || page.Marked != leader:
			return fmt.Errorf("leader shown %q, marked %q; want %q", page.Leader, page.Marked, leader)
		case page.Replicas != 3:
			return fmt.Errorf("%d replicas listed, want 3", page.Replicas)
		case page.Weight != "250":
			return fmt.Errorf("tcp2 weight shown %q, want 250", page.Weight)
		}
		return nil
	})
	// Picks/s: this replica's answers, measured by the page's refreshes.
	for range 200 {
		if _, _, err := getTCPIP(r.http, ""); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 3*uiPoll, "the page shows picks/s", func() error {
		rate, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.getElementById('pickrate').textContent`))
		if err == nil && (rate == "" || rate == "0.0") {
			err = fmt.Errorf("picks/s shown as %q", rate)
		}
		return err
	})
	screenshot("ui-all-up.png")

	// A reload would lose this mark: the page must update in place.
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`window.__sameLoad = true`)); err != nil {
		t.Fatal(err)
	}
	servers["tcp3"].kill()
	killed := time.Now()
	bound := probeInterval*fall + time.Second + uiPoll
	eventually(t, bound+5*time.Second, "tcp3's row turns down", func() error {
		state, err := stateOf("tcp3")
		if err == nil && state != "down" {
			err = fmt.Errorf("tcp3 shows %q", state)
		}
		return err
	})
	took := time.Since(killed)
	t.Logf("tcp3's row turned down %v after SIGKILL (bound: interval×fall+1s, plus one %v page refresh = %v)",
		took.Round(time.Millisecond), uiPoll, bound)
	if took > bound {
		t.Errorf("tcp3's row turned down after %v, want <= %v", took, bound)
	}
	sameLoad, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`window.__sameLoad === true`))
	if err != nil {
		t.Fatal(err)
	}
	class, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector('tr[data-id="tcp3"]').className`))
	if err != nil {
		t.Fatal(err)
	}
	if !sameLoad {
		t.Error("the page was reloaded; it must update in place")
	}
	if class != "state-down" {
		t.Errorf("tcp3's row has class %q, want state-down (coloured as down)", class)
	}
	for _, id := range []string{"tcp1", "tcp2"} {
		if state, err := stateOf(id); err != nil || state != "up" {
			t.Errorf("%s shows %q (%v), want up", id, state, err)
		}
	}
	screenshot("ui-tcp3-down.png")

	// On a phone the table becomes cards: nothing wider than the screen.
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile),
		chromedp.Sleep(uiPoll+200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	overflow, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth - window.innerWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow > 0 {
		t.Errorf("on a 390px-wide phone the page is %dpx wider than the screen", overflow)
	}
	screenshot("ui-phone.png")
}

// staticSource serves one fixed snapshot to an in-process api.Server.
type staticSource struct{ snap *store.Snapshot }

func (s staticSource) Snapshot() *store.Snapshot { return s.snap }
func (s staticSource) Sync() store.Sync          { return store.Sync{Revision: s.snap.Revision, At: time.Now()} }
func (s staticSource) Age() time.Duration        { return 0 }
func (s staticSource) Reachable() bool           { return true }

type notLeading struct{}

func (notLeading) IsLeader() bool { return false }

// TestStatusPageBanners checks the page's panic and all-down banners in
// Chromium: /ui and /v1/fleet come from a real api.Server, /v1/status from
// a document in panic and all-down mode (all_down and degraded_answers are
// the fields of issue 9's all-down mode).
func TestStatusPageBanners(t *testing.T) {
	exe := chromium(t)
	snap, err := store.NewSnapshot(3, balancer.WRR, []store.Server{
		{ID: "a", Addr: "127.0.0.1:9", Weight: 100, State: "down", Reason: "connection refused"},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.DefaultConfig(), staticSource{snap}, notLeading{}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var allDown atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	mux.HandleFunc("/v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"name":"r1","leader":"r1","is_leader":false,"leader_epoch":1,"revision":3,"snapshot_age_ms":10,
			"etcd":"ok","ready":true,"strategy":"wrr","servers":1,"eligible":0,"panic":true,
			"all_down":%v,"degraded_answers":7,"oldest_verdict_age_seconds":12.5}`, allDown.Load())
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate(ts.URL+"/ui"), chromedp.WaitVisible(chromedp.CSS(`tr[data-id="a"]`))); err != nil {
		t.Fatalf("load /ui: %v", err)
	}
	banner := func(id string) (string, error) {
		return chromedp.Run(bctx, chromedp.Evaluate[string](fmt.Sprintf(
			`(e => e.classList.contains('show') ? e.textContent : '')(document.getElementById(%q))`, id)))
	}
	eventually(t, 5*time.Second, "panic banner shown, all-down banner hidden", func() error {
		p, err := banner("panic")
		if err != nil {
			return err
		}
		a, err := banner("alldown")
		if err != nil {
			return err
		}
		if !strings.Contains(p, "PANIC") || a != "" {
			return fmt.Errorf("panic banner %q, all-down banner %q", p, a)
		}
		return nil
	})
	allDown.Store(true)
	eventually(t, 5*time.Second, "all-down banner shown without a reload", func() error {
		a, err := banner("alldown")
		if err == nil && (!strings.Contains(a, "ALL SERVERS DOWN") || !strings.Contains(a, "degraded answers: 7")) {
			err = fmt.Errorf("all-down banner %q", a)
		}
		return err
	})
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{t.TempDir(), os.Getenv("TCPDISPATCH_SCREENSHOT_DIR")} {
		if dir != "" {
			path := filepath.Join(dir, "ui-all-down.png")
			if err := os.WriteFile(path, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("screenshot: %s", path)
		}
	}
}
