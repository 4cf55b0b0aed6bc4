package node

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/tcpdispatch/tcpdispatch/etcdconn"
)

// TLSFiles are the TLS settings of one side of the embedded member, named
// after etcd's flags (--cert-file, --key-file, --trusted-ca-file,
// --client-cert-auth and their --peer- twins).
type TLSFiles struct {
	// CertFile and KeyFile are the member's PEM certificate and key.
	CertFile, KeyFile string
	// TrustedCAFile is the PEM file of the CAs whose certificates the
	// member accepts from clients (or peers).
	TrustedCAFile string
	// ClientCertAuth makes the member refuse connections without a
	// certificate signed by TrustedCAFile.
	ClientCertAuth bool
}

func (t TLSFiles) empty() bool { return t == TLSFiles{} }

// tlsFlags names the flags of one side, for error messages.
type tlsFlags struct {
	cert, key, ca, certAuth, auto, listen, advertise string
}

var (
	clientTLSFlags = tlsFlags{"cert-file", "key-file", "trusted-ca-file", "client-cert-auth", "auto-tls", "listen-client-urls", "advertise-client-urls"}
	peerTLSFlags   = tlsFlags{"peer-cert-file", "peer-key-file", "peer-trusted-ca-file", "peer-client-cert-auth", "peer-auto-tls", "listen-peer-urls", "initial-advertise-peer-urls"}
)

// validateEtcdSecurity checks the member's TLS settings and the replica's
// own etcd client settings.
func (c Config) validateEtcdSecurity() error {
	e := c.Embed
	if len(c.EtcdEndpoints) > 0 {
		if !e.ClientTLS.empty() || !e.PeerTLS.empty() || e.ClientAutoTLS || e.PeerAutoTLS {
			return errors.New("cert-file, peer-cert-file, auto-tls and their kin configure the embedded member, which --etcd-endpoints turns off: " +
				"give the client's TLS files as --etcd-cacert, --etcd-cert and --etcd-key")
		}
		cc := c.EtcdClient
		cc.Endpoints = c.EtcdEndpoints
		return cc.Validate()
	}
	if err := validateMemberTLS(e.ClientTLS, e.ClientAutoTLS, e.ListenClientURLs, e.AdvertiseClientURLs, clientTLSFlags); err != nil {
		return err
	}
	if err := validateMemberTLS(e.PeerTLS, e.PeerAutoTLS, e.ListenPeerURLs, e.InitialAdvertisePeerURLs, peerTLSFlags); err != nil {
		return err
	}
	return c.ownClient(strings.Split(e.AdvertiseClientURLs, ",")).Validate()
}

// validateMemberTLS refuses what etcd would accept with a warning lost in
// its log: https:// URLs without a certificate, and certificates next to
// http:// URLs only (etcd then serves plaintext and ignores them).
func validateMemberTLS(t TLSFiles, auto bool, listen, advertise string, f tlsFlags) error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("--%s and --%s must be given together", f.cert, f.key)
	}
	certs := t.CertFile != ""
	if certs && auto {
		return fmt.Errorf("give either --%s/--%s or --%s, not both", f.cert, f.key, f.auto)
	}
	if t.ClientCertAuth && t.TrustedCAFile == "" {
		return fmt.Errorf("--%s needs --%s: the CA that signs the certificates to accept", f.certAuth, f.ca)
	}
	listenTLS, advertiseTLS := hasHTTPS(listen), hasHTTPS(advertise)
	if advertiseTLS && !listenTLS {
		return fmt.Errorf("--%s %q has an https:// URL but --%s %q has none", f.advertise, advertise, f.listen, listen)
	}
	if listenTLS && !certs && !auto {
		return fmt.Errorf("--%s %q is https://: give --%s and --%s (or --%s)", f.listen, listen, f.cert, f.key, f.auto)
	}
	if (certs || auto || t.TrustedCAFile != "" || t.ClientCertAuth) && !listenTLS {
		return fmt.Errorf("TLS settings given (--%s, --%s, --%s or --%s) but --%s %q has no https:// URL: etcd would serve plaintext and ignore them",
			f.cert, f.ca, f.certAuth, f.auto, f.listen, listen)
	}
	for flag, path := range map[string]string{f.cert: t.CertFile, f.key: t.KeyFile, f.ca: t.TrustedCAFile} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("--%s: %w", flag, err)
		}
	}
	return nil
}

func hasHTTPS(urls string) bool {
	for _, u := range strings.Split(urls, ",") {
		if strings.HasPrefix(strings.TrimSpace(u), "https://") {
			return true
		}
	}
	return false
}

// ownClient returns the settings of the replica's etcd client for
// endpoints. In front of its own embedded member with https:// client URLs
// the client trusts --trusted-ca-file and, under --client-cert-auth,
// presents the member's own certificate (it must allow client
// authentication), unless --etcd-cacert or --etcd-cert say otherwise.
func (c Config) ownClient(endpoints []string) etcdconn.Config {
	cc := c.EtcdClient
	cc.Endpoints, cc.DialTimeout = endpoints, c.EtcdDialTimeout
	e := c.Embed
	if len(c.EtcdEndpoints) > 0 || !hasHTTPS(e.AdvertiseClientURLs) {
		return cc
	}
	if cc.CACert == "" {
		cc.CACert = e.ClientTLS.TrustedCAFile
	}
	if cc.Cert == "" && e.ClientTLS.ClientCertAuth {
		cc.Cert, cc.Key = e.ClientTLS.CertFile, e.ClientTLS.KeyFile
	}
	return cc
}

// etcdClientConfig returns the configuration of the replica's etcd client.
func (n *Node) etcdClientConfig(endpoints []string) (clientv3.Config, error) {
	cc := n.cfg.ownClient(endpoints)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return cfg, err
	}
	if len(n.cfg.EtcdEndpoints) == 0 && n.cfg.Embed.ClientAutoTLS && cc.CACert == "" && cfg.TLS != nil {
		// --auto-tls: no CA signs the member's certificate, so the
		// replica pins the one its member generates under its data dir.
		pin := filepath.Join(n.dataDir(), "fixtures", "client", "cert.pem")
		cfg.TLS.InsecureSkipVerify = true
		cfg.TLS.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPinned(cs, pin) }
	}
	return cfg, nil
}

// verifyPinned accepts the connection only if the server presented the
// certificate in the PEM file pin.
func verifyPinned(cs tls.ConnectionState, pin string) error {
	b, err := os.ReadFile(pin)
	if err != nil {
		return fmt.Errorf("read auto-tls certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || len(cs.PeerCertificates) == 0 || !bytes.Equal(block.Bytes, cs.PeerCertificates[0].Raw) {
		return errors.New("etcd member presented a certificate other than its auto-tls one")
	}
	return nil
}

// applyMemberTLS copies the TLS settings onto the member's configuration.
func (e EmbedConfig) applyMemberTLS(cfg *embed.Config) {
	cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = e.ClientTLS.CertFile, e.ClientTLS.KeyFile
	cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = e.ClientTLS.TrustedCAFile, e.ClientTLS.ClientCertAuth
	cfg.PeerTLSInfo.CertFile, cfg.PeerTLSInfo.KeyFile = e.PeerTLS.CertFile, e.PeerTLS.KeyFile
	cfg.PeerTLSInfo.TrustedCAFile, cfg.PeerTLSInfo.ClientCertAuth = e.PeerTLS.TrustedCAFile, e.PeerTLS.ClientCertAuth
	cfg.ClientAutoTLS, cfg.PeerAutoTLS = e.ClientAutoTLS, e.PeerAutoTLS
}
