package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"

	"github.com/tcpdispatch/tcpdispatch/api"
	"github.com/tcpdispatch/tcpdispatch/node"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// root is the repository root, seen from this package's directory.
const root = ".."

// The binaries the packaging files run, as their paths in the image.
const (
	binDispatcher  = "dispatcher"
	binTCPServer   = "tcpserver"
	binTCPClient   = "tcpclient"
	binHealthcheck = "healthcheck"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds the commands once per test binary and returns their
// directory.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tcpdispatch-deploy-test")
		if err != nil {
			buildErr = err
			return
		}
		buildDir = dir
		cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/"+binDispatcher, "./cmd/"+binTCPServer,
			"./cmd/"+binTCPClient, "./cmd/"+binHealthcheck)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// flagLine matches a flag's line in --help output, in the standard
// library's form ("  -name string") and pflag's ("  -n, --name string").
var flagLine = regexp.MustCompile(`(?m)^\s+(?:-[A-Za-z], )?--?([A-Za-z0-9][A-Za-z0-9-]*)`)

var (
	helpMu    sync.Mutex
	helpCache = map[string]map[string]bool{}
)

// flagsOf runs "<bin> --help" and returns the flag names it lists.
func flagsOf(t *testing.T, bin string) map[string]bool {
	t.Helper()
	helpMu.Lock()
	defer helpMu.Unlock()
	if f, ok := helpCache[bin]; ok {
		return f
	}
	out, err := exec.Command(filepath.Join(binaries(t), bin), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", bin, err, out)
	}
	flags := map[string]bool{}
	for _, m := range flagLine.FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) == 0 {
		t.Fatalf("%s --help lists %d flags; cannot parse it:\n%s", bin, len(flags), out)
	}
	helpCache[bin] = flags
	return flags
}

// parseArgs returns the flags of an argument list, name → value ("" for a
// flag whose value is not known, such as a boolean).
func parseArgs(args []string) map[string]string {
	got := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		name := strings.TrimLeft(a, "-")
		if n, v, ok := strings.Cut(name, "="); ok {
			got[n] = v
			continue
		}
		if i+1 < len(args) && (len(args[i+1]) == 1 || !strings.HasPrefix(args[i+1], "-")) {
			got[name] = args[i+1]
			i++
			continue
		}
		got[name] = ""
	}
	return got
}

// checkFlags fails for every flag in args that bin does not define.
func checkFlags(t *testing.T, where, bin string, args []string) map[string]string {
	t.Helper()
	known := flagsOf(t, bin)
	got := parseArgs(args)
	for name := range got {
		if !known[name] {
			t.Errorf("%s: %s has no flag --%s", where, bin, name)
		}
	}
	return got
}

// portOf returns the port of a host:port or URL.
func portOf(t *testing.T, where, s string) int {
	t.Helper()
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
		s, _, _ = strings.Cut(s, "/")
	}
	_, p, err := net.SplitHostPort(s)
	if err != nil {
		t.Fatalf("%s: %q: %v", where, s, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s: %q: %v", where, s, err)
	}
	return n
}

// httpPort is the port the dispatcher serves HTTP on with these flags.
func httpPort(t *testing.T, where string, flags map[string]string) int {
	t.Helper()
	if v, ok := flags["listen-http"]; ok {
		return portOf(t, where, v)
	}
	return portOf(t, where, node.DefaultConfig().ListenHTTP)
}

// noSnapshot is an api.Source with nothing yet, as a replica that just
// started.
type noSnapshot struct{}

func (noSnapshot) Snapshot() *store.Snapshot { return nil }
func (noSnapshot) Sync() store.Sync          { return store.Sync{} }
func (noSnapshot) Age() time.Duration        { return -1 }
func (noSnapshot) Reachable() bool           { return false }

type notLeader struct{}

func (notLeader) IsLeader() bool { return false }

// checkRoute fails unless the dispatcher's real router serves path (any
// answer but 404 and 405).
func checkRoute(t *testing.T, where, path string) {
	t.Helper()
	srv, err := api.New(api.Config{}, noSnapshot{}, notLeader{}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code == http.StatusNotFound || rec.Code == http.StatusMethodNotAllowed {
		t.Errorf("%s: probe path %s: the dispatcher answers %d", where, path, rec.Code)
	}
}

// ---- Dockerfile ----

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case
	args string
}

