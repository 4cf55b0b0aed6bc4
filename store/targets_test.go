package store

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

func TestTargetPolicyAllows(t *testing.T) {
	custom := NewTargetPolicy([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")})
	for _, tc := range []struct {
		p    TargetPolicy
		ip   string
		want bool
	}{
		{TargetPolicy{}, "10.1.2.3", true},
		{TargetPolicy{}, "127.0.0.1", true},
		{TargetPolicy{}, "169.254.169.254", false},
		{TargetPolicy{}, "::ffff:169.254.169.254", false},
		{TargetPolicy{}, "fe80::1", false},
		{TargetPolicy{}, "fe80::1%eth0", false},
		{TargetPolicy{}, "2001:db8::1", true},
		{custom, "10.1.2.3", true},
		{custom, "127.0.0.1", false},
		{custom, "169.254.169.254", false},
		{custom, "2001:db8::1", true},
		{custom, "::ffff:10.0.0.1", true},
	} {
		if got := tc.p.Allows(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("%v.Allows(%s) = %v; want %v", tc.p, tc.ip, got, tc.want)
		}
	}
}

// TestModelTargets checks that a disallowed addr or status-url is handled
// exactly like any invalid value: rejected, the last good value kept, the
// reason listed in the server's errors.
func TestModelTargets(t *testing.T) {
	m := newTestModel(t)
	m.targets = NewTargetPolicy([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	apply(t, m, []op{
		{key: testPrefix + "servers/a/addr", value: "10.0.0.1:9000", rev: 2},
		{key: testPrefix + "servers/a/addr", value: "192.0.2.1:9000", rev: 3, bad: true},
		{key: testPrefix + "servers/b/addr", value: "169.254.169.254:80", rev: 4, bad: true},
		{key: testPrefix + "servers/c/addr", value: "tcp.example.com:9000", rev: 5},
		{key: testPrefix + "servers/c/status-url", value: "http://10.0.0.3:9100/status?token=abc", rev: 6},
		{key: testPrefix + "servers/c/status-url", value: "http://192.0.2.3:9100/status?token=xyz", rev: 7, bad: true},
	})
	s := mustBuild(t, m)
	byID := map[string]*Server{}
	for _, srv := range s.Servers {
		byID[srv.ID] = srv
	}
	if a := byID["a"]; a.Addr != "10.0.0.1:9000" || !strings.Contains(strings.Join(a.Errors, ";"), "192.0.2.1") {
		t.Errorf("a = %+v; want the last good addr kept and the rejection listed", a)
	}
	if b := byID["b"]; b.Addr != "" || b.Eligible || len(b.Errors) == 0 {
		t.Errorf("b = %+v; want no addr and an error", b)
	}
	c := byID["c"]
	if c.Addr != "tcp.example.com:9000" {
		t.Errorf("c addr = %q; want the host name accepted (checked when dialled)", c.Addr)
	}
	if c.StatusURL != "http://10.0.0.3:9100/status?token=abc" {
		t.Errorf("c status-url = %q; want the last good one", c.StatusURL)
	}
	errs := strings.Join(c.Errors, ";")
	if !strings.Contains(errs, "not allowed") || strings.Contains(errs, "xyz") {
		t.Errorf("c errors = %q; want the rejection, with the query redacted", errs)
	}
}

func TestTargetPolicyControl(t *testing.T) {
	p := NewTargetPolicy([]netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Timeout: time.Second, Control: p.Control}
	_, err = d.Dial("tcp", ln.Addr().String())
	if !errors.Is(err, ErrTargetNotAllowed) {
		t.Fatalf("dial outside the policy = %v; want ErrTargetNotAllowed", err)
	}
	d.Control = TargetPolicy{}.Control
	conn, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial under the default policy: %v", err)
	}
	conn.Close()
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://h:1/status":              "http://h:1/status",
		"http://h:1/status?token=secret": "http://h:1/status?redacted",
		"https://u:p@h/s":                "https://redacted@h/s",
		"http://h/s?":                    "http://h/s?redacted",
		"http://h/s#frag":                "http://h/s",
		"http://h/%zz?token=secret":      "(unparsable URL redacted)",
		" http://h/s?token=secret ":      "http://h/s?redacted",
	} {
		if got := keyspace.RedactURL(in); got != want {
			t.Errorf("keyspace.RedactURL(%q) = %q; want %q", in, got, want)
		}
	}
	// A rejected status-url never quotes its secret.
	for _, v := range []string{"ftp://u:secret@h/s?token=secret", "http://u:secret@h/s", "http://h/%zz?token=secret"} {
		if _, err := keyspace.ParseStatusURL(v); err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("keyspace.ParseStatusURL(%q) = %v; want an error without the secret", v, err)
		}
	}
}
