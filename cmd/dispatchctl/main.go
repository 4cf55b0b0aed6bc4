// Command dispatchctl is the operator's tool for tcpdispatch: it registers,
// re-weights, drains and removes tcp-servers, reads and sets the balancing
// settings, and shows the state of the replicas, all through etcd with the
// key layout of README.md, so it and etcdctl can be used interchangeably.
//
// Every value is checked with the parsers the replicas use before anything
// is written; a refused change writes nothing and exits 2. A change of
// several keys is one etcd transaction. See docs/DISPATCHCTL.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tcpdispatch/tcpdispatch/cmd/internal/flagconf"
	"github.com/tcpdispatch/tcpdispatch/internal/version"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Environ())
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1 // etcd or a replica could not be reached, or failed
	exitRefused = 2 // bad usage or input, or a change that does not apply: nothing was written
)

// refusedError marks an error caused by the operator's input; nothing was
// written.
type refusedError struct{ err error }

func (e refusedError) Error() string { return e.err.Error() }
func (e refusedError) Unwrap() error { return e.err }

// refuse returns a refusedError with a formatted message.
func refuse(format string, args ...any) error {
	return refusedError{fmt.Errorf(format, args...)}
}

// errVersionShown ends a run that printed the version.
var errVersionShown = errors.New("version shown")

// app is one run of the command: its flags, output and etcd client.
type app struct {
	out, errOut io.Writer
	environ     []string
	layers      *flagconf.Layers
	etcd        etcdFlags
	prefix      string
	output      string
	// dispatchers are the replicas' HTTP base URLs for status; a global
	// flag so that it can live in TCPDISPATCH_DISPATCHERS or --config.
	dispatchers []string
	now         func() time.Time

	ready bool
	keys  keyspace.Layout
	cli   *clientv3.Client
}

// run executes args and returns the exit code.
func run(ctx context.Context, args []string, out, errOut io.Writer, environ []string) int {
	a := &app{out: out, errOut: errOut, environ: environ, now: time.Now}
	root := a.rootCommand()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if a.cli != nil {
		a.cli.Close()
	}
	var refused refusedError
	switch {
	case err == nil, errors.Is(err, errVersionShown):
		return exitOK
	case errors.As(err, &refused):
		fmt.Fprintln(errOut, "dispatchctl:", err)
		return exitRefused
	}
	fmt.Fprintln(errOut, "dispatchctl:", err)
	return exitFailed
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "dispatchctl",
		Short: "Operate tcpdispatch through etcd: tcp-servers, balancing settings, replica status",
		Long: `dispatchctl operates tcpdispatch through etcd, with the key layout of the
README (keys under --prefix), so it and etcdctl are interchangeable. Values
are checked with the replicas' own parsers; a refused change writes nothing
and exits 2; etcd failures exit 1.

Global flags also come from TCPDISPATCH_<FLAG> variables, from etcdctl's
ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY, ETCDCTL_USER,
ETCDCTL_INSECURE_SKIP_TLS_VERIFY, ETCDCTL_DIAL_TIMEOUT and
ETCDCTL_COMMAND_TIMEOUT, and from the YAML file of --config (flag > env >
file > default). The etcd password comes from TCPDISPATCH_ETCD_PASSWORD (or
ETCDCTL_PASSWORD) or --password-file, never from the command line unless
you use --user name:password, which shows in ps.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Name() == cobra.ShellCompRequestCmd {
				// Its flags are not parsed yet; a completion function
				// that needs etcd calls setup itself.
				return nil
			}
			return a.setup()
		},
	}
	// Before the completion command is added: it binds its output now.
	root.SetOut(a.out)
	root.SetErr(a.errOut)
	pf := root.PersistentFlags()
	a.etcd.define(pf)
	pf.StringVar(&a.prefix, "prefix", keyspace.DefaultPrefix, "etcd key prefix of the tcpdispatch keys")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	pf.StringSliceVar(&a.dispatchers, "dispatchers", nil, "replicas' HTTP base URLs for status, comma-separated (e.g. http://127.0.0.1:8080)")
	a.layers = flagconf.BindPflag(pf)
	a.etcd.aliases(a.layers)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return refusedError{err} })

	root.AddCommand(a.serversCommand(), a.strategyCommand(), a.configCommand(), a.statusCommand(), a.watchCommand())
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Short = "Generate the shell completion script (bash, zsh, fish, powershell)"
		}
	}
	return root
}

// setup applies the environment and config file to the global flags and
// checks them; it runs once, before any command.
func (a *app) setup() error {
	if a.ready {
		return nil
	}
	if a.layers.VersionRequested() {
		fmt.Fprintln(a.out, version.Line("dispatchctl"))
		return errVersionShown
	}
	if err := a.layers.Apply(a.environ); err != nil {
		return refusedError{err}
	}
	keys, err := keyspace.New(a.prefix)
	if err != nil {
		return refuse("--prefix: %w", err)
	}
	if a.output != "table" && a.output != "json" {
		return refuse("--output %q: want table or json", a.output)
	}
	if err := a.etcd.validate(); err != nil {
		return refusedError{err}
	}
	a.keys, a.ready = keys, true
	return nil
}

// client returns the etcd client, connecting on first use.
func (a *app) client() (*clientv3.Client, error) {
	if a.cli != nil {
		return a.cli, nil
	}
	cfg, err := a.etcd.clientConfig(a.environ)
	if err != nil {
		return nil, refusedError{err}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	a.cli = cli
	return cli, nil
}

// opCtx bounds one etcd request by --command-timeout.
func (a *app) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.etcd.commandTimeout)
}

func (a *app) json() bool { return a.output == "json" }

// usageArgs makes an argument check's error a refusal (exit 2).
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return refusedError{fmt.Errorf("%s: %w (see %s --help)", cmd.CommandPath(), err, cmd.CommandPath())}
		}
		return nil
	}
}

// group is a command that only holds subcommands: without arguments it
// prints its help; an unknown subcommand is refused.
func group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return refuse("%s: unknown command %q (see %s --help)", cmd.CommandPath(), args[0], cmd.CommandPath())
		}
		return cmd.Help()
	}
	return cmd
}
