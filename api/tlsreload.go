package api

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// certReloader hands out one listener's certificate and reads its files
// again when they change. Connections keep the certificate they were
// handshaken with; a pair that does not load (half written, key not
// matching) keeps the previous one in service and is logged and counted.
type certReloader struct {
	name              string
	certFile, keyFile string
	interval          time.Duration
	now               func() time.Time
	log               *logrus.Entry
	m                 *securityMetrics

	cert atomic.Pointer[tls.Certificate]
	next atomic.Int64 // unix nanoseconds of the next check

	mu    sync.Mutex // one check at a time
	stamp [2]fileStamp
}

// fileStamp is what a check compares to notice a changed file.
type fileStamp struct {
	size    int64
	modTime time.Time
}

// newCertReloader loads the pair; a pair that does not load is an error.
func newCertReloader(name string, files TLSFiles, interval time.Duration, now func() time.Time, log *logrus.Entry, m *securityMetrics) (*certReloader, error) {
	r := &certReloader{name: name, certFile: files.CertFile, keyFile: files.KeyFile, interval: interval, now: now, log: log, m: m}
	stamp, err := r.stat()
	if err != nil {
		return nil, err
	}
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert.Store(cert)
	r.stamp = stamp
	r.next.Store(now().Add(interval).UnixNano())
	return r, nil
}

// getCertificate is tls.Config.GetCertificate: it checks the files at most
// once per interval, and never makes a handshake wait for another's check.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if now := r.now(); now.UnixNano() >= r.next.Load() && r.mu.TryLock() {
		r.next.Store(now.Add(r.interval).UnixNano())
		r.check()
		r.mu.Unlock()
	}
	return r.cert.Load(), nil
}

// check reloads the pair when a file changed since the last attempt.
// Called with mu held.
func (r *certReloader) check() {
	stamp, err := r.stat()
	if err != nil || stamp == r.stamp {
		if err != nil && r.stamp != ([2]fileStamp{}) {
			r.failed(err)
			r.stamp = [2]fileStamp{}
		}
		return
	}
	r.stamp = stamp
	cert, err := r.load()
	if err != nil {
		r.failed(err)
		return
	}
	r.cert.Store(cert)
	r.m.tlsReloads.WithLabelValues(r.name, "ok").Inc()
	r.log.WithFields(logrus.Fields{"listener": r.name, "cert_file": r.certFile, "not_after": cert.Leaf.NotAfter}).Info("TLS certificate reloaded")
}

func (r *certReloader) failed(err error) {
	r.m.tlsReloads.WithLabelValues(r.name, "error").Inc()
	r.log.WithError(err).WithField("listener", r.name).Error("TLS certificate not reloaded; keeping the previous one")
}

func (r *certReloader) stat() ([2]fileStamp, error) {
	var st [2]fileStamp
	for i, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return st, fmt.Errorf("stat %s TLS file: %w", r.name, err)
		}
		st[i] = fileStamp{fi.Size(), fi.ModTime()}
	}
	return st, nil
}

// load reads and checks the pair. The error never quotes the key.
func (r *certReloader) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("load %s TLS certificate %s: %w", r.name, r.certFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("load %s TLS certificate %s: %w", r.name, r.certFile, err)
		}
	}
	if r.now().After(cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("load %s TLS certificate %s: %w (not after %v)", r.name, r.certFile, errExpired, cert.Leaf.NotAfter)
	}
	return &cert, nil
}

// errExpired is returned for a certificate past its NotAfter.
var errExpired = errors.New("certificate expired")
