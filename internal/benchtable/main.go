// Command benchtable runs the benchmarks of issue 11 and prints one table,
// each figure beside its baseline from the same run (make bench):
//
//   - get-tcp-ip on one replica vs a bare net/http handler vs nginx
//     `return 200`, each pinned to core 0 with taskset while the load
//     generator (wrk -t1 -c64 when installed, else httpload with 64
//     keep-alive connections) runs on core 1;
//   - pick ns/op by strategy at 10/1k/10k servers (balancer benchmarks);
//   - failover, detection, put-to-serve and reconnect storm (integration
//     benchmarks on real processes).
//
// Usage: go run ./internal/benchtable -bin bin [-quick]
//
// The same binary is its own load generator (-load) and bare server
// (-bare), so that each runs as a separate, pinned process.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tcpdispatch/tcpdispatch/internal/httpload"
)

// body is the bare server's and nginx's answer: the size of a get-tcp-ip
// answer.
const body = `{"id":"tcp1","addr":"10.0.0.1:9000"}`

func main() {
	var (
		bin      = flag.String("bin", "bin", "directory holding the dispatcher binary")
		load     = flag.String("load", "", "load-generator mode: host:port to load")
		path     = flag.String("path", "/get-tcp-ip", "load-generator mode: request path")
		dur      = flag.Duration("duration", 5*time.Second, "load-generator mode: counted duration per round")
		conns    = flag.Int("conns", 64, "connections of the load generator")
		bare     = flag.String("bare", "", "bare net/http server mode: listen address")
		rounds   = flag.Int("rounds", 5, "load rounds per server, alternating servers")
		abBin    = flag.String("ab", "", "directory of a second dispatcher binary, measured in the same rounds (A/B of a change)")
		abFlags  = flag.String("ab-flags", "", "extra flags of the -ab dispatcher, space-separated (e.g. --http-event-loop)")
		skipInt  = flag.Bool("skip-integration", false, "skip the integration benchmarks")
		failKill = flag.Int("failover-kills", 5, "kills per failover case")
	)
	flag.Parse()
	switch {
	case *load != "":
		os.Exit(runLoad(*load, *path, *conns, *dur))
	case *bare != "":
		os.Exit(runBare(*bare))
	}
	t := &table{}
	if err := httpComparison(t, *bin, *abBin, strings.Fields(*abFlags), *rounds, *conns, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable: http comparison:", err)
		t.add("get-tcp-ip vs bare vs nginx", "not measured: "+err.Error(), "", "")
	}
	picks(t)
	if !*skipInt {
		integration(t, *bin, *failKill)
	}
	t.print(os.Stdout)
}

// table is the printed result.
type table struct{ rows [][4]string }

func (t *table) add(figure, measured, baseline, target string) {
	t.rows = append(t.rows, [4]string{figure, measured, baseline, target})
	fmt.Fprintf(os.Stderr, "benchtable: %s: %s | %s | %s\n", figure, measured, baseline, target)
}

func (t *table) print(w io.Writer) {
	fmt.Fprintln(w, "\n| figure | measured | baseline (same run) | target |\n| --- | --- | --- | --- |")
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r[0], r[1], r[2], r[3])
	}
}

