package main

import (
	"flag"
	"testing"
	"time"
)

func TestApplyEnv(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	listen := fs.String("listen-http", ":8080", "")
	ttl := fs.Duration("leader-ttl", 3*time.Second, "")
	name := fs.String("name", "default", "")
	if err := fs.Parse([]string{"--name", "fromflag"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"TCPDISPATCH_LISTEN_HTTP": ":9999",
		"TCPDISPATCH_LEADER_TTL":  "2s",
		"TCPDISPATCH_NAME":        "fromenv",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := applyEnv(fs, lookup); err != nil {
		t.Fatal(err)
	}
	if *listen != ":9999" || *ttl != 2*time.Second {
		t.Errorf("env not applied: listen %q ttl %v", *listen, *ttl)
	}
	if *name != "fromflag" {
		t.Errorf("a flag on the command line must win over the environment, got %q", *name)
	}
	env["TCPDISPATCH_LEADER_TTL"] = "soon"
	if err := applyEnv(fs, lookup); err == nil {
		t.Error("a malformed environment value must be an error")
	}
}

// TestContractFlags checks that every flag of the documented contract
// exists and that a bad flag value is rejected with exit code 2.
func TestContractFlags(t *testing.T) {
	fs, _ := newFlags()
	for _, name := range []string{"name", "listen-http", "prefix", "etcd-endpoints", "data-dir", "listen-client-urls",
		"advertise-client-urls", "listen-peer-urls", "initial-advertise-peer-urls", "initial-cluster",
		"initial-cluster-state", "initial-cluster-token", "leader-ttl", "probe-interval", "probe-timeout",
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
