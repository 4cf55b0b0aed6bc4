package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcpdispatch/tcpdispatch/cmd/internal/flagconf"
	"github.com/tcpdispatch/tcpdispatch/node"
)

// TestConfigPrecedence runs the dispatcher's real flag set through the
// layering: flag > TCPDISPATCH_* environment > --config file > default, and
// a misspelled variable or file key is an error naming it.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "dispatcher.yaml")
	if err := os.WriteFile(file, []byte(`
name: fromfile
listen-http: "127.0.0.1:7001"
leader-ttl: 4s
rise: 5
probe-timeout: 300ms
`), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(args, env []string) (*options, error) {
		fs, o := newFlags()
		l := flagconf.Bind(fs)
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		return o, l.Apply(env)
	}
	o, err := load([]string{"--config", file, "--name", "fromflag"},
		[]string{"TCPDISPATCH_NAME=fromenv", "TCPDISPATCH_LISTEN_HTTP=127.0.0.1:7002", "TCPDISPATCH_BIN=/ignored", "HOME=/root"})
	if err != nil {
		t.Fatal(err)
	}
	def := node.DefaultConfig()
	for _, c := range []struct{ what, got, want string }{
		{"flag over env and file", o.cfg.Name, "fromflag"},
		{"env over file", o.cfg.ListenHTTP, "127.0.0.1:7002"},
		{"file over default", o.cfg.LeaderTTL.String(), "4s"},
		{"file over default (int)", fmt.Sprint(o.cfg.Probe.Rise), "5"},
		{"default", fmt.Sprint(o.cfg.Probe.Fall), fmt.Sprint(def.Probe.Fall)},
		{"default (prefix)", o.cfg.Prefix, def.Prefix},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}
	// The file named by the environment works the same way.
	o, err = load(nil, []string{"TCPDISPATCH_CONFIG=" + file})
	if err != nil || o.cfg.Name != "fromfile" {
		t.Errorf("TCPDISPATCH_CONFIG: name %q, err %v", o.cfg.Name, err)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen-htpp: \":1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args, env []string
		want      string
	}{
		{nil, []string{"TCPDISPATCH_LISTEN_HTPP=:9"}, "TCPDISPATCH_LISTEN_HTPP"},
		{[]string{"--config", bad}, nil, `"listen-htpp"`},
		{nil, []string{"TCPDISPATCH_LEADER_TTL=soon"}, "TCPDISPATCH_LEADER_TTL"},
		{[]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, nil, "missing.yaml"},
	} {
		_, err := load(c.args, c.env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("args %q env %q: error %v, want one naming %s", c.args, c.env, err, c.want)
		}
	}
	if code := run([]string{"--version"}); code != 0 {
		t.Errorf("--version exit code %d", code)
	}
}

// TestContractFlags checks that every flag of the documented contract
// exists and that a bad flag value is rejected with exit code 2.
func TestContractFlags(t *testing.T) {
	fs, _ := newFlags()
	for _, name := range []string{"name", "listen-http", "prefix", "etcd-endpoints", "data-dir", "listen-client-urls",
		"advertise-client-urls", "listen-peer-urls", "initial-advertise-peer-urls", "initial-cluster",
		"initial-cluster-state", "initial-cluster-token", "leader-ttl", "leader-death-notice", "probe-interval", "probe-timeout",
		"rise", "fall", "log-format", "log-level",
		"cert-file", "key-file", "trusted-ca-file", "client-cert-auth", "auto-tls",
		"peer-cert-file", "peer-key-file", "peer-trusted-ca-file", "peer-client-cert-auth", "peer-auto-tls",
		"etcd-cacert", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file"} {
		if fs.Lookup(name) == nil {
			t.Errorf("flag --%s is missing", name)
		}
	}
	if code := run([]string{"--help"}); code != 0 {
		t.Fatalf("--help exit code %d", code)
	}
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"--leader-ttl", "soon"},
		{"--log-format", "xml"},
		{"--probe-timeout", "2s", "--probe-interval", "1s"},
		{"--etcd-password", "x"}, // no such flag: a password on the command line shows in ps
		{"--etcd-user", "u"},     // and no password anywhere
	} {
		if code := run(args); code != 2 {
			t.Errorf("run(%q) exit code %d, want 2", args, code)
		}
	}
}
