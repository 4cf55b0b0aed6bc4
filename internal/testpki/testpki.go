// Package testpki makes throwaway certificate authorities and certificates
// for tests, with crypto/x509, kept in memory or written as PEM files under
// the test's own temporary directory: no certificate is ever committed.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a test certificate authority valid for a day.
type CA struct {
	// CertFile is the CA certificate (PEM) written under the CA's
	// temporary directory, to trust.
	CertFile string
	Cert     *x509.Certificate
	CertPEM  []byte
	// Pool holds Cert alone, for RootCAs or ClientCAs.
	Pool *x509.CertPool
	key  *ecdsa.PrivateKey
	dir  string
}

// Pair is a certificate and its private key as PEM files.
type Pair struct {
	CertFile, KeyFile string
	// KeyPEM is the key file's content, for tests that check it leaks
	// nowhere.
	KeyPEM []byte
}

// Leaf is a certificate issued by a CA, in memory, for servers and clients
// alike.
type Leaf struct {
	CertPEM, KeyPEM []byte
	TLS             tls.Certificate
	Cert            *x509.Certificate
}

// New returns a CA named after the test.
func New(t testing.TB) *CA {
	t.Helper()
	return NewCA(t, "ca")
}

// NewCA makes a CA named name whose files live in a new temporary
// directory of t.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name + " " + t.Name(), Organization: []string{"tcpdispatch tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ca := &CA{Cert: cert, Pool: pool, key: key, dir: t.TempDir()}
	ca.CertFile = filepath.Join(ca.dir, name+"-ca.pem")
	ca.CertPEM = writePEM(t, ca.CertFile, "CERTIFICATE", der)
	return ca
}

// Issue makes a certificate with common name cn (etcd takes it as the user
// name when auth and client-cert-auth are on), valid for both server and
// client authentication on localhost, 127.0.0.1 and ::1 plus any extra
// hosts (IPs or DNS names), written as files under the CA's directory.
func (ca *CA) Issue(t testing.TB, cn string, hosts ...string) Pair {
	t.Helper()
	der, kder := ca.sign(t, cn, append([]string{"localhost", "127.0.0.1", "::1"}, hosts...))
	p := Pair{CertFile: filepath.Join(ca.dir, cn+".pem"), KeyFile: filepath.Join(ca.dir, cn+"-key.pem")}
	writePEM(t, p.CertFile, "CERTIFICATE", der)
	p.KeyPEM = writePEM(t, p.KeyFile, "EC PRIVATE KEY", kder)
	return p
}

// Leaf returns a certificate for exactly hosts (DNS names or IP addresses,
// the first also the common name), in memory; WriteFiles puts it on disk.
func (ca *CA) Leaf(t testing.TB, hosts ...string) Leaf {
	t.Helper()
	cn := ""
	if len(hosts) > 0 {
		cn = hosts[0]
	}
	der, kder := ca.sign(t, cn, hosts)
	l := Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
	var err error
	if l.TLS, err = tls.X509KeyPair(l.CertPEM, l.KeyPEM); err != nil {
		t.Fatal(err)
	}
	if l.Cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	return l
}

// sign issues a certificate for cn and hosts and returns it and its key in
// DER.
func (ca *CA) sign(t testing.TB, cn string, hosts []string) (der, keyDER []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("issue %s: %v", cn, err)
	}
	keyDER, err = x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der, keyDER
}

// WriteFiles writes the leaf as dir/name.crt and dir/name.key (mode 0600)
// and returns their paths. Writing again over the same files is a
// certificate rotation.
func (l Leaf) WriteFiles(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writeAtomic(t, keyFile, l.KeyPEM)
	writeAtomic(t, certFile, l.CertPEM)
	return certFile, keyFile
}

// WriteCA writes the CA certificate as dir/name.crt and returns its path.
func (ca *CA) WriteCA(t testing.TB, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name+".crt")
	writeAtomic(t, p, ca.CertPEM)
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) []byte {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeAtomic replaces path by rename, as a certificate manager would.
func writeAtomic(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
