package main

import (
	"net/netip"
	"reflect"
	"testing"
)

// TestSecurityFlags checks the flags exist, parse into the
// configuration, and that bad values and bad combinations exit 2.
func TestSecurityFlags(t *testing.T) {
	fs, o := newFlags()
	for _, name := range []string{"listen-admin", "http-cert-file", "http-key-file", "admin-cert-file", "admin-key-file",
		"admin-client-ca", "trusted-proxies", "http-proxy-protocol", "rate-limit", "rate-burst", "allowed-targets"} {
		if fs.Lookup(name) == nil {
			t.Errorf("flag --%s is missing", name)
		}
	}
	if err := fs.Parse([]string{"--trusted-proxies", "10.0.0.0/8, 192.0.2.7,2001:db8::/32", "--allowed-targets", "10.1.2.3/16",
		"--rate-limit", "2.5", "--rate-burst", "5", "--listen-admin", "127.0.0.1:9090"}); err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32")}
	if got := o.cfg.API.TrustedProxies; !reflect.DeepEqual(got, want) {
		t.Errorf("trusted proxies = %v; want %v", got, want)
	}
	if got := o.cfg.AllowedTargets; len(got) != 1 || got[0] != netip.MustParsePrefix("10.1.0.0/16") {
		t.Errorf("allowed targets = %v; want [10.1.0.0/16]", got)
	}
	if o.cfg.API.RateLimit != 2.5 || o.cfg.API.RateBurst != 5 || o.cfg.ListenAdmin != "127.0.0.1:9090" {
		t.Errorf("config = %+v", o.cfg.API.Security)
	}
	for _, args := range [][]string{
		{"--trusted-proxies", "10.0.0.0/33"},
		{"--allowed-targets", "nonsense"},
		{"--http-proxy-protocol"},
		{"--http-cert-file", "/x.crt"},
		{"--admin-client-ca", "/ca.crt"},
		{"--rate-limit", "-1"},
		{"--listen-http", "127.0.0.1:1", "--listen-admin", "127.0.0.1:1"},
	} {
		if code := run(args); code != 2 {
			t.Errorf("run(%q) exit code %d, want 2", args, code)
		}
	}
}
