package etcdconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tcpdispatch/tcpdispatch/internal/depcheck"
	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
	"github.com/tcpdispatch/tcpdispatch/internal/testpki"
)

// The CLI and the tcp-servers import this package: it must not pull in the
// etcd server or the dispatcher's own dependencies.
func TestDependencies(t *testing.T) {
	depcheck.Forbid(t, "go.etcd.io/etcd/server", "github.com/labstack/echo", "github.com/sirupsen/logrus")
}

func TestSecretNeverPrints(t *testing.T) {
	const pw = "hunter2-very-secret"
	c := Config{Endpoints: []string{"https://127.0.0.1:2379"}, User: "u", Password: pw}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c.Password), string(b)} {
		if strings.Contains(s, pw) {
			t.Errorf("password printed: %s", s)
		}
		if !strings.Contains(s, "[redacted]") {
			t.Errorf("no redaction marker in %s", s)
		}
	}
	if Secret("").String() != "" {
		t.Error("an empty secret should print empty")
	}
}

func TestLoadPassword(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(v string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			if k == PasswordEnv && v != "" {
				return v, true
			}
			return "", false
		}
	}
	for _, tc := range []struct {
		name      string
		cfg       Config
		env       string
		want      Secret
		wantErr   error
		errSubstr string
	}{
		{name: "no user, nothing to load", cfg: Config{}, env: "ignored"},
		{name: "env", cfg: Config{User: "u"}, env: "from-env", want: "from-env"},
		{name: "file wins over env, newline trimmed", cfg: Config{User: "u", PasswordFile: file}, env: "from-env", want: "from-file"},
		{name: "user without password", cfg: Config{User: "u"}, wantErr: ErrNoPassword},
		{name: "file without user", cfg: Config{PasswordFile: file}, errSubstr: "without etcd-user"},
		{name: "missing file", cfg: Config{User: "u", PasswordFile: filepath.Join(dir, "nope")}, errSubstr: "read etcd-password-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			err := c.LoadPassword(env(tc.env))
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
			case tc.errSubstr != "":
				if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
					t.Fatalf("err %v, want one containing %q", err, tc.errSubstr)
				}
			case err != nil:
				t.Fatal(err)
			case c.Password != tc.want:
				t.Fatalf("password %q, want %q", string(c.Password), string(tc.want))
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	p := ca.Issue(t, "client")
	for _, tc := range []struct {
		name, errSubstr string
		cfg             Config
	}{
		{name: "plaintext", cfg: Config{Endpoints: []string{"http://127.0.0.1:2379"}}},
		{name: "https with system roots", cfg: Config{Endpoints: []string{"https://127.0.0.1:2379"}}},
		{name: "full mTLS and auth", cfg: Config{Endpoints: []string{"https://127.0.0.1:2379"}, CACert: ca.CertFile, Cert: p.CertFile, Key: p.KeyFile, User: "u", Password: "p"}},
		{name: "no endpoints", cfg: Config{}, errSubstr: "no etcd endpoint"},
		{name: "cert without key", cfg: Config{Endpoints: []string{"https://h:1"}, Cert: p.CertFile}, errSubstr: "together"},
		{name: "password in the user", cfg: Config{Endpoints: []string{"https://h:1"}, User: "u:p", Password: "p"}, errSubstr: "must not contain ':'"},
		{name: "user without password", cfg: Config{Endpoints: []string{"https://h:1"}, User: "u"}, errSubstr: "no password"},
		{name: "missing file", cfg: Config{Endpoints: []string{"https://h:1"}, CACert: "/nonexistent/ca.pem"}, errSubstr: "etcd-cacert"},
		{name: "certificates for http endpoints", cfg: Config{Endpoints: []string{"http://h:1"}, CACert: ca.CertFile}, errSubstr: "plaintext http://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.errSubstr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.errSubstr != "" && (err == nil || !strings.Contains(err.Error(), tc.errSubstr)) {
				t.Fatalf("err %v, want one containing %q", err, tc.errSubstr)
			}
		})
	}
}

// secureEtcd starts a member with client mTLS and auth enabled (root and a
// user "app" with read-write on /app/), returning the CA and the member.
func secureEtcd(t *testing.T, opts ...etcdtest.Option) (*testpki.CA, *etcdtest.Member, testpki.Pair) {
	t.Helper()
	ca := testpki.NewCA(t, "ca")
	srv := ca.Issue(t, "server")
	m := etcdtest.Start(t, append(opts, etcdtest.WithClientTLS(srv.CertFile, srv.KeyFile, ca.CertFile))...)
	admin := ca.Issue(t, "root")
	cli := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: ca.CertFile, Cert: admin.CertFile, Key: admin.KeyFile})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "app"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "app", "/app/", clientv3.GetPrefixRangeEnd("/app/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "app", "app-password"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "app", "app"); return err },
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
	return ca, m, admin
}