type stage struct {
	name, from string
	ins        []instruction
}

func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		stages []stage
		cur    strings.Builder
		start  int
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		switch in.cmd {
		case "FROM":
			f := strings.Fields(in.args)
			st := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
		case "ARG":
			if len(stages) == 0 {
				continue // global ARG
			}
			fallthrough
		default:
			if len(stages) == 0 {
				t.Fatalf("%s:%d: %s before the first FROM", path, in.line, in.cmd)
			}
			stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
		}
	}
	return stages
}

// execForm parses a JSON-array instruction argument.
func execForm(t *testing.T, where, s string) []string {
	t.Helper()
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		t.Fatalf("%s: want exec form [\"...\"], got %s", where, s)
	}
	var out []string
	if err := yaml.Unmarshal([]byte(s), &out); err != nil { // JSON is YAML
		t.Fatalf("%s: %v", where, err)
	}
	return out
}

func (s stage) find(cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	path := filepath.Join(root, "Dockerfile")
	stages := parseDockerfile(t, path)
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stages", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	// Static binaries: CGO off in the build stage, every ./cmd/X built exists.
	built := map[string]bool{}
	cgoOff := false
	for _, in := range build.ins {
		if in.cmd == "ENV" && regexp.MustCompile(`\bCGO_ENABLED=0\b`).MatchString(in.args) {
			cgoOff = true
		}
		if in.cmd != "RUN" {
			continue
		}
		for _, m := range regexp.MustCompile(`-o /out/(\S+) (\S+)`).FindAllStringSubmatch(in.args, -1) {
			built[m[1]] = true
			if pkg, ok := strings.CutPrefix(m[2], "./"); ok {
				if _, err := os.Stat(filepath.Join(root, pkg)); err != nil {
					t.Errorf("Dockerfile:%d: builds %s: %v", in.line, m[2], err)
				}
			}
		}
	}
	if !cgoOff {
		t.Error("Dockerfile: the build stage must set CGO_ENABLED=0 (static binaries for scratch/distroless)")
	}
	for _, b := range []string{binDispatcher, binTCPServer, binTCPClient, binHealthcheck} {
		if !built[b] {
			t.Errorf("Dockerfile: the build stage does not build %s", b)
		}
	}

	// Final stage: distroless or scratch, non-root, holds what it runs.
	if final.from != "scratch" && !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
		t.Errorf("Dockerfile: final stage FROM %s: want scratch or distroless static", final.from)
	}
	users := final.find("USER")
	if len(users) == 0 {
		t.Fatal("Dockerfile: the final stage sets no USER (runs as root)")
	}
	if u, _, _ := strings.Cut(users[len(users)-1].args, ":"); u == "0" || u == "root" {
		t.Errorf("Dockerfile: final USER %s is root", users[len(users)-1].args)
	}
	inImage := map[string]bool{}
	for _, in := range final.find("COPY") {
		f := strings.Fields(in.args)
		for _, src := range f[:len(f)-1] {
			if strings.HasPrefix(src, "--") {
				continue
			}
			if b, ok := strings.CutPrefix(src, "/out/"); ok && b != "data" {
				if !built[b] {
					t.Errorf("Dockerfile:%d: copies %s, which the build stage does not build", in.line, src)
				}
				inImage["/"+b] = true
			}
		}
	}

	ep := final.find("ENTRYPOINT")
	if len(ep) != 1 {
		t.Fatalf("Dockerfile: want one ENTRYPOINT in the final stage, got %d", len(ep))
	}
	entry := execForm(t, "ENTRYPOINT", ep[0].args)
	if len(entry) != 1 || entry[0] != "/"+binDispatcher || !inImage[entry[0]] {
		t.Errorf("Dockerfile: ENTRYPOINT %q: want [\"/dispatcher\"], copied into the image", entry)
	}
	var cmdFlags map[string]string
	if c := final.find("CMD"); len(c) == 1 {
		cmdFlags = checkFlags(t, "Dockerfile CMD", binDispatcher, execForm(t, "CMD", c[0].args))
		if v, ok := cmdFlags["listen-http"]; ok && !strings.HasPrefix(v, "0.0.0.0:") && !strings.HasPrefix(v, ":") {
			t.Errorf("Dockerfile CMD: --listen-http %s is not reachable from outside the container", v)
		}
	}

	hc := final.find("HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("Dockerfile: want one HEALTHCHECK in the final stage, got %d", len(hc))
	}
	_, probe, ok := strings.Cut(hc[0].args, "CMD ")
	if !ok {
		t.Fatalf("Dockerfile: HEALTHCHECK %s has no CMD", hc[0].args)
	}
	argv := execForm(t, "HEALTHCHECK", probe)
	if argv[0] != "/"+binHealthcheck || !inImage[argv[0]] {
		t.Fatalf("Dockerfile: HEALTHCHECK runs %s: want /healthcheck, copied into the image (no curl in distroless)", argv[0])
	}
	checkFlags(t, "Dockerfile HEALTHCHECK", binHealthcheck, argv[1:len(argv)-1])
	url := argv[len(argv)-1]
	if !strings.HasSuffix(url, "/healthz") {
		t.Errorf("Dockerfile: HEALTHCHECK probes %s: want /healthz", url)
	}
	checkRoute(t, "Dockerfile HEALTHCHECK", "/healthz")
	if got, want := portOf(t, "HEALTHCHECK", url), httpPort(t, "Dockerfile CMD", cmdFlags); got != want {
		t.Errorf("Dockerfile: HEALTHCHECK probes port %d, the dispatcher listens on %d", got, want)
	}
}