// loadResult is what the load generator prints.
type loadResult struct {
	Rate     float64 `json:"rate"`
	P50      float64 `json:"p50_us"`
	P99      float64 `json:"p99_us"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Non200   int     `json:"non200"`
	// CPU is the server process's CPU time per answered request (user +
	// system, from /proc), in µs: unlike the rate, it barely moves when
	// other work takes the core away, so it compares servers on a noisy
	// machine. Zero when unknown.
	CPU float64 `json:"-"`
	// GenBusy is the load generator's CPU time (user + system) over the
	// round's duration: near 1, the generator, not the server, set the
	// pace. Zero when unknown.
	GenBusy float64 `json:"-"`
}

// cpuTicks returns the user + system CPU time of pid in clock ticks
// (USER_HZ, 100 on Linux), or -1.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return u + st
}

func runLoad(addr, path string, conns int, d time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	res, err := httpload.Run(ctx, httpload.Config{Addr: addr, Path: path, Conns: conns, Duration: d, Warmup: time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		return 1
	}
	us := func(q float64) float64 { return float64(httpload.Quantile(res.Samples, q).Nanoseconds()) / 1000 }
	_ = json.NewEncoder(os.Stdout).Encode(loadResult{Rate: res.Rate(), P50: us(0.5), P99: us(0.99),
		Requests: res.Requests, Errors: res.Errors, Non200: res.Non200})
	return 0
}

func runBare(addr string) int {
	b := []byte(body)
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = []string{"application/json"}
		_, _ = w.Write(b)
	})}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		return 1
	}
	return 0
}

// pinned returns a command running name on core cpu when taskset exists.
func pinned(cpu int, name string, args ...string) *exec.Cmd {
	if p, err := exec.LookPath("taskset"); err == nil {
		return exec.Command(p, append([]string{"-c", strconv.Itoa(cpu), name}, args...)...)
	}
	return exec.Command(name, args...)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// server is one process under load.
type server struct {
	name, addr, path string
	cmd              *exec.Cmd
	lns              []net.Listener // registered servers' listeners, closed by stop
	runs             []loadResult
}

func (s *server) stop() {
	for _, l := range s.lns {
		l.Close()
	}
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	}
}

func waitHTTP(url string, ok func(*http.Response) bool, d time.Duration) error {
	deadline := time.Now().Add(d)
	cl := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if resp, err := cl.Get(url); err == nil {
			good := ok(resp)
			resp.Body.Close()
			if good {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v", url, d)
}

// httpComparison measures get-tcp-ip, bare net/http and nginx in
// alternating rounds.
func httpComparison(t *table, bin, abBin string, abFlags []string, rounds, conns int, dur time.Duration) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "benchtable")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// One replica (embedded one-member etcd) with 10 registered servers.
	disp, err := startDispatcher(filepath.Join(bin, "dispatcher"), filepath.Join(dir, "a"), "get-tcp-ip (one replica, 10 servers, wrr)", nil)
	if disp != nil {
		defer disp.stop()
	}
	if err != nil {
		return err
	}
	servers := []*server{disp}
	var other *server
	if abBin != "" {
		name := "get-tcp-ip of " + abBin
		if len(abFlags) > 0 {
			name += " " + strings.Join(abFlags, " ")
		}
		other, err = startDispatcher(filepath.Join(abBin, "dispatcher"), filepath.Join(dir, "b"), name, abFlags)
		if other != nil {
			defer other.stop()
		}
		if err != nil {
			return err
		}
		servers = append(servers, other)
	}

	bareS := &server{name: "bare net/http handler", addr: fmt.Sprintf("127.0.0.1:%d", freePort()), path: "/get-tcp-ip"}
	bareS.cmd = pinned(0, self, "-bare", bareS.addr)
	bareS.cmd.Stderr = os.Stderr
	if err := bareS.cmd.Start(); err != nil {
		return err
	}
	defer bareS.stop()
	if err := waitHTTP("http://"+bareS.addr+"/", func(*http.Response) bool { return true }, 10*time.Second); err != nil {
		return err
	}
	servers = append(servers, bareS)

	ngx, note := startNginx(dir)
	if ngx != nil {
		defer ngx.stop()
		servers = append(servers, ngx)
	}

	// wrk when installed (make bench installs it), as issue 11 measured;
	// else this binary's own load generator (httpload).
	wrk, _ := exec.LookPath("wrk")
	load := func(s *server, d time.Duration) (loadResult, error) {
		busy := func(cmd *exec.Cmd) float64 {
			ps := cmd.ProcessState
			return (ps.UserTime() + ps.SystemTime()).Seconds() / d.Seconds()
		}
		if wrk != "" {
			cmd := pinned(1, wrk, "-t1", "-c"+strconv.Itoa(conns), "-d"+d.String(), "--latency", "http://"+s.addr+s.path)
			out, err := cmd.Output()
			if err != nil {
				return loadResult{}, fmt.Errorf("wrk %s: %w", s.name, err)
			}
			r, err := parseWrk(string(out))
			r.GenBusy = busy(cmd)
			return r, err
		}
		cmd := pinned(1, self, "-load", s.addr, "-path", s.path, "-conns", strconv.Itoa(conns), "-duration", d.String())
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return loadResult{}, fmt.Errorf("load %s: %w", s.name, err)
		}
		var r loadResult
		if err := json.Unmarshal(out, &r); err != nil {
			return loadResult{}, fmt.Errorf("load %s: %w", s.name, err)
		}
		r.GenBusy = busy(cmd)
		return r, nil
	}
	if wrk != "" {
		// wrk has no warm-up of its own.
		for _, s := range servers {
			if _, err := load(s, time.Second); err != nil {
				return err
			}
		}
	}
	for range rounds {
		for _, s := range servers {
			before := cpuTicks(s.cmd.Process.Pid)
			r, err := load(s, dur)
			if err != nil {
				return err
			}
			if after := cpuTicks(s.cmd.Process.Pid); before >= 0 && after >= 0 && r.Requests > 0 {
				// The ticks include wrk's start and stop, when nothing is
				// served: a slight overestimate alike for every server.
				r.CPU = float64(after-before) * 1e4 / float64(r.Requests)
			}
			s.runs = append(s.runs, r)
		}
	}
	med := func(s *server) loadResult {
		rs := slices.Clone(s.runs)
		slices.SortFunc(rs, func(a, b loadResult) int { return int(a.Rate - b.Rate) })
		return rs[len(rs)/2]
	}
	fig := func(r loadResult) string {
		f := fmt.Sprintf("%.1fk req/s, p50 %.0f µs, p99 %.0f µs", r.Rate/1000, r.P50, r.P99)
		if r.Errors > 0 || r.Non200 > 0 {
			f += fmt.Sprintf(" (%d socket errors, %d non-200)", r.Errors, r.Non200)
		}
		return f
	}
	d, b := med(disp), med(bareS)
	base := fmt.Sprintf("bare net/http: %s (%.2f×)", fig(b), d.Rate/b.Rate)
	target := "≥ 1.0× nginx req/s, p99 ≤ 1.5× nginx"
	if ngx != nil {
		n := med(ngx)
		base += fmt.Sprintf("; nginx return 200: %s (%.2f× req/s, p99 %.2f×)", fig(n), d.Rate/n.Rate, d.P99/n.P99)
	} else {
		base += "; nginx: " + note
	}
	gen := "httpload"
	if wrk != "" {
		gen = "wrk -t1"
	}
	t.add(fmt.Sprintf("get-tcp-ip, one replica, %s -c%d, server core 0 / load core 1, median of %d × %v", gen, conns, rounds, dur), fig(d), base, target)
	if ngx != nil {
		measured, baseline := spread(disp.runs, ngx.runs)
		t.add(fmt.Sprintf("get-tcp-ip vs nginx round by round, %s -c%d, %d × %v", gen, conns, rounds, dur), measured, baseline, target)
	}
	// Every round of every server, in the order they ran: the medians and
	// ranges above hide which rounds a noisy machine hit.
	for _, s := range servers {
		var rs []string
		for _, r := range s.runs {
			rs = append(rs, fmt.Sprintf("%.1fk %.0f/%.0f µs %.1f µs/req gen %.0f%%", r.Rate/1000, r.P50, r.P99, r.CPU, 100*r.GenBusy))
		}
		t.add(s.name+", each round (req/s, p50/p99, CPU per request, load generator's CPU)", strings.Join(rs, "; "), "", "")
	}
	if other != nil && ngx != nil {
		o, n := med(other), med(ngx)
		t.add(other.name+" (-ab), median", fig(o), fmt.Sprintf("nginx return 200: %s (%.2f× req/s, p99 %.2f×)", fig(n), o.Rate/n.Rate, o.P99/n.P99), target)
		measured, baseline := spread(other.runs, ngx.runs)
		t.add(other.name+" (-ab) vs nginx round by round", measured, baseline, target)
	}
	return nil
}

// spread describes every round of get-tcp-ip (d) against nginx (n): the
// range of each server's rate and p99, and the ratios of the rounds run
// back to back, with how many rounds met the target. A median hides a
// noisy machine; this row shows it.
func spread(d, n []loadResult) (measured, baseline string) {
	rng := func(rs []loadResult, f func(loadResult) float64) (lo, med, hi float64) {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[0], v[len(v)/2], v[len(v)-1]
	}
	rate := func(r loadResult) float64 { return r.Rate / 1000 }
	p99 := func(r loadResult) float64 { return r.P99 }
	desc := func(rs []loadResult) string {
		rl, rm, rh := rng(rs, rate)
		pl, pm, ph := rng(rs, p99)
		cl, cm, ch := rng(rs, func(r loadResult) float64 { return r.CPU })
		return fmt.Sprintf("req/s %.1fk–%.1fk (median %.1fk), p99 %.0f–%.0f µs (median %.0f µs), CPU %.1f–%.1f µs/request (median %.1f)", rl, rh, rm, pl, ph, pm, cl, ch, cm)
	}
	var rates, tails []string
	_, dc, _ := rng(d, func(r loadResult) float64 { return r.CPU })
	_, nc, _ := rng(n, func(r loadResult) float64 { return r.CPU })
	met := 0
	for i := range min(len(d), len(n)) {
		rr, pr := d[i].Rate/n[i].Rate, d[i].P99/n[i].P99
		rates = append(rates, fmt.Sprintf("%.2f", rr))
		tails = append(tails, fmt.Sprintf("%.2f", pr))
		if rr >= 1 && pr <= 1.5 {
			met++
		}
	}
	return "get-tcp-ip " + desc(d), fmt.Sprintf("nginx %s; per round req/s ×%s, p99 ×%s; target met in %d of %d rounds; CPU per request ×%.2f (medians)",
		desc(n), strings.Join(rates, " "), strings.Join(tails, " "), met, min(len(d), len(n)), dc/nc)
}

// startDispatcher starts one replica of bin (embedded one-member etcd,
// data under dir) pinned to core 0, registers 10 servers that accept and
// close, and waits until it serves them. The returned server is non-nil
// once the process started, also with an error: the caller stops it.
func startDispatcher(bin, dir, name string, extra []string) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	httpPort, cport, pport := freePort(), freePort(), freePort()
	curl := fmt.Sprintf("http://127.0.0.1:%d", cport)
	purl := fmt.Sprintf("http://127.0.0.1:%d", pport)
	disp := &server{name: name, addr: fmt.Sprintf("127.0.0.1:%d", httpPort), path: "/get-tcp-ip"}
	args := []string{"--name", "bench", "--listen-http", disp.addr,
		"--data-dir", filepath.Join(dir, "bench.etcd"), "--listen-client-urls", curl, "--advertise-client-urls", curl,
		"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl, "--log-level", "warn"}
	disp.cmd = pinned(0, bin, append(args, extra...)...)
	logf, err := os.Create(filepath.Join(dir, "dispatcher.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	disp.cmd.Stdout, disp.cmd.Stderr = logf, logf
	if err := disp.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dispatcher: %w", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{curl}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return disp, err
	}
	defer cli.Close()
	for i := range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return disp, err
		}
		disp.lns = append(disp.lns, l)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = cli.Put(ctx, fmt.Sprintf("/tcpdispatch/servers/tcp%d/addr", i), l.Addr().String())
		cancel()
		if err != nil {
			return disp, fmt.Errorf("register: %w", err)
		}
	}
	err = waitHTTP("http://"+disp.addr+"/v1/status", func(r *http.Response) bool {
		var st struct {
			Eligible int `json:"eligible"`
		}
		return json.NewDecoder(r.Body).Decode(&st) == nil && st.Eligible == 10
	}, 60*time.Second)
	return disp, err
}

// parseWrk reads wrk --latency output: Requests/sec, the 50% and 99%
// latency lines, socket errors and non-2xx answers.
func parseWrk(out string) (loadResult, error) {
	var r loadResult
	var seen int
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk: %q: %w", line, err)
			}
			r.Rate, seen = v, seen+1
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := time.ParseDuration(f[1])
			if err != nil {
				return r, fmt.Errorf("wrk: %q: %w", line, err)
			}
			us := float64(d.Nanoseconds()) / 1000
			if f[0] == "50%" {
				r.P50 = us
			} else {
				r.P99 = us
			}
			seen++
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.Requests, _ = strconv.Atoi(f[0])
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:"):
			r.Non200, _ = strconv.Atoi(f[len(f)-1])
		case strings.HasPrefix(strings.TrimSpace(line), "Socket errors:"):
			// "Socket errors: connect 0, read 0, write 0, timeout 0"
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.Atoi(strings.TrimSuffix(f[i+1], ","))
				r.Errors += n
			}
		}
	}
	if seen != 3 {
		return r, fmt.Errorf("wrk: unexpected output %q", out)
	}
	return r, nil
}

// startNginx starts nginx answering `return 200` with body, single worker
// pinned to core 0; nil and a note when nginx is not installed.
func startNginx(dir string) (*server, string) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		return nil, "skipped: nginx is not installed (make bench tries apt-get install nginx-light)"
	}
	port := freePort()
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:%[2]d;
    location / { default_type application/json; return 200 '%[3]s'; }
  }
}
`, dir, port, body)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, "skipped: " + err.Error()
	}
	s := &server{name: "nginx return 200", addr: fmt.Sprintf("127.0.0.1:%d", port), path: "/get-tcp-ip"}
	s.cmd = pinned(0, bin, "-p", dir, "-c", path)
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, "skipped: " + err.Error()
	}
	if err := waitHTTP("http://"+s.addr+"/", func(*http.Response) bool { return true }, 10*time.Second); err != nil {
		s.stop()
		return nil, "skipped: " + err.Error()
	}
	return s, ""
}

