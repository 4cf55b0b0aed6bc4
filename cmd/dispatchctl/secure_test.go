package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/tcpdispatch/tcpdispatch/internal/etcdtest"
)

// TestAuth enables etcd authentication on a real member and connects with
// --user and the password from the environment or a file.
func TestAuth(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.cli.RoleAdd(ctx, "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cli.UserAdd(ctx, "root", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  []string
		args []string
		code int
	}{
		{[]string{envPassword + "=s3cret"}, []string{"--user", "root"}, exitOK},
		{nil, []string{"--user", "root", "--password-file", pw}, exitOK},
		{[]string{"ETCDCTL_USER=root", "ETCDCTL_PASSWORD=s3cret"}, nil, exitOK},
		{nil, []string{"--user", "root:s3cret"}, exitOK},
		{[]string{envPassword + "=wrong"}, []string{"--user", "root"}, exitFailed},
		{nil, []string{"--user", "root"}, exitRefused}, // no password anywhere
		{nil, nil, exitFailed}, // auth required
	} {
		code, _, stderr := c.ctlEnv(tc.env, append(tc.args, "servers", "ls")...)
		if code != tc.code {
			t.Errorf("env %q args %q: exit %d, want %d (%s)", tc.env, tc.args, code, tc.code, stderr)
		}
	}
}

// TestTLS runs dispatchctl against a real member that requires TLS client
// certificates, with files generated for the test.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, dir, "ca", nil, nil)
	newCert(t, dir, "server", ca, caKey)
	newCert(t, dir, "client", ca, caKey)
	f := func(n string) string { return filepath.Join(dir, n) }

	cfg := embed.NewConfig()
	cfg.Name = "tls"
	cfg.Dir = t.TempDir()
	cURL, _ := url.Parse(fmt.Sprintf("https://127.0.0.1:%d", etcdtest.FreePort(t)))
	pURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", etcdtest.FreePort(t)))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cURL}, []url.URL{*cURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pURL}, []url.URL{*pURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = f("server.pem"), f("server-key.pem")
	cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = f("ca.pem"), true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); <-e.Server.StopNotify() })
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		t.Fatal("etcd not ready")
	}

	runCtl := func(env []string, args ...string) (int, string) {
		var out, errOut syncBuffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code := run(ctx, append([]string{"--endpoints", cURL.String(), "--dial-timeout", "1s", "--command-timeout", "2s"}, args...), &out, &errOut, env)
		return code, out.String() + errOut.String()
	}
	tls := []string{"--cacert", f("ca.pem"), "--cert", f("client.pem"), "--key", f("client-key.pem")}
	if code, out := runCtl(nil, append(tls, "servers", "add", "tcp1", "127.0.0.1:9001")...); code != exitOK {
		t.Fatalf("with TLS flags: exit %d: %s", code, out)
	}
	env := []string{"ETCDCTL_CACERT=" + f("ca.pem"), "ETCDCTL_CERT=" + f("client.pem"), "ETCDCTL_KEY=" + f("client-key.pem")}
	if code, out := runCtl(env, "servers", "ls"); code != exitOK || !strings.Contains(out, "tcp1") {
		t.Errorf("with ETCDCTL_* TLS variables: exit %d: %s", code, out)
	}
	if code, out := runCtl(nil, "--cacert", f("ca.pem"), "servers", "ls"); code != exitFailed {
		t.Errorf("without a client certificate: exit %d: %s", code, out)
	}
}

// newCert writes <name>.pem and <name>-key.pem in dir: a CA when parent is
// nil, else a certificate for 127.0.0.1 signed by it.
func newCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		parent, parentKey = tmpl, key
	} else {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(name+".pem", "CERTIFICATE", der)
	write(name+"-key.pem", "EC PRIVATE KEY", kb)
	return cert, key
}
