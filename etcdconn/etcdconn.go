// Package etcdconn builds the etcd client of every tcpdispatch program (the
// dispatcher replica, tcpserver --register-etcd, the operator CLI) from one
// set of settings: endpoints, TLS files with etcdctl's --cacert, --cert and
// --key meaning, and a user whose password comes from the environment or a
// file, never from a flag that shows in ps.
//
// It depends on the etcd client only, never on the etcd server, so that
// tools and tcp-servers can use it.
package etcdconn

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// PasswordEnv is the environment variable that holds the password of
// Config.User when Config.PasswordFile is not set.
const PasswordEnv = "TCPDISPATCH_ETCD_PASSWORD"

// ErrNoPassword is returned by LoadPassword when a user is set but neither
// the password file nor PasswordEnv gives a password.
var ErrNoPassword = errors.New("etcd user set but no password: set " + PasswordEnv + " or --etcd-password-file")

// Secret is a string that never prints: fmt, %v, %+v, %#v and JSON all
// show "[redacted]" (or "" when it is empty), so a password kept in a
// config cannot leak through a log line or a config dump.
type Secret string

// String returns "[redacted]", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString is String, for %#v.
func (s Secret) GoString() string { return s.String() }

// MarshalJSON encodes the redacted form.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// MarshalText encodes the redacted form (yaml, logfmt).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Config is how a program reaches etcd.
type Config struct {
	// Endpoints are etcd client URLs (http:// or https://).
	Endpoints []string
	// DialTimeout bounds establishing a connection. Creating a client
	// never waits for it (see New).
	DialTimeout time.Duration
	// CACert is a PEM file of the CAs that sign etcd's server
	// certificates (etcdctl --cacert). Empty: the system roots, for
	// https:// endpoints.
	CACert string
	// Cert and Key are the PEM files of this client's certificate and key
	// (etcdctl --cert, --key), presented when etcd runs with
	// --client-cert-auth. They are read again at every handshake, so a
	// renewed certificate is used without a restart.
	Cert, Key string
	// User is the etcd user to authenticate as when etcd auth is enabled.
	// Empty: no password authentication (with a client certificate and
	// auth enabled, etcd takes the certificate's CN as the user).
	User string
	// PasswordFile is a file whose content (one trailing newline removed)
	// is User's password; it wins over PasswordEnv.
	PasswordFile string
	// Password is User's password, filled by LoadPassword.
	Password Secret
}

// DefaultConfig returns a Config with no endpoints, plaintext and no auth.
func DefaultConfig() Config {
	return Config{DialTimeout: 5 * time.Second}
}

// RegisterFlags defines --etcd-cacert, --etcd-cert, --etcd-key, --etcd-user
// and --etcd-password-file on fs, writing into c. There is deliberately no
// flag for the password itself.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.CACert, "etcd-cacert", c.CACert, "etcd client: verify etcd's certificate with the CAs in this PEM file (etcdctl --cacert)")
	fs.StringVar(&c.Cert, "etcd-cert", c.Cert, "etcd client: present this PEM certificate to etcd (etcdctl --cert)")
	fs.StringVar(&c.Key, "etcd-key", c.Key, "etcd client: private key of --etcd-cert (etcdctl --key)")
	fs.StringVar(&c.User, "etcd-user", c.User, "etcd client: authenticate as this etcd user; the password comes from "+PasswordEnv+" or --etcd-password-file")
	fs.StringVar(&c.PasswordFile, "etcd-password-file", c.PasswordFile, "etcd client: file holding the password of --etcd-user (wins over "+PasswordEnv+")")
}

// LoadPassword fills c.Password for c.User from c.PasswordFile or, when
// that is empty, from the PasswordEnv variable looked up with lookupEnv
// (os.LookupEnv in programs). It does nothing when User is empty. Errors
// never contain the password.
func (c *Config) LoadPassword(lookupEnv func(string) (string, bool)) error {
	if c.User == "" {
		if c.PasswordFile != "" {
			return errors.New("etcd-password-file given without etcd-user")
		}
		return nil
	}
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return fmt.Errorf("read etcd-password-file: %w", err)
		}
		c.Password = Secret(strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"))
	} else if v, ok := lookupEnv(PasswordEnv); ok {
		c.Password = Secret(v)
	}
	if c.Password == "" {
		return ErrNoPassword
	}
	return nil
}