// benchLine matches one result line of go test -bench.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// goBench runs go test -bench and returns metric -> value per benchmark.
func goBench(env []string, args ...string) (map[string]map[string]float64, string, error) {
	cmd := exec.Command("go", append([]string{"test", "-run", "^$"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out strings.Builder
	cmd.Stdout = io.MultiWriter(&out, os.Stderr)
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	res := map[string]map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f := strings.Fields(m[2])
		metrics := map[string]float64{}
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				metrics[f[i+1]] = v
			}
		}
		res[m[1]] = metrics
	}
	return res, out.String(), err
}

func picks(t *table) {
	res, _, err := goBench(nil, "-bench", "^BenchmarkPick$", "-benchtime", "200ms", "./balancer/")
	if err != nil && len(res) == 0 {
		t.add("pick ns/op", "not measured: "+err.Error(), "", "")
		return
	}
	byStrategy := map[string][3]float64{}
	var order []string
	for name, m := range res {
		parts := strings.Split(strings.TrimPrefix(name, "BenchmarkPick/"), "/")
		if len(parts) != 2 {
			continue
		}
		col := map[string]int{"10": 0, "1000": 1, "10000": 2}[parts[1]]
		v := byStrategy[parts[0]]
		if _, seen := byStrategy[parts[0]]; !seen {
			order = append(order, parts[0])
		}
		v[col] = m["ns/op"]
		byStrategy[parts[0]] = v
	}
	slices.Sort(order)
	for _, s := range order {
		v := byStrategy[s]
		t.add("pick ns/op, "+s+" at 10 / 1k / 10k servers", fmt.Sprintf("%.0f / %.0f / %.0f", v[0], v[1], v[2]), "", "0 allocs (balancer tests)")
	}
}

