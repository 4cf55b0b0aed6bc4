package flagconf

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStdlibLayers(t *testing.T) {
	file := writeFile(t, "a: from-file\nb: from-file\nc: from-file\nd: []\nlist: [x, 'y', 3]\nratio: 0.9\nenabled: true\n")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	a := fs.String("a", "def", "")
	b := fs.String("b", "def", "")
	c := fs.String("c", "def", "")
	d := fs.String("d", "def", "")
	e := fs.String("e", "def", "")
	list := fs.String("list", "", "")
	ratio := fs.Float64("ratio", 0, "")
	on := fs.Bool("enabled", false, "")
	l := Bind(fs)
	if err := fs.Parse([]string{"--a", "from-flag", "--config", file}); err != nil {
		t.Fatal(err)
	}
	if err := l.Apply([]string{"TCPDISPATCH_A=from-env", "TCPDISPATCH_B=from-env", "OTHER=x"}); err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct{ got, want string }{
		{*a, "from-flag"}, {*b, "from-env"}, {*c, "from-file"}, {*d, ""}, {*e, "def"}, {*list, "x,y,3"},
	} {
		if g.got != g.want {
			t.Errorf("got %q, want %q", g.got, g.want)
		}
	}
	if *ratio != 0.9 || !*on {
		t.Errorf("ratio %v on %v", *ratio, *on)
	}
}

func TestPflagLayersAndAliases(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	ep := fs.String("endpoints", "def", "")
	user := fs.String("user", "", "")
	cacert := fs.String("cacert", "", "")
	l := BindPflag(fs)
	l.Alias("endpoints", "ETCDCTL_ENDPOINTS")
	l.Alias("user", "ETCDCTL_USER")
	l.Alias("cacert", "ETCDCTL_CACERT")
	if err := fs.Parse([]string{"--cacert", "flag.pem"}); err != nil {
		t.Fatal(err)
	}
	err := l.Apply([]string{"ETCDCTL_ENDPOINTS=http://127.0.0.1:1", "TCPDISPATCH_USER=own", "ETCDCTL_USER=alias", "ETCDCTL_CACERT=env.pem"})
	if err != nil {
		t.Fatal(err)
	}
	if *ep != "http://127.0.0.1:1" || *user != "own" || *cacert != "flag.pem" {
		t.Errorf("endpoints %q user %q cacert %q", *ep, *user, *cacert)
	}
}

// TestAliasIsKnown checks that a TCPDISPATCH_ alias is read and is not
// reported as misspelled.
func TestAliasIsKnown(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	ep := fs.String("endpoints", "def", "")
	l := BindPflag(fs)
	l.Alias("endpoints", "TCPDISPATCH_ETCD_ENDPOINTS")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Apply([]string{"TCPDISPATCH_ETCD_ENDPOINTS=x"}); err != nil || *ep != "x" {
		t.Errorf("alias: %q, %v", *ep, err)
	}
}

func TestUnknownNamesAndBadFiles(t *testing.T) {
	for _, c := range []struct {
		name, file string
		env        []string
		want       string
	}{
		{"misspelled env", "", []string{"TCPDISPATCH_LISTEN_HTPP=:1"}, "TCPDISPATCH_LISTEN_HTPP: names no flag (did you mean TCPDISPATCH_LISTEN_HTTP?)"},
		{"unknown env", "", []string{"TCPDISPATCH_NOPE=1"}, "TCPDISPATCH_NOPE: names no flag"},
		{"misspelled key", "listen_http: x\n", nil, `key "listen_http": names no flag (did you mean listen-http?)`},
		{"version in file", "version: true\n", nil, `key "version"`},
		{"nested", "listen-http: {a: 1}\n", nil, `key "listen-http"`},
		{"null", "listen-http:\n", nil, `key "listen-http": no value`},
		{"duplicate", "listen-http: a\nlisten-http: b\n", nil, "listen-http"},
		{"not a mapping", "- a\n- b\n", nil, "want a mapping"},
		{"list of lists", "listen-http: [[a]]\n", nil, `key "listen-http": want a string`},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.String("listen-http", "", "")
			l := Bind(fs)
			var args []string
			if c.file != "" {
				args = []string{"--config", writeFile(t, c.file)}
			}
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			err := l.Apply(c.env)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %s", err, c.want)
			}
			if strings.Contains(c.want, "names no flag") && !errors.Is(err, ErrUnknownName) {
				t.Errorf("error %v does not wrap ErrUnknownName", err)
			}
		})
	}
	// Names that are not flags but are known are not errors; an empty
	// file sets nothing.
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	l := Bind(fs)
	if err := fs.Parse([]string{"--config", writeFile(t, "# nothing\n")}); err != nil {
		t.Fatal(err)
	}
	if err := l.Apply(append([]string{"PATH=/bin"}, withValues(NotFlags)...)); err != nil {
		t.Errorf("known non-flag variables: %v", err)
	}
}

func withValues(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n + "=x"
	}
	return out
}

func TestDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"HTPP", "HTTP", 1}, {"", "abc", 3}, {"kitten", "sitting", 3}, {"same", "same", 0}} {
		if got := distance(c.a, c.b); got != c.want {
			t.Errorf("distance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