// Validate checks the settings without touching the network.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("no etcd endpoint given")
	}
	if (c.Cert == "") != (c.Key == "") {
		return errors.New("etcd-cert and etcd-key must be given together")
	}
	if strings.Contains(c.User, ":") {
		// etcdctl accepts user:password; a password on the command
		// line shows in ps, so tcpdispatch does not.
		return errors.New("etcd-user must not contain ':': give the password in " + PasswordEnv + " or --etcd-password-file")
	}
	if c.User != "" && c.Password == "" {
		return ErrNoPassword
	}
	for _, f := range []struct{ flag, path string }{{"etcd-cacert", c.CACert}, {"etcd-cert", c.Cert}, {"etcd-key", c.Key}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s: %w", f.flag, err)
		}
	}
	if c.tlsFiles() && !c.anyTLSEndpoint() {
		return fmt.Errorf("etcd-cacert/etcd-cert given but every etcd endpoint is plaintext http:// (%s): use https:// endpoints",
			strings.Join(c.Endpoints, ","))
	}
	return nil
}

func (c Config) tlsFiles() bool { return c.CACert != "" || c.Cert != "" }

// anyTLSEndpoint reports whether some endpoint may use TLS: https://, or
// no scheme at all (the etcd client then uses TLS when it has a config).
func (c Config) anyTLSEndpoint() bool {
	for _, ep := range c.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Scheme != "http" && u.Scheme != "unix" {
			return true
		}
	}
	return false
}

// TLS returns the client TLS configuration, or nil when no TLS file is
// given and no endpoint is https:// (plaintext).
func (c Config) TLS() (*tls.Config, error) {
	if !c.tlsFiles() && !c.anyHTTPS() {
		return nil, nil
	}
	info := transport.TLSInfo{CertFile: c.Cert, KeyFile: c.Key, TrustedCAFile: c.CACert}
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client TLS: %w", err)
	}
	return cfg, nil
}

func (c Config) anyHTTPS() bool {
	for _, ep := range c.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			return true
		}
	}
	return false
}

// ClientConfig validates c and returns the etcd client configuration; the
// caller may add its own tuning (keep-alives, logger) before New.
func (c Config) ClientConfig() (clientv3.Config, error) {
	if err := c.Validate(); err != nil {
		return clientv3.Config{}, err
	}
	t, err := c.TLS()
	if err != nil {
		return clientv3.Config{}, err
	}
	return clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout,
		TLS:         t,
		Username:    c.User,
		Password:    string(c.Password),
	}, nil
}

// unauthenticated is the placeholder token New starts a client with; etcd
// rejects it as invalid once auth is on, and the client then authenticates.
const unauthenticated = "tcpdispatch-not-yet-authenticated"

// New returns a client for cfg without waiting for etcd, even when cfg has
// a user: clientv3.New would authenticate at once, blocking for up to
// DialTimeout and failing when etcd is down or has no quorum (Authenticate
// goes through raft), which would stop a replica from serving its saved
// snapshot. Here the client starts with a placeholder token that etcd
// refuses as invalid; the client then authenticates with the password, on
// the first call, before every new watch or keep-alive stream, and again
// whenever its token expires, exactly as a client of clientv3.New would,
// except that its password checks are made one at a time and not bounded
// by the deadline of the call that needed one (see authFlight).
// With auth disabled, etcd ignores the token.
func New(cfg clientv3.Config) (*clientv3.Client, error) {
	if cfg.Username == "" || cfg.Password == "" {
		return clientv3.New(cfg)
	}
	user, password := cfg.Username, cfg.Password
	cfg.Username, cfg.Password, cfg.Token = "", "", unauthenticated
	cfg.DialOptions = append(slices.Clip(cfg.DialOptions), grpc.WithChainUnaryInterceptor(newAuthFlight().intercept))
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, err
	}
	// No call has used the client yet (AutoSyncInterval aside, which
	// starts with a wait), so these writes race with nothing.
	cli.Token, cli.Username, cli.Password = "", user, password
	return cli, nil
}

// Dial is ClientConfig then New: the client of c, logging to lg (nil:
// etcd's default logger on stderr), created without waiting for etcd.
func Dial(c Config, lg *zap.Logger) (*clientv3.Client, error) {
	cfg, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.Logger = lg
	return New(cfg)
}