func dial(t *testing.T, c Config) *clientv3.Client {
	t.Helper()
	c.DialTimeout = 5 * time.Second
	cli, err := Dial(c, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func enableAuth(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatalf("auth enable: %v", err)
	}
}

func put(cli *clientv3.Client, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := cli.Put(ctx, key, "v")
	return err
}

// A client made before auth is enabled, as a replica is during the
// documented bootstrap, authenticates once etcd asks for it, and its
// watch keeps delivering.
func TestAuthEnabledAfterClientStarted(t *testing.T) {
	ca, m, admin := secureEtcd(t)
	app := ca.Issue(t, "app-client")
	cli := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: ca.CertFile, Cert: app.CertFile, Key: app.KeyFile, User: "app", Password: "app-password"})
	if err := put(cli, "/app/before"); err != nil {
		t.Fatalf("before auth: %v", err)
	}
	rootCli := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: ca.CertFile, Cert: admin.CertFile, Key: admin.KeyFile})
	enableAuth(t, rootCli)
	if err := put(cli, "/app/after"); err != nil {
		t.Fatalf("after auth: %v", err)
	}
	if err := put(cli, "/other/key"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("write outside the role: %v, want permission denied", err)
	}
	// A fresh client of the same user, and a lease with a key under it (the
	// election's and push registration's need).
	fresh := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: ca.CertFile, Cert: app.CertFile, Key: app.KeyFile, User: "app", Password: "app-password"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lease, err := fresh.Grant(ctx, 5)
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	if _, err := fresh.Put(ctx, "/app/leased", "v", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatalf("leased put: %v", err)
	}
	if _, err := fresh.Revoke(ctx, lease.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
}

func TestRefused(t *testing.T) {
	ca, m, admin := secureEtcd(t)
	rootCli := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: ca.CertFile, Cert: admin.CertFile, Key: admin.KeyFile})
	enableAuth(t, rootCli)
	app := ca.Issue(t, "app-client")
	other := testpki.NewCA(t, "other")
	stranger := other.Issue(t, "root") // right name, wrong CA

	t.Run("plaintext", func(t *testing.T) {
		cli := dial(t, Config{Endpoints: []string{strings.Replace(m.ClientURL, "https://", "http://", 1)}, User: "app", Password: "app-password"})
		if err := put(cli, "/app/x"); err == nil {
			t.Fatal("a plaintext client was served")
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		cli := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: ca.CertFile, Cert: stranger.CertFile, Key: stranger.KeyFile})
		if err := put(cli, "/app/x"); err == nil {
			t.Fatal("a client with a certificate of another CA was served")
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		cli := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: ca.CertFile, User: "app", Password: "app-password"})
		if err := put(cli, "/app/x"); err == nil {
			t.Fatal("a client without a certificate was served")
		}
	})
	t.Run("server not trusted", func(t *testing.T) {
		cli := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: other.CertFile, Cert: app.CertFile, Key: app.KeyFile, User: "app", Password: "app-password"})
		if err := put(cli, "/app/x"); err == nil {
			t.Fatal("the client trusted a server certificate of another CA")
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		cli := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: ca.CertFile, Cert: app.CertFile, Key: app.KeyFile, User: "app", Password: "wrong"})
		if err := put(cli, "/app/x"); !errors.Is(err, rpctypes.ErrAuthFailed) {
			t.Fatalf("wrong password: %v, want %v", err, rpctypes.ErrAuthFailed)
		}
	})
	t.Run("right password", func(t *testing.T) {
		cli := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: ca.CertFile, Cert: app.CertFile, Key: app.KeyFile, User: "app", Password: "app-password"})
		if err := put(cli, "/app/x"); err != nil {
			t.Fatal(err)
		}
	})
}

// New must not wait for etcd even with a user: a replica serves its saved
// snapshot while etcd is down.
func TestNewDoesNotWaitForEtcd(t *testing.T) {
	cfg, err := Config{Endpoints: []string{fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t))},
		DialTimeout: time.Hour, User: "u", Password: "p"}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = zap.NewNop()
	cli, err := New(cfg) // with clientv3.New this blocks for DialTimeout
	if err != nil {
		t.Fatal(err)
	}
	cli.Close()
}

// TestAuthOutlivesShortDeadlines: calls whose deadline is shorter than one
// password check (a replica's election calls on a busy or race-built
// etcd, where bcrypt takes a second) still get a token: the check runs
// once, on its own deadline, and its token serves every caller. Before,
// each call's Authenticate was cancelled with it and no call ever
// succeeded (TestSecureCore in CI, 2026-12-02).
func TestAuthOutlivesShortDeadlines(t *testing.T) {
	// etcd's default cost, as a replica's embedded member has.
	ca, m, admin := secureEtcd(t, etcdtest.WithBcryptCost(10))
	rootCli := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: ca.CertFile, Cert: admin.CertFile, Key: admin.KeyFile})
	enableAuth(t, rootCli)
	check := time.Duration(1<<63 - 1)
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		_, err := rootCli.Authenticate(ctx, "app", "app-password")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		check = min(check, time.Since(start))
	}
	deadline := check / 3
	t.Logf("one password check %v; calls with deadlines of %v", check, deadline)
	app := ca.Issue(t, "app-client")
	cli := dial(t, Config{Endpoints: []string{m.ClientURL}, CACert: ca.CertFile, Cert: app.CertFile, Key: app.KeyFile, User: "app", Password: "app-password"})
	errs := make(chan error, 4)
	giveUp := time.Now().Add(max(30*check, 10*time.Second))
	for i := range cap(errs) {
		go func() {
			var err error
			for time.Now().Before(giveUp) {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				_, err = cli.Put(ctx, fmt.Sprintf("/app/short/%d", i), "v")
				cancel()
				if err == nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Errorf("no call with a deadline of a third of a password check succeeded: last %v", err)
		}
	}
}
