// Package flagconf gives every tcpdispatch binary the same three sources of
// settings besides its command line, for every flag it defines, including
// flags added later:
//
//	command line  >  TCPDISPATCH_<FLAG> environment  >  --config FILE (YAML)  >  default
//
// <FLAG> is the flag's name upper-cased with "-" as "_" (--listen-http is
// TCPDISPATCH_LISTEN_HTTP); a YAML key is the flag's name (listen-http:
// ":9090"), and a list value is joined with commas. The file is named by
// --config or TCPDISPATCH_CONFIG.
//
// Unknown names are errors, not silence: a TCPDISPATCH_ variable or a file
// key that names no flag of the binary fails the start and names the
// culprit (with the closest flag, when one is close). The only
// TCPDISPATCH_ variables that are not flags are listed in NotFlags.
//
// The package also adds --version (see internal/version).
package flagconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/tcpdispatch/tcpdispatch/internal/version"
)

// EnvPrefix starts the name of every environment variable read as a flag.
const EnvPrefix = "TCPDISPATCH_"

// NotFlags are the TCPDISPATCH_ variables that are not flags and so are
// not reported as misspelled: the integration harness's, and the etcd
// password (kept out of flags so it never shows in ps).
var NotFlags = []string{
	"TCPDISPATCH_BIN",
	"TCPDISPATCH_FULL_LOGS",
	"TCPDISPATCH_ETCD_PASSWORD",
}

// Names of the flags this package adds.
const (
	ConfigFlag  = "config"
	VersionFlag = "version"
)

// ErrUnknownName is wrapped by the error for a TCPDISPATCH_ variable or a
// config file key that names no flag.
var ErrUnknownName = errors.New("names no flag")

// Layers fills the flags of one flag set from the environment and a config
// file. Create it with Bind or BindPflag before parsing the command line,
// then call Apply after.
type Layers struct {
	flags      flagSet
	configPath string
	version    bool
	// aliases maps a flag to more environment variables read for it, in
	// order, after its own TCPDISPATCH_ one (etcdctl's ETCDCTL_*).
	aliases map[string][]string
}

// flagSet is what Layers needs of a flag package: every flag with whether
// the command line set it, and a way to set one.
type flagSet interface {
	visitAll(fn func(name string, onCommandLine bool))
	set(name, value string) error
}

// Bind adds --config and --version to fs (a standard library flag set).
func Bind(fs *flag.FlagSet) *Layers {
	l := &Layers{flags: goFlags{fs}}
	fs.StringVar(&l.configPath, ConfigFlag, "", "YAML file of flag settings (keys are flag names); flags and "+EnvPrefix+"* variables win over it")
	fs.BoolVar(&l.version, VersionFlag, false, "print the version and exit")
	return l
}

// BindPflag adds --config and --version to fs (a pflag set, as cobra uses).
func BindPflag(fs *pflag.FlagSet) *Layers {
	l := &Layers{flags: pFlags{fs}}
	fs.StringVar(&l.configPath, ConfigFlag, "", "YAML file of flag settings (keys are flag names); flags and "+EnvPrefix+"* variables win over it")
	fs.BoolVar(&l.version, VersionFlag, false, "print the version and exit")
	return l
}

// Alias makes Apply also read the environment variables envs, in order,
// for flag name when its own TCPDISPATCH_ variable is not set. A
// TCPDISPATCH_ alias is not reported as unknown.
func (l *Layers) Alias(name string, envs ...string) {
	if l.aliases == nil {
		l.aliases = make(map[string][]string)
	}
	l.aliases[name] = append(l.aliases[name], envs...)
}

// VersionRequested reports whether --version was given; check it before
// Apply, so that a bad environment does not hide the version.
func (l *Layers) VersionRequested() bool { return l.version }

