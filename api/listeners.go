package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
)

// Listeners are the sockets Serve answers on.
type Listeners struct {
	// Public serves /get-tcp-ip, /healthz and /readyz, and every operator
	// route as well when Admin is nil. Required.
	Public net.Listener
	// Admin, when not nil, serves the operator routes (/v1/*, /metrics,
	// /debug/pprof/, see adminRoutes), which then leave the public
	// listener.
	Admin net.Listener
}

// Serve serves on ls until ctx is cancelled, with HTTPS and the PROXY
// protocol on each listener as Config says. Then it fails /readyz for the
// lame-duck window while still answering everything else on both
// listeners, stops accepting, and waits up to ShutdownTimeout for requests
// in flight. It returns nil after a clean shutdown, and an error when a
// listener fails (the other is shut down first).
func (s *Server) Serve(ctx context.Context, ls Listeners) error {
	if ls.Public == nil {
		return errors.New("serve http: no public listener")
	}
	// served is one listener's server: serve returns http.ErrServerClosed
	// once shutdown was called.
	type served struct {
		name     string
		serve    func() error
		shutdown func(context.Context) error
	}
	var all []served

	// The public listener: fasthttp (fast.go), with the PROXY protocol
	// under TLS as net/http had it.
	fallback := http.Handler(s.echo)
	if ls.Admin != nil {
		fallback = s.public
	}
	fs := s.fastServer(fallback)
	publicLn := ls.Public
	if s.cfg.ProxyProtocol {
		publicLn = s.proxyListener(publicLn)
	}
	publicLn = peerListener{Listener: publicLn, log: s.log}
	if s.sec.publicCert != nil {
		publicLn = tls.NewListener(publicLn, &tls.Config{MinVersion: tls.VersionTLS12,
			GetCertificate: s.sec.publicCert.getCertificate, NextProtos: []string{"http/1.1"}})
	}
	// Plain HTTP may be served by event loops (loop_linux.go), which hand
	// every connection they do not answer to fs.
	var ps publicServer = fs
	if s.cfg.EventLoop && s.sec.publicCert == nil && !s.cfg.ProxyProtocol {
		ps = s.newEpollServer(fs)
	}
	var stopping atomic.Bool
	all = append(all, served{name: "public",
		serve: func() error {
			err := ps.Serve(publicLn)
			switch {
			case err != nil:
				return err
			case !stopping.Load():
				// fasthttp returns nil when its listener is closed.
				return fmt.Errorf("accept: %w", net.ErrClosed)
			}
			return http.ErrServerClosed
		},
		shutdown: func(ctx context.Context) error {
			stopping.Store(true)
			// Closing the listener first also stops a Serve that has not
			// yet registered it with fasthttp, whose shutdown would then
			// miss it.
			_ = publicLn.Close()
			if err := ps.ShutdownWithContext(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
				return err
			}
			return nil
		},
	})
	if ls.Admin != nil {
		admin := s.httpServer(s.admin, s.sec.adminCert, s.sec.adminCAs)
		all = append(all, served{name: "admin",
			serve: func() error {
				if s.sec.adminCert != nil {
					// Certificates come from TLSConfig.GetCertificate.
					return admin.ServeTLS(ls.Admin, "", "")
				}
				return admin.Serve(ls.Admin)
			},
			shutdown: admin.Shutdown,
		})
	}

	errc := make(chan error, len(all))
	for _, sv := range all {
		go func() {
			errc <- fmt.Errorf("serve %s http: %w", sv.name, sv.serve())
		}()
	}
	pending := len(all)
	shutdown := func(first error) error {
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		var wg sync.WaitGroup
		errs := make([]error, len(all))
		for i, sv := range all {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := sv.shutdown(sctx); err != nil {
					errs[i] = fmt.Errorf("shut down %s http: %w", sv.name, err)
				}
			}()
		}
		wg.Wait()
		for ; pending > 0; pending-- {
			if err := <-errc; !errors.Is(err, http.ErrServerClosed) && first == nil {
				first = err
			}
		}
		return errors.Join(append([]error{first}, errs...)...)
	}

	select {
	case err := <-errc:
		pending--
		return shutdown(err)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	s.log.WithField("lame_duck", s.cfg.LameDuck).Info("shutting down: /readyz now fails")
	t := time.NewTimer(s.cfg.LameDuck)
	defer t.Stop()
	select {
	case err := <-errc:
		pending--
		return shutdown(err)
	case <-t.C:
	}
	return shutdown(nil)
}

// httpServer returns the http.Server of one listener; cert is nil for
// plain HTTP, clientCAs nil for no client certificates.
func (s *Server) httpServer(h http.Handler, cert *certReloader, clientCAs *x509.CertPool) *http.Server {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		// TLS handshake failures and the like: a client's doing, debug.
		ErrorLog: log.New(logWriter{s.log}, "", 0),
	}
	if cert == nil {
		return hs
	}
	hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cert.getCertificate}
	if clientCAs != nil {
		hs.TLSConfig.ClientCAs, hs.TLSConfig.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	return hs
}

// proxyListener reads a PROXY protocol (v1 or v2) header on connections
// from TrustedProxies: the address it names becomes the connection's
// remote address. A trusted peer may also connect without one (a load
// balancer's own health check). A connection from any other peer that
// sends a PROXY header is closed at its first read: only a trusted proxy
// may say who the client is.
func (s *Server) proxyListener(ln net.Listener) net.Listener {
	return &proxyproto.Listener{
		Listener:          ln,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if ap, err := peerAddr(o.Upstream); err == nil && s.sec.trusts(ap) {
				return proxyproto.USE, nil
			}
			return proxyproto.REJECT, nil
		},
	}
}
