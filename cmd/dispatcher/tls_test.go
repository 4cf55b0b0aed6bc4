package main

import (
	"strings"
	"testing"

	"github.com/tcpdispatch/tcpdispatch/internal/testpki"
)

// TestEtcdTLSFlagErrors checks that TLS settings that etcd would accept
// with a warning, or refuse deep in its start-up, are refused up front with
// a message naming the flags.
func TestEtcdTLSFlagErrors(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	p := ca.Issue(t, "d1")
	https := []string{"--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "https://127.0.0.1:2379"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"https without certificates", https, "give --cert-file and --key-file (or --auto-tls)"},
		{"certificates on http URLs", []string{"--cert-file", p.CertFile, "--key-file", p.KeyFile}, "has no https:// URL"},
		{"peer certificates on http URLs", []string{"--peer-cert-file", p.CertFile, "--peer-key-file", p.KeyFile}, "--listen-peer-urls"},
		{"https peer without certificates", []string{"--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls", "https://127.0.0.1:2380"}, "--peer-cert-file"},
		{"cert without key", append([]string{"--cert-file", p.CertFile}, https...), "must be given together"},
		{"client-cert-auth without CA", append([]string{"--cert-file", p.CertFile, "--key-file", p.KeyFile, "--client-cert-auth"}, https...), "needs --trusted-ca-file"},
		{"certificates and auto-tls", append([]string{"--cert-file", p.CertFile, "--key-file", p.KeyFile, "--auto-tls"}, https...), "not both"},
		{"advertise https, listen http", []string{"--advertise-client-urls", "https://127.0.0.1:2379"}, "has none"},
		{"member TLS in external mode", []string{"--etcd-endpoints", "https://127.0.0.1:2379", "--cert-file", p.CertFile, "--key-file", p.KeyFile}, "--etcd-cacert"},
		{"missing file", append([]string{"--cert-file", "/nonexistent.pem", "--key-file", p.KeyFile}, https...), "--cert-file"},
		{"client certificates for a plaintext etcd", []string{"--etcd-endpoints", "http://127.0.0.1:2379", "--etcd-cacert", ca.CertFile}, "plaintext http://"},
		{"password in the user", []string{"--etcd-endpoints", "https://127.0.0.1:2379", "--etcd-user", "u:p"}, "must not contain ':'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, o := newFlags()
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg := o.cfg
			cfg.EtcdEndpoints = nil
			if o.endpoints != "" {
				cfg.EtcdEndpoints = []string{o.endpoints}
			}
			if cfg.EtcdClient.User != "" {
				cfg.EtcdClient.Password = "p"
			}
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// The hardened shape validates.
	fs, o := newFlags()
	args := append([]string{"--cert-file", p.CertFile, "--key-file", p.KeyFile, "--trusted-ca-file", ca.CertFile, "--client-cert-auth",
		"--listen-peer-urls", "https://127.0.0.1:2380", "--initial-advertise-peer-urls", "https://127.0.0.1:2380",
		"--peer-cert-file", p.CertFile, "--peer-key-file", p.KeyFile, "--peer-trusted-ca-file", ca.CertFile, "--peer-client-cert-auth"}, https...)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := o.cfg.Validate(); err != nil {
		t.Fatalf("hardened flags: %v", err)
	}
}