// ---- docker-compose.yml ----

type composeService struct {
	Image       string      `yaml:"image"`
	Entrypoint  []string    `yaml:"entrypoint"`
	Command     interface{} `yaml:"command"`
	Ports       []string    `yaml:"ports"`
	Environment map[string]string
	DependsOn   []string `yaml:"depends_on"`
	Build       struct {
		Context, Dockerfile, Target string
	} `yaml:"build"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

func (s composeService) commandList(t *testing.T, name string) []string {
	t.Helper()
	switch c := s.Command.(type) {
	case nil:
		return nil
	case []interface{}:
		out := make([]string, len(c))
		for i, v := range c {
			out[i] = toString(v)
		}
		return out
	}
	t.Fatalf("compose service %s: command must be a list", name)
	return nil
}

func toString(v interface{}) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	}
	return ""
}

// loadCompose parses deploy/docker-compose.yml. (The integration test
// TestComposeRegisterScript runs its registration script against etcd.)
func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return f
}

func TestCompose(t *testing.T) {
	f := loadCompose(t)
	var replicas, servers []string
	for name, s := range f.Services {
		bin := ""
		switch {
		case len(s.Entrypoint) == 0 && s.Image == "tcpdispatch:dev":
			bin = binDispatcher
			replicas = append(replicas, name)
		case len(s.Entrypoint) == 1 && s.Entrypoint[0] == "/"+binTCPServer:
			bin = binTCPServer
			servers = append(servers, name)
		case len(s.Entrypoint) == 1 && s.Entrypoint[0] == "/"+binTCPClient:
			bin = binTCPClient
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("compose %s: port %s: publish on 127.0.0.1 only", name, p)
			}
		}
		if bin == "" {
			continue
		}
		if s.Image != "tcpdispatch:dev" {
			t.Errorf("compose %s: image %s, want tcpdispatch:dev (the Dockerfile's runtime stage)", name, s.Image)
		}
		checkFlags(t, "compose "+name, bin, s.commandList(t, name))
		if len(s.Healthcheck.Test) > 0 {
			checkFlags(t, "compose "+name+" healthcheck", binHealthcheck, s.Healthcheck.Test[2:len(s.Healthcheck.Test)-1])
		}
	}
	slices.Sort(replicas)
	slices.Sort(servers)
	if len(replicas) != 3 || len(servers) != 5 {
		t.Fatalf("compose: want 3 replicas and 5 tcp-servers, got %v and %v", replicas, servers)
	}

	// The three replicas form one cluster: each is named in every
	// --initial-cluster with the peer URL it advertises.
	var cluster []string
	for _, name := range replicas {
		s := f.Services[name]
		fl := parseArgs(s.commandList(t, name))
		if fl["name"] != name {
			t.Errorf("compose %s: --name %q, want the service name", name, fl["name"])
		}
		cluster = append(cluster, name+"="+fl["initial-advertise-peer-urls"])
		if !strings.HasPrefix(fl["advertise-client-urls"], "http://"+name+":") {
			t.Errorf("compose %s: --advertise-client-urls %s: want the service name", name, fl["advertise-client-urls"])
		}
		if len(s.Ports) != 1 || !strings.HasSuffix(s.Ports[0], ":"+strconv.Itoa(httpPort(t, name, fl))) {
			t.Errorf("compose %s: ports %v: want the HTTP port %d published", name, s.Ports, httpPort(t, name, fl))
		}
	}
	for _, name := range replicas {
		fl := parseArgs(f.Services[name].commandList(t, name))
		got := strings.Split(fl["initial-cluster"], ",")
		slices.Sort(got)
		if !slices.Equal(got, cluster) {
			t.Errorf("compose %s: --initial-cluster %v, want %v", name, got, cluster)
		}
	}

	// The one-shot registers every tcp-server at the address and status
	// URL it listens on.
	reg, ok := f.Services["register"]
	if !ok {
		t.Fatal("compose: no register service")
	}
	script := strings.Join(reg.commandList(t, "register"), "\n")
	for _, name := range servers {
		fl := parseArgs(f.Services[name].commandList(t, name))
		if fl["id"] != name {
			t.Errorf("compose %s: --id %q, want the service name", name, fl["id"])
		}
		if fl["status-listen"] == "" {
			t.Errorf("compose %s: no --status-listen", name)
		}
		addr := expandRegister(t, script, name)
		if want := name + ":" + strconv.Itoa(portOf(t, name, fl["listen"])); !strings.Contains(addr, "/tcpdispatch/servers/"+name+"/addr "+want) {
			t.Errorf("compose: register does not put %s/addr %s:\n%s", name, want, addr)
		}
		if want := "http://" + name + ":" + strconv.Itoa(portOf(t, name, fl["status-listen"])) + "/status"; !strings.Contains(addr, "/tcpdispatch/servers/"+name+"/status-url "+want) {
			t.Errorf("compose: register does not put %s/status-url %s", name, want)
		}
	}
	for _, dep := range []string{"d1", "d2", "d3"} {
		if !slices.Contains(reg.DependsOn, dep) {
			t.Errorf("compose register: does not depend on %s", dep)
		}
	}
	checkRoute(t, "compose healthcheck", "/healthz")
}

// expandRegister returns the register script's output lines for one
// server, by evaluating its printf line with i set (the loop runs i over
// 1..5). It avoids a shell: only printf's %s and \n are used.
func expandRegister(t *testing.T, script, server string) string {
	t.Helper()
	i := strings.TrimPrefix(server, "tcp")
	m := regexp.MustCompile(`printf '([^']*)'((?: \$\$i)+)`).FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("compose register: no printf line in:\n%s", script)
	}
	out := strings.ReplaceAll(m[1], "%s", i)
	return strings.ReplaceAll(out, `\n`, "\n")
}

