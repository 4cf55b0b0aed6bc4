package api

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tcpdispatch/tcpdispatch"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// fasthttp refreshes its Date header line in one goroutine per
		// process, started by the first response and never stopped.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
}

// parse calls parseQuery with a fresh query and buffer, as getTCPIP does.
func parse(raw string) (query, []string, error) {
	var (
		q   query
		buf [8]string
	)
	exclude, err := parseQuery(raw, &q, buf[:])
	return q, exclude, err
}

func TestParseQuery(t *testing.T) {
	ids := func(n int) string {
		var b []string
		for i := range n {
			b = append(b, fmt.Sprintf("s%d", i))
		}
		return strings.Join(b, ",")
	}
	tests := []struct {
		name    string
		raw     string
		key     string
		text    bool
		n       int
		exclude []string
		wantErr string // substring of the error; empty means no error
	}{
		{name: "empty", raw: "", n: 1},
		{name: "key", raw: "key=user-42", key: "user-42", n: 1},
		{name: "escaped key", raw: "key=a%20b%2Fc", key: "a b/c", n: 1},
		{name: "plus in key is a space", raw: "key=a+b", key: "a b", n: 1},
		{name: "bad escape in key", raw: "key=%zz", wantErr: "bad query"},
		{name: "key of 256 bytes", raw: "key=" + strings.Repeat("k", 256), key: strings.Repeat("k", 256), n: 1},
		{name: "key of 257 bytes", raw: "key=" + strings.Repeat("k", 257), wantErr: "key longer than 256"},
		{name: "repeated key takes the last", raw: "key=a&key=b", key: "b", n: 1},
		{name: "escaped parameter name", raw: "k%65y=v", key: "v", n: 1},
		{name: "format json", raw: "format=json", n: 1},
		{name: "format empty", raw: "format=", n: 1},
		{name: "format text", raw: "format=text", text: true, n: 1},
		{name: "format text then json", raw: "format=text&format=json", n: 1},
		{name: "format bad", raw: "format=xml", wantErr: "format must be json or text"},
		{name: "format is case sensitive", raw: "format=TEXT", wantErr: "format"},
		{name: "n 1", raw: "n=1", n: 1},
		{name: "n 10", raw: "n=10", n: 10},
		{name: "n 3", raw: "n=3", n: 3},
		{name: "n 0", raw: "n=0", wantErr: "n must be an integer in 1..10"},
		{name: "n 11", raw: "n=11", wantErr: "n must be"},
		{name: "n negative", raw: "n=-1", wantErr: "n must be"},
		{name: "n empty", raw: "n=", wantErr: "n must be"},
		{name: "n word", raw: "n=three", wantErr: "n must be"},
		{name: "exclude", raw: "exclude=a,b", n: 1, exclude: []string{"a", "b"}},
		{name: "exclude trims and skips empty items", raw: "exclude=%20a%20,,%20,b,", n: 1, exclude: []string{"a", "b"}},
		{name: "exclude escaped comma", raw: "exclude=a%2Cb", n: 1, exclude: []string{"a", "b"}},
		{name: "exclude empty", raw: "exclude=", n: 1},
		{name: "exclude invalid id", raw: "exclude=a,b/c", wantErr: "exclude"},
		{name: "exclude id too long", raw: "exclude=" + strings.Repeat("x", tcpdispatch.MaxIDLen+1), wantErr: "exclude"},
		{name: "exclude 32 ids", raw: "exclude=" + ids(32), n: 1, exclude: strings.Split(ids(32), ",")},
		{name: "exclude 33 ids", raw: "exclude=" + ids(33), wantErr: "more than 32"},
		{name: "repeated exclude takes the last", raw: "exclude=a&exclude=b", n: 1, exclude: []string{"b"}},
		{name: "unknown parameters are ignored", raw: "_=12345&foo=bar&key=k&x", key: "k", n: 1},
		{name: "unknown parameter with escapes is ignored", raw: "foo=%zz&key=k", key: "k", n: 1},
		{name: "empty pairs", raw: "&&key=k&&", key: "k", n: 1},
		{name: "everything", raw: "key=k&exclude=a&format=text&n=2", key: "k", text: true, n: 2, exclude: []string{"a"}},
		{name: "bad escape in a parameter name", raw: "%zz=1", wantErr: "bad query"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, exclude, err := parse(tt.raw)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errBadQuery) {
					t.Fatalf("parseQuery(%q) = %v; want an error wrapping errBadQuery containing %q", tt.raw, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseQuery(%q) = %v", tt.raw, err)
			}
			if q.key != tt.key || q.text != tt.text || q.n != tt.n || !slices.Equal(exclude, tt.exclude) {
				t.Fatalf("parseQuery(%q) = key %q text %v n %d exclude %q; want key %q text %v n %d exclude %q",
					tt.raw, q.key, q.text, q.n, exclude, tt.key, tt.text, tt.n, tt.exclude)
			}
		})
	}
}

// TestParseQueryAllocs checks the claim that a common request parses
// without allocating.
func TestParseQueryAllocs(t *testing.T) {
	var (
		q   query
		buf [8]string
	)
	for _, raw := range []string{"", "key=user-42", "key=k&exclude=a,b,c&format=text&n=1"} {
		if n := testing.AllocsPerRun(100, func() {
			if _, err := parseQuery(raw, &q, buf[:]); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("parseQuery(%q) allocates %v times; want 0", raw, n)
		}
	}
}

func TestClientIP(t *testing.T) {
	tests := []struct{ remote, want string }{
		{"192.0.2.7:51234", "192.0.2.7"},
		{"127.0.0.1:1", "127.0.0.1"},
		{"[::1]:8080", "::1"},
		{"[2001:db8::7]:443", "2001:db8::7"},
		{"[fe80::1%eth0]:80", "fe80::1%eth0"},
		{"192.0.2.7", "192.0.2.7"}, // no port
		{"", ""},
	}
	for _, tt := range tests {
		if got := clientIP(tt.remote); got != tt.want {
			t.Errorf("clientIP(%q) = %q; want %q", tt.remote, got, tt.want)
		}
	}
	var ip string
	if n := testing.AllocsPerRun(100, func() { ip = clientIP("[2001:db8::7]:443") }); n != 0 || ip != "2001:db8::7" {
		t.Errorf("clientIP allocates %v times (got %q); want 0", n, ip)
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"", "key=a", "key=%zz", "exclude=a,,b", "exclude=" + strings.Repeat("a,", 40), "n=10", "n=-0",
		"format=text&n=3&exclude=x%2Cy", "&&=&=", "%", "key=%E2%82%AC", "exclude=%00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, exclude, err := parse(raw)
		if err != nil {
			if !errors.Is(err, errBadQuery) {
				t.Fatalf("parseQuery(%q) = %v; want errBadQuery", raw, err)
			}
			return
		}
		if q.n < 1 || q.n > tcpdispatch.MaxN || len(q.key) > tcpdispatch.MaxKeyLen || len(exclude) > tcpdispatch.MaxExclude {
			t.Fatalf("parseQuery(%q) accepted out-of-range values: n %d, key %d bytes, %d excluded", raw, q.n, len(q.key), len(exclude))
		}
		for _, id := range exclude {
			if tcpdispatch.ValidateID(id) != nil {
				t.Fatalf("parseQuery(%q) accepted invalid exclude id %q", raw, id)
			}
		}
	})
}
