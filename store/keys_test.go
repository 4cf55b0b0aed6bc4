package store

import (
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "10.0.0.1:9000", want: "10.0.0.1:9000"},
		{in: "host.example:1", want: "host.example:1"},
		{in: "[::1]:65535", want: "[::1]:65535"},
		{in: "  10.0.0.1:9000\n", want: "10.0.0.1:9000"},
		{in: "", wantErr: true},
		{in: "10.0.0.1", wantErr: true},         // no port
		{in: "::1", wantErr: true},              // IPv6 without brackets and port
		{in: "10.0.0.1:", wantErr: true},        // empty port
		{in: ":9000", wantErr: true},            // empty host
		{in: "[]:9000", wantErr: true},          // empty bracketed host
		{in: "10.0.0.1:0", wantErr: true},       // port 0
		{in: "10.0.0.1:65536", wantErr: true},   // port too large
		{in: "10.0.0.1:70000", wantErr: true},   // port too large
		{in: "10.0.0.1:-1", wantErr: true},      // negative port
		{in: "10.0.0.1:http", wantErr: true},    // named port
		{in: "10.0.0.1:90:00", wantErr: true},   // too many colons
		{in: "10.0.0.1 :9000 x", wantErr: true}, // garbage
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := keyspace.ParseAddr(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("keyspace.ParseAddr(%q) = %q, nil; want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("keyspace.ParseAddr(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseWeight(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "1", want: 1},
		{in: "100", want: 100},
		{in: "10000", want: keyspace.MaxWeight},
		{in: " 50 ", want: 50},
		{in: "50\n", want: 50},
		{in: "+7", want: 7},
		{in: "", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "10001", wantErr: true},
		{in: "1.5", wantErr: true},
		{in: "1e3", wantErr: true},
		{in: "99999999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := keyspace.ParseWeight(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("keyspace.ParseWeight(%q) = %d, nil; want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("keyspace.ParseWeight(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestNewKeys(t *testing.T) {
	tests := []struct {
		prefix     string
		wantPrefix string
		wantErr    bool
	}{
		{prefix: "/tcpdispatch/", wantPrefix: "/tcpdispatch/"},
		{prefix: "/tcpdispatch", wantPrefix: "/tcpdispatch/"},
		{prefix: "/", wantPrefix: "/"},
		{prefix: "/a/b", wantPrefix: "/a/b/"},
		{prefix: "", wantErr: true},
		{prefix: "tcpdispatch/", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			k, err := keyspace.New(tt.prefix)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("keyspace.New(%q) = %q, nil; want an error", tt.prefix, k.Prefix())
				}
				return
			}
			if err != nil || k.Prefix() != tt.wantPrefix {
				t.Fatalf("keyspace.New(%q) = %q, %v; want %q, nil", tt.prefix, k.Prefix(), err, tt.wantPrefix)
			}
		})
	}
}

func TestKeysLayout(t *testing.T) {
	k, err := keyspace.New("/p")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ got, want string }{
		{k.Servers(), "/p/servers/"},
		{k.Server("tcp1"), "/p/servers/tcp1/"},
		{k.ServerField("tcp1", keyspace.FieldAddr), "/p/servers/tcp1/addr"},
		{k.ServerField("tcp1", keyspace.FieldWeight), "/p/servers/tcp1/weight"},
		{k.Strategy(), "/p/config/strategy"},
		{k.HealthPrefix(), "/p/health/"},
		{k.Health("tcp1"), "/p/health/tcp1"},
		{k.Election(), "/p/election"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestKeysParse(t *testing.T) {
	k, err := keyspace.New("/p/")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key       string
		kind      keyspace.Kind
		id, field string
	}{
		{"/p/servers/tcp1/addr", keyspace.KindServerField, "tcp1", "addr"},
		{"/p/servers/tcp1/weight", keyspace.KindServerField, "tcp1", "weight"},
		{"/p/servers/tcp1/status-url", keyspace.KindServerField, "tcp1", "status-url"},
		{"/p/config/strategy", keyspace.KindStrategy, "", ""},
		{"/p/health/tcp1", keyspace.KindHealth, "tcp1", ""},
		{"/p/election/694d7c1b2a3e", keyspace.KindElection, "", ""},
		{"/p/election/", keyspace.KindElection, "", ""},

		{"/other/servers/tcp1/addr", keyspace.KindUnknown, "", ""}, // outside the prefix
		{"/pservers/tcp1/addr", keyspace.KindUnknown, "", ""},      // prefix must match with its slash
		{"/p/servers/tcp1", keyspace.KindInvalid, "", ""},          // no field
		{"/p/servers/tcp1/", keyspace.KindInvalid, "", ""},         // empty field
		{"/p/servers//addr", keyspace.KindInvalid, "", ""},         // empty id
		{"/p/servers/tcp 1/addr", keyspace.KindInvalid, "", ""},    // invalid id
		{"/p/servers/tcp1/addr/x", keyspace.KindInvalid, "", ""},   // nested field
		{"/p/health/", keyspace.KindInvalid, "", ""},               // empty id
		{"/p/health/a/b", keyspace.KindInvalid, "", ""},            // invalid id
		{"/p/config/other", keyspace.KindInvalid, "", ""},
		{"/p/config/strategy/x", keyspace.KindInvalid, "", ""},
		{"/p/", keyspace.KindUnknown, "", ""},
		{"", keyspace.KindUnknown, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			kind, id, field := parseKey(k, tt.key)
			if kind == keyspace.KindInvalid && tt.kind == keyspace.KindInvalid {
				if field == "" {
					t.Fatalf("parse(%q): invalid without a reason", tt.key)
				}
				return
			}
			if kind != tt.kind || id != tt.id || field != tt.field {
				t.Fatalf("parse(%q) = %v, %q, %q; want %v, %q, %q", tt.key, kind, id, field, tt.kind, tt.id, tt.field)
			}
		})
	}
}

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"10.0.0.1:9000", "[::1]:1", ":0", "a:65536", " h:1 ", "", "[", "%", "a:+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := keyspace.ParseAddr(in)
		if err != nil {
			return
		}
		// An accepted address must be what net.Dial understands: host:port
		// with a non-empty host and a port in 1..65535, and stable.
		again, err := keyspace.ParseAddr(got)
		if err != nil || again != got {
			t.Fatalf("keyspace.ParseAddr(%q) = %q, but keyspace.ParseAddr of that = %q, %v", in, got, again, err)
		}
		if got != strings.TrimSpace(got) {
			t.Fatalf("keyspace.ParseAddr(%q) = %q keeps surrounding space", in, got)
		}
	})
}

func FuzzParseWeight(f *testing.F) {
	for _, s := range []string{"0", "100", "10000", "10001", "-1", " 50 ", "abc", "", "+0", "0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := keyspace.ParseWeight(in)
		if err != nil {
			return
		}
		if got < 0 || got > keyspace.MaxWeight {
			t.Fatalf("keyspace.ParseWeight(%q) = %d, outside 0..%d", in, got, keyspace.MaxWeight)
		}
	})
}