// ---- systemd ----

// unitFile is a parsed systemd unit: section → key → values in order.
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	sec := ""
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			sec = line[1 : len(line)-1]
			u[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" {
				t.Fatalf("%s:%d: not key=value in a section: %s", path, n+1, line)
			}
			u[sec][k] = append(u[sec][k], v)
		}
	}
	return u
}

func (u unitFile) last(sec, key string) (string, bool) {
	v := u[sec][key]
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

func TestSystemdUnit(t *testing.T) {
	path := filepath.Join("systemd", "tcpdispatch.service")
	u := parseUnit(t, path)
	want := map[string]string{
		"Type": "notify", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "CapabilityBoundingSet": "",
		"StateDirectory": "tcpdispatch", "Restart": "on-failure",
	}
	for k, v := range want {
		if got, ok := u.last("Service", k); !ok || got != v {
			t.Errorf("%s: %s=%q, want %q", path, k, got, v)
		}
	}
	if dyn, _ := u.last("Service", "DynamicUser"); dyn != "yes" {
		if user, _ := u.last("Service", "User"); user == "" || user == "root" {
			t.Errorf("%s: set DynamicUser=yes or a non-root User=", path)
		}
	}
	if v, _ := u.last("Service", "LimitNOFILE"); v == "" {
		t.Errorf("%s: no LimitNOFILE", path)
	} else if n, err := strconv.Atoi(v); err != nil || n < 65536 {
		t.Errorf("%s: LimitNOFILE=%s: want a number >= 65536", path, v)
	}
	if v, _ := u.last("Service", "WatchdogSec"); v == "" {
		t.Errorf("%s: no WatchdogSec (the dispatcher pings the watchdog)", path)
	}

	start, _ := u.last("Service", "ExecStart")
	argv := strings.Fields(start)
	if len(argv) == 0 || filepath.Base(argv[0]) != binDispatcher {
		t.Fatalf("%s: ExecStart=%s: want the dispatcher", path, start)
	}
	fl := checkFlags(t, path+" ExecStart", binDispatcher, argv[1:])
	state, _ := u.last("Service", "StateDirectory")
	for _, f := range []string{"data-dir", "snapshot-file"} {
		if !strings.HasPrefix(fl[f], "/var/lib/"+state+"/") {
			t.Errorf("%s: --%s %s: must live in StateDirectory (/var/lib/%s), the only writable path", path, f, fl[f], state)
		}
	}

	// The environment file example in the comments names real flags.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	known := flagsOf(t, binDispatcher)
	envs := regexp.MustCompile(`TCPDISPATCH_([A-Z_]+)=`).FindAllStringSubmatch(string(b), -1)
	if len(envs) == 0 {
		t.Errorf("%s: no TCPDISPATCH_* example", path)
	}
	for _, m := range envs {
		if name := strings.ToLower(strings.ReplaceAll(m[1], "_", "-")); !known[name] {
			t.Errorf("%s: TCPDISPATCH_%s: the dispatcher has no flag --%s", path, m[1], name)
		}
	}

	t.Run("systemd-analyze", func(t *testing.T) {
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze is not installed; the unit was checked by parsing only")
		}
		// verify checks that ExecStart is executable: point it at a real
		// build of the dispatcher.
		dir := t.TempDir()
		unit := strings.Replace(string(b), "ExecStart="+argv[0], "ExecStart="+filepath.Join(binaries(t), binDispatcher), 1)
		upath := filepath.Join(dir, "tcpdispatch.service")
		if err := os.WriteFile(upath, []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(analyze, "verify", upath)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		// verify exits non-zero on fatal errors only; an unknown key or a
		// bad value in a known one is printed and ignored, so any line
		// about the unit fails the test.
		var bad []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "tcpdispatch.service") {
				bad = append(bad, line)
			}
		}
		if err != nil || len(bad) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}

// ---- Kubernetes ----

type k8sProbe struct {
	HTTPGet struct {
		Path string      `yaml:"path"`
		Port interface{} `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom struct {
			FieldRef struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
}

type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		// Service
		ClusterIP                string      `yaml:"clusterIP"`
		PublishNotReadyAddresses bool        `yaml:"publishNotReadyAddresses"`
		Selector                 interface{} `yaml:"selector"`
		Ports                    []struct {
			Name       string      `yaml:"name"`
			Port       int         `yaml:"port"`
			TargetPort interface{} `yaml:"targetPort"`
		} `yaml:"ports"`
		// PodDisruptionBudget (selector.matchLabels) and StatefulSet
		MaxUnavailable interface{} `yaml:"maxUnavailable"`
		ServiceName    string      `yaml:"serviceName"`
		Replicas       int         `yaml:"replicas"`
		Template       struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				SecurityContext struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
				} `yaml:"securityContext"`
				Containers []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// selector returns spec.selector of a Service, or spec.selector.matchLabels
// of a StatefulSet or PodDisruptionBudget.
func (o k8sObject) selector() map[string]string {
	sel, _ := o.Spec.Selector.(map[interface{}]interface{})
	if ml, ok := sel["matchLabels"].(map[interface{}]interface{}); ok {
		sel = ml
	}
	out := map[string]string{}
	for k, v := range sel {
		out[toString(k)] = toString(v)
	}
	return out
}

func loadK8s(t *testing.T) []k8sObject {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no kubernetes/*.yaml: %v", err)
	}
	var objs []k8sObject
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var o k8sObject
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				t.Fatalf("%s document %d: %v", p, i, err)
			}
			if o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s document %d: no kind or metadata.name", p, i)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

func subset(sub, of map[string]string) bool {
	if len(sub) == 0 {
		return false
	}
	for k, v := range sub {
		if of[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetes(t *testing.T) {
	objs := loadK8s(t)
	byKind := map[string][]k8sObject{}
	for _, o := range objs {
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}
	if len(byKind["StatefulSet"]) != 1 || len(byKind["PodDisruptionBudget"]) != 1 || len(byKind["Service"]) != 2 {
		t.Fatalf("want one StatefulSet, one PodDisruptionBudget and two Services, got %v", byKind)
	}
	sts := byKind["StatefulSet"][0]
	pod := sts.Spec.Template.Metadata.Labels
	ns := sts.Metadata.Namespace
	if !subset(sts.selector(), pod) {
		t.Errorf("StatefulSet: selector %v does not select its pods %v", sts.selector(), pod)
	}
	if sts.Spec.Replicas != 3 {
		t.Errorf("StatefulSet: %d replicas, want 3 (a three-member embedded etcd)", sts.Spec.Replicas)
	}
	if !sts.Spec.Template.Spec.SecurityContext.RunAsNonRoot {
		t.Error("StatefulSet: runAsNonRoot is not set")
	}

	var headless, client *k8sObject
	for i, s := range byKind["Service"] {
		if s.Spec.ClusterIP == "None" {
			headless = &byKind["Service"][i]
		} else {
			client = &byKind["Service"][i]
		}
	}
	if headless == nil || client == nil {
		t.Fatal("want a headless Service (clusterIP: None) and a client Service")
	}
	if sts.Spec.ServiceName != headless.Metadata.Name {
		t.Errorf("StatefulSet: serviceName %s, want the headless service %s", sts.Spec.ServiceName, headless.Metadata.Name)
	}
	if !headless.Spec.PublishNotReadyAddresses {
		t.Error("headless Service: publishNotReadyAddresses must be true, or members cannot find each other before etcd has a quorum")
	}
	for _, s := range []*k8sObject{headless, client} {
		if !subset(s.selector(), pod) {
			t.Errorf("Service %s: selector %v does not select the pods %v", s.Metadata.Name, s.selector(), pod)
		}
		if s.Metadata.Namespace != ns {
			t.Errorf("Service %s: namespace %q, the StatefulSet's is %q", s.Metadata.Name, s.Metadata.Namespace, ns)
		}
	}
	pdb := byKind["PodDisruptionBudget"][0]
	if !subset(pdb.selector(), pod) {
		t.Errorf("PodDisruptionBudget: selector %v does not select the pods", pdb.selector())
	}
	if toString(pdb.Spec.MaxUnavailable) != "1" {
		t.Errorf("PodDisruptionBudget: maxUnavailable %v, want 1 (quorum of 3 survives one)", pdb.Spec.MaxUnavailable)
	}

	cs := sts.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("StatefulSet: want one container, got %d", len(cs))
	}
	c := cs[0]
	if c.Image != "tcpdispatch:dev" {
		t.Errorf("StatefulSet: image %s, want tcpdispatch:dev (the Dockerfile's runtime stage)", c.Image)
	}
	fl := checkFlags(t, "StatefulSet args", binDispatcher, c.Args)
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	resolve := func(what string, p interface{}) int {
		if n, ok := p.(int); ok {
			return n
		}
		n, ok := ports[toString(p)]
		if !ok {
			t.Errorf("%s: port %v is not a container port", what, p)
		}
		return n
	}
	hp := httpPort(t, "StatefulSet", fl)
	for _, pr := range []struct {
		name  string
		probe *k8sProbe
		path  string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if pr.probe == nil {
			t.Errorf("StatefulSet: no %s", pr.name)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path {
			t.Errorf("StatefulSet: %s path %s, want %s", pr.name, pr.probe.HTTPGet.Path, pr.path)
		}
		checkRoute(t, pr.name, pr.path)
		if got := resolve(pr.name, pr.probe.HTTPGet.Port); got != hp {
			t.Errorf("StatefulSet: %s port %d, the dispatcher listens on %d", pr.name, got, hp)
		}
	}
	for _, p := range client.Spec.Ports {
		if got := resolve("client Service", p.TargetPort); got != hp {
			t.Errorf("client Service: targetPort %v is %d, the dispatcher listens on %d", p.TargetPort, got, hp)
		}
	}
	for _, f := range []struct{ flag, port string }{{"listen-client-urls", "etcd-client"}, {"listen-peer-urls", "etcd-peer"}} {
		if got := portOf(t, f.flag, fl[f.flag]); got != ports[f.port] {
			t.Errorf("StatefulSet: --%s port %d, container port %s is %d", f.flag, got, f.port, ports[f.port])
		}
	}

	// Member names and URLs come from the pod DNS names of the headless
	// service: <sts>-<i>.<service>.<namespace>.svc.cluster.local.
	podEnv := ""
	for _, e := range c.Env {
		if e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
			podEnv = e.Name
		}
	}
	if podEnv == "" {
		t.Fatal("StatefulSet: no env var from metadata.name (the pod name)")
	}
	dns := func(pod string) string {
		return pod + "." + headless.Metadata.Name + "." + ns + ".svc.cluster.local"
	}
	self := "$(" + podEnv + ")"
	if fl["name"] != self {
		t.Errorf("StatefulSet: --name %s, want %s", fl["name"], self)
	}
	if want := "http://" + dns(self) + ":" + strconv.Itoa(ports["etcd-peer"]); fl["initial-advertise-peer-urls"] != want {
		t.Errorf("StatefulSet: --initial-advertise-peer-urls %s, want %s", fl["initial-advertise-peer-urls"], want)
	}
	if want := "http://" + dns(self) + ":" + strconv.Itoa(ports["etcd-client"]); fl["advertise-client-urls"] != want {
		t.Errorf("StatefulSet: --advertise-client-urls %s, want %s", fl["advertise-client-urls"], want)
	}
	var cluster []string
	for i := range sts.Spec.Replicas {
		p := sts.Metadata.Name + "-" + strconv.Itoa(i)
		cluster = append(cluster, p+"=http://"+dns(p)+":"+strconv.Itoa(ports["etcd-peer"]))
	}
	if got := fl["initial-cluster"]; got != strings.Join(cluster, ",") {
		t.Errorf("StatefulSet: --initial-cluster\n %s\nwant\n %s", got, strings.Join(cluster, ","))
	}
}

// ---- README ----

var (
	shBlock = regexp.MustCompile("(?ms)^```sh\n(.*?)^```")
	ipv4    = regexp.MustCompile(`\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b`)
)

// TestReadmeLoopbackOnly: every address in a shell example of the README
// is a loopback one, so copying an example never reaches into someone's
// network. Templates for real deployments use placeholder host names.
func TestReadmeLoopbackOnly(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := shBlock.FindAllSubmatch(b, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md: no ```sh blocks found")
	}
	for _, m := range blocks {
		for _, ip := range ipv4.FindAll(m[1], -1) {
			if a := net.ParseIP(string(ip)); a != nil && !a.IsLoopback() && !a.IsUnspecified() {
				t.Errorf("README.md: shell example uses %s, not a loopback address:\n%s", ip, firstLineWith(m[1], ip))
			}
		}
	}
}

func firstLineWith(b, sub []byte) string {
	r := bufio.NewReader(bytes.NewReader(b))
	for {
		line, err := r.ReadBytes('\n')
		if bytes.Contains(line, sub) {
			return string(line)
		}
		if err == io.EOF {
			return ""
		}
	}
}