func integration(t *table, bin string, kills int) {
	abs, _ := filepath.Abs(bin)
	env := []string{"TCPDISPATCH_BIN=" + abs, fmt.Sprintf("FAILOVER_KILLS=%d", kills)}
	run := func(name string, args ...string) map[string]map[string]float64 {
		res, _, err := goBench(env, append([]string{"-bench", name, "-benchtime", "1x", "-timeout", "20m"}, args...)...)
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchtable: %s: %v\n", name, err)
		}
		return res
	}
	get := func(res map[string]map[string]float64, bench, metric string) (float64, error) {
		m, ok := res[bench]
		if !ok {
			return 0, errors.New("no result")
		}
		v, ok := m[metric]
		if !ok {
			return 0, fmt.Errorf("no %s", metric)
		}
		return v, nil
	}
	fo := run("^BenchmarkFailover$", "./integration/")
	for _, c := range []string{"quiet", "cpu-pressure"} {
		b := "BenchmarkFailover/" + c
		p50, err1 := get(fo, b, "p50-ms")
		p99, _ := get(fo, b, "p99-ms")
		mx, _ := get(fo, b, "max-ms")
		co, _ := get(fo, b, "raft-co-located")
		if err1 != nil {
			t.add("failover, "+c, "not measured: "+err1.Error(), "", "p50 ≤ 1.5 s, p99 ≤ 2.5 s")
			continue
		}
		t.add(fmt.Sprintf("failover (SIGKILL leader → next leader's first fenced write), %s, %d kills, shipped defaults", c, kills),
			fmt.Sprintf("p50 %.0f ms, p99 %.0f ms, max %.0f ms", p50, p99, mx),
			fmt.Sprintf("%.0f kills hit the raft leader's replica", co), "p50 ≤ 1.5 s, p99 ≤ 2.5 s")
	}
	det := run("^BenchmarkDetection$", "./integration/")
	if med, err := get(det, "BenchmarkDetection", "median-ms"); err == nil {
		mx, _ := get(det, "BenchmarkDetection", "max-ms")
		t.add("detection: tcp-server SIGKILLed → down on every replica (5 kills, defaults)", fmt.Sprintf("median %.0f ms, max %.0f ms", med, mx), "", "≤ 2 s; < 100 ms when the host stays up")
	} else {
		t.add("detection", "not measured: "+err.Error(), "", "≤ 2 s")
	}
	pts := run("^BenchmarkPutToServe$", "./integration/")
	if med, err := get(pts, "BenchmarkPutToServe", "median-ms"); err == nil {
		p90, _ := get(pts, "BenchmarkPutToServe", "p90-ms")
		mx, _ := get(pts, "BenchmarkPutToServe", "max-ms")
		t.add("propagation: etcd put → served by all 3 replicas (50 puts)", fmt.Sprintf("median %.1f ms, p90 %.1f ms, max %.1f ms", med, p90, mx), "", "median < 50 ms")
	} else {
		t.add("propagation", "not measured: "+err.Error(), "", "median < 50 ms")
	}
	st := run("^BenchmarkReconnectStorm$", "./integration/")
	if m, ok := st["BenchmarkReconnectStorm"]; ok {
		var keys []string
		for k := range m {
			if strings.HasSuffix(k, "-max/mean") {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			t.add("reconnect storm max/mean, "+strings.TrimSuffix(k, "-max/mean"), fmt.Sprintf("%.3f", m[k]), "", "≤ 1.10")
		}
	} else {
		t.add("reconnect storm", "not measured", "", "≤ 1.10")
	}
}
