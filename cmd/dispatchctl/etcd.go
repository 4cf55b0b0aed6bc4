package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tcpdispatch/tcpdispatch/cmd/internal/flagconf"
)

// Environment variables holding the etcd password; the first set wins.
const (
	envPassword        = "TCPDISPATCH_ETCD_PASSWORD"
	envEtcdctlPassword = "ETCDCTL_PASSWORD"
)

// etcdFlags are etcdctl's connection flags, with the same names, defaults
// and ETCDCTL_* variables.
type etcdFlags struct {
	endpoints          []string
	cacert, cert, key  string
	insecureSkipVerify bool
	user, passwordFile string
	dialTimeout        time.Duration
	commandTimeout     time.Duration
}

func (f *etcdFlags) define(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.endpoints, "endpoints", []string{"127.0.0.1:2379"}, "etcd endpoints, comma-separated (env ETCDCTL_ENDPOINTS)")
	fs.StringVar(&f.cacert, "cacert", "", "verify the etcd servers' certificates with this CA bundle")
	fs.StringVar(&f.cert, "cert", "", "client certificate for etcd (TLS client authentication)")
	fs.StringVar(&f.key, "key", "", "key of --cert")
	fs.BoolVar(&f.insecureSkipVerify, "insecure-skip-tls-verify", false, "do not verify the etcd servers' certificates (testing only)")
	fs.StringVar(&f.user, "user", "", "etcd user name; the password comes from "+envPassword+" or --password-file (name:password also works but shows in ps)")
	fs.StringVar(&f.passwordFile, "password-file", "", "file holding the etcd password of --user (one line)")
	fs.DurationVar(&f.dialTimeout, "dial-timeout", 2*time.Second, "timeout for connecting to etcd")
	fs.DurationVar(&f.commandTimeout, "command-timeout", 5*time.Second, "timeout of one request to etcd or a replica")
}

// aliases lets the dispatcher's TCPDISPATCH_ETCD_* variables (so that a
// replica's environment file can be sourced) and then etcdctl's ETCDCTL_*
// set the flags, after dispatchctl's own TCPDISPATCH_<FLAG>.
func (f *etcdFlags) aliases(l *flagconf.Layers) {
	for _, name := range []string{"endpoints", "cacert", "cert", "key", "insecure-skip-tls-verify", "user", "password-file", "dial-timeout", "command-timeout"} {
		l.Alias(name, flagconf.EnvName("etcd-"+name), "ETCDCTL_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_")))
	}
}

func (f *etcdFlags) validate() error {
	var eps []string
	for _, ep := range f.endpoints {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	if len(eps) == 0 {
		return errors.New("--endpoints: empty")
	}
	f.endpoints = eps
	if (f.cert == "") != (f.key == "") {
		return errors.New("--cert and --key go together")
	}
	if f.dialTimeout <= 0 || f.commandTimeout <= 0 {
		return errors.New("--dial-timeout and --command-timeout must be positive")
	}
	return nil
}

// clientConfig returns the client configuration of the flags, reading the
// password from the environment or the password file.
func (f *etcdFlags) clientConfig(environ []string) (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:   f.endpoints,
		DialTimeout: f.dialTimeout,
		Logger:      zap.NewNop(),
	}
	if f.cacert != "" || f.cert != "" || f.insecureSkipVerify {
		var tc *tls.Config
		var err error
		if f.cacert != "" || f.cert != "" {
			info := transport.TLSInfo{CertFile: f.cert, KeyFile: f.key, TrustedCAFile: f.cacert}
			if tc, err = info.ClientConfig(); err != nil {
				return clientv3.Config{}, fmt.Errorf("load etcd TLS files: %w", err)
			}
		} else {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tc.InsecureSkipVerify = f.insecureSkipVerify
		cfg.TLS = tc
	}
	if f.user != "" {
		user, pass, err := f.credentials(environ)
		if err != nil {
			return clientv3.Config{}, err
		}
		cfg.Username, cfg.Password = user, pass
	}
	return cfg, nil
}

// credentials returns the user and password: name:password from --user,
// else the password file, else the environment.
func (f *etcdFlags) credentials(environ []string) (string, string, error) {
	if user, pass, ok := strings.Cut(f.user, ":"); ok {
		return user, pass, nil
	}
	if f.passwordFile != "" {
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return "", "", fmt.Errorf("read password file: %w", err)
		}
		return f.user, strings.TrimRight(string(b), "\r\n"), nil
	}
	for _, name := range []string{envPassword, envEtcdctlPassword} {
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, name+"="); ok {
				return f.user, v, nil
			}
		}
	}
	return "", "", fmt.Errorf("--user %s: no password: set %s or --password-file", f.user, envPassword)
}