// EnvName returns the environment variable of flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Apply sets every flag the command line did not set: from its
// environment variable in environ (os.Environ's "K=V" form) if present,
// else from the config file if it has the key. It returns every unknown
// name and bad value at once; the flags may then be partly set.
func (l *Layers) Apply(environ []string) error {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	onCmd := map[string]bool{}
	var names []string
	l.flags.visitAll(func(name string, cmd bool) {
		names = append(names, name)
		onCmd[name] = cmd
	})
	byEnv := make(map[string]string, len(names))
	for _, n := range names {
		byEnv[EnvName(n)] = n
		for _, e := range l.aliases[n] {
			byEnv[e] = n // an alias is a known name too
		}
	}

	envNames := sortedKeys(byEnv)
	var errs []error
	for _, k := range sortedKeys(env) {
		if !strings.HasPrefix(k, EnvPrefix) || byEnv[k] != "" || slices.Contains(NotFlags, k) {
			continue
		}
		errs = append(errs, fmt.Errorf("environment variable %s: %w%s", k, ErrUnknownName, suggest(k, envNames)))
	}

	fromEnv := map[string]bool{}
	for _, n := range names {
		if onCmd[n] || n == VersionFlag {
			continue
		}
		for _, e := range append([]string{EnvName(n)}, l.aliases[n]...) {
			v, ok := env[e]
			if !ok {
				continue
			}
			if err := l.flags.set(n, v); err != nil {
				errs = append(errs, fmt.Errorf("environment variable %s=%q: %w", e, v, err))
			}
			fromEnv[n] = true
			break
		}
	}
	if len(errs) > 0 || l.configPath == "" {
		return errors.Join(errs...)
	}

	file, err := readFile(l.configPath)
	if err != nil {
		return err
	}
	for _, k := range sortedKeys(file) {
		if !slices.Contains(names, k) || k == ConfigFlag || k == VersionFlag {
			errs = append(errs, fmt.Errorf("config file %s: key %q: %w%s", l.configPath, k, ErrUnknownName, suggest(k, names)))
			continue
		}
		if onCmd[k] || fromEnv[k] {
			continue
		}
		if err := l.flags.set(k, file[k]); err != nil {
			errs = append(errs, fmt.Errorf("config file %s: %s: %q: %w", l.configPath, k, file[k], err))
		}
	}
	return errors.Join(errs...)
}

// readFile parses a YAML mapping of flag names to scalars or lists of
// scalars into flag values.
func readFile(path string) (map[string]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	// Strict: a key given twice is an error, not a silent last-wins.
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
		return map[string]string{}, nil // an empty file sets nothing
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber() // keep numbers as written: 0.9 stays "0.9"
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("config file %s: want a mapping of flag names to values: %w", path, err)
	}
	out := make(map[string]string, len(doc))
	for k, v := range doc {
		var s string
		var err error
		if list, ok := v.([]any); ok {
			parts := make([]string, len(list))
			for i, e := range list {
				if parts[i], err = scalar(e); err != nil {
					break
				}
			}
			s = strings.Join(parts, ",")
		} else {
			s, err = scalar(v)
		}
		if err != nil {
			return nil, fmt.Errorf("config file %s: key %q: %w", path, k, err)
		}
		out[k] = s
	}
	return out, nil
}

func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return fmt.Sprint(v), nil
	case nil:
		return "", errors.New("no value (write \"\" for an empty string)")
	}
	return "", errors.New("want a string, number, boolean or a list of those")
}

// suggest returns ` (did you mean X?)` for the candidate closest to name
// within a small edit distance (the first of sorted candidates on a tie),
// else "".
func suggest(name string, candidates []string) string {
	best, bestD := "", 3 // at most two edits away
	for _, c := range candidates {
		if d := distance(name, c); d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// distance is the Levenshtein distance of a and b, counting a swap of two
// neighbours (HTPP for HTTP) as one edit.
func distance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

type goFlags struct{ fs *flag.FlagSet }

func (g goFlags) visitAll(fn func(string, bool)) {
	given := map[string]bool{}
	g.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	g.fs.VisitAll(func(f *flag.Flag) { fn(f.Name, given[f.Name]) })
}

func (g goFlags) set(name, value string) error { return g.fs.Lookup(name).Value.Set(value) }

type pFlags struct{ fs *pflag.FlagSet }

func (p pFlags) visitAll(fn func(string, bool)) {
	p.fs.VisitAll(func(f *pflag.Flag) { fn(f.Name, f.Changed) })
}

func (p pFlags) set(name, value string) error { return p.fs.Lookup(name).Value.Set(value) }

// ParseOrExit is the whole command line of a simple binary, in the manner
// of flag.ExitOnError: it binds the layers to fs, parses args, prints the
// version and exits 0 on --version, and exits 2 with the error on stderr
// when a flag, variable or file is bad.
func ParseOrExit(fs *flag.FlagSet, args []string) {
	l := Bind(fs)
	if err := fs.Parse(args); err != nil {
		os.Exit(2) // fs has printed the error and usage
	}
	if l.VersionRequested() {
		fmt.Println(version.Line(fs.Name()))
		os.Exit(0)
	}
	if err := l.Apply(os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", fs.Name(), err)
		os.Exit(2)
	}
}
