package api

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Security configures HTTPS, trusted proxies and rate limiting. None of it
// can change while the server runs, except the certificates, which are
// read again when their files change.
type Security struct {
	// PublicTLS serves the public listener over HTTPS when CertFile is set.
	PublicTLS TLSFiles
	// AdminTLS serves the admin listener over HTTPS when CertFile is set;
	// ClientCAFile then requires client certificates (mTLS).
	AdminTLS TLSFiles
	// CertCheckInterval is how often, at most, a TLS handshake checks
	// whether the certificate files changed (size or modification time)
	// and reloads them. Default 1s.
	CertCheckInterval time.Duration

	// TrustedProxies are the peers whose X-Forwarded-For and X-Real-IP
	// headers, and PROXY protocol headers, are believed. Empty: the peer
	// address is the client address.
	TrustedProxies []netip.Prefix
	// ProxyProtocol reads a PROXY protocol v1 or v2 header on public
	// connections from TrustedProxies (required then).
	ProxyProtocol bool

	// RateLimit is get-tcp-ip requests per second allowed per client
	// address (IPv6: per /64); 0 disables the limit.
	RateLimit float64
	// RateBurst is how many requests one address may send at once. Default
	// max(1, ceil(RateLimit)).
	RateBurst int
	// RateTableSize bounds how many addresses the limiter remembers; past
	// it, the least recently seen of a sample is forgotten. Default 65536.
	RateTableSize int
}

// TLSFiles names the PEM files of one HTTPS listener.
type TLSFiles struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, holds the CAs a client certificate must be
	// signed by; clients without one are refused.
	ClientCAFile string
}

func (f TLSFiles) enabled() bool { return f.CertFile != "" }

func (f TLSFiles) validate(flag string) error {
	switch {
	case (f.CertFile == "") != (f.KeyFile == ""):
		return fmt.Errorf("%s-cert-file and %s-key-file: set both or neither", flag, flag)
	case f.ClientCAFile != "" && f.CertFile == "":
		return fmt.Errorf("%s client CA: needs %s-cert-file and %s-key-file (mTLS is HTTPS only)", flag, flag, flag)
	}
	return nil
}

// Validate checks the security settings.
func (c Config) Validate() error {
	if err := c.PublicTLS.validate("http"); err != nil {
		return err
	}
	if err := c.AdminTLS.validate("admin"); err != nil {
		return err
	}
	if c.ProxyProtocol && len(c.TrustedProxies) == 0 {
		return errors.New("http-proxy-protocol: needs trusted-proxies (only they may send a PROXY header)")
	}
	if c.RateLimit < 0 || c.RateBurst < 0 || c.RateTableSize < 0 {
		return errors.New("rate-limit, rate-burst and the rate table size must not be negative")
	}
	return c.validateTimings()
}

// security is the Server's state for Security.
type security struct {
	trusted               []netip.Prefix
	publicCert, adminCert *certReloader
	adminCAs              *x509.CertPool // client CAs of the admin listener (mTLS); nil: none
	limiter               *limiterTable
	limited               prometheus.Counter
}

func (s *Server) initSecurity(reg prometheus.Registerer, limited prometheus.Counter) error {
	c := &s.cfg.Security
	m, err := newSecurityMetrics(reg)
	if err != nil {
		return err
	}
	s.sec.trusted = c.TrustedProxies
	s.sec.limited = limited
	if c.PublicTLS.enabled() {
		if s.sec.publicCert, err = newCertReloader("public", c.PublicTLS, c.CertCheckInterval, time.Now, s.log, m); err != nil {
			return err
		}
	}
	if c.AdminTLS.enabled() {
		if s.sec.adminCert, err = newCertReloader("admin", c.AdminTLS, c.CertCheckInterval, time.Now, s.log, m); err != nil {
			return err
		}
		if c.AdminTLS.ClientCAFile != "" {
			if s.sec.adminCAs, err = loadCertPool(c.AdminTLS.ClientCAFile); err != nil {
				return err
			}
		}
	}
	if c.RateLimit > 0 {
		s.sec.limiter = newLimiterTable(c.RateLimit, c.RateBurst, c.RateTableSize, time.Now, m)
	}
	return nil
}

// trusts reports whether peer is one of TrustedProxies.
func (sec *security) trusts(peer netip.Addr) bool {
	peer = peer.Unmap()
	for _, p := range sec.trusted {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// realIP returns the client address used for hashing and rate limiting:
// the peer's (after any PROXY protocol header), or, when the peer is a
// trusted proxy, the rightmost X-Forwarded-For hop that is not a trusted
// proxy (all trusted: the leftmost), else X-Real-IP. A malformed hop ends
// the walk at the last trusted one. It allocates nothing unless a header
// is malformed.
func (s *Server) realIP(req *http.Request) string {
	return s.forwardedIP(clientIP(req.RemoteAddr), req.Header["X-Forwarded-For"], req.Header["X-Real-Ip"])
}

// forwardedIP is realIP for a peer address ip and the values of its
// X-Forwarded-For and X-Real-IP headers, whichever server read them.
func (s *Server) forwardedIP(ip string, xs, xri []string) string {
	if len(s.sec.trusted) == 0 {
		return ip
	}
	if a, err := netip.ParseAddr(ip); err != nil || !s.sec.trusts(a) {
		return ip
	}
	if len(xs) > 0 {
		for i := len(xs) - 1; i >= 0; i-- {
			v := xs[i]
			for v != "" {
				var hop string
				if j := strings.LastIndexByte(v, ','); j >= 0 {
					hop, v = v[j+1:], v[:j]
				} else {
					hop, v = v, ""
				}
				if hop = strings.TrimSpace(hop); hop == "" {
					continue
				}
				a, host, ok := parseHop(hop)
				if !ok {
					return ip
				}
				if !s.sec.trusts(a) {
					return host
				}
				ip = host
			}
		}
		return ip
	}
	if len(xri) > 0 {
		if _, host, ok := parseHop(strings.TrimSpace(xri[0])); ok {
			return host
		}
	}
	return ip
}

// parseHop parses an address in a forwarding header: an IP, or an IP with
// a port ("192.0.2.1:80", "[2001:db8::1]:80").
func parseHop(s string) (netip.Addr, string, bool) {
	// Pick the form first: a failed parse allocates its error.
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return ap.Addr(), clientIP(s), true
		}
		return netip.Addr{}, "", false
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a, s, true
	}
	return netip.Addr{}, "", false
}

// peerAddr returns the IP of a connection's remote address.
func peerAddr(a net.Addr) (netip.Addr, error) {
	if t, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(t.IP); ok {
			return ip.Unmap(), nil
		}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("parse peer address: %w", err)
	}
	return ap.Addr().Unmap(), nil
}

// loadCertPool reads PEM certificates from path.
func loadCertPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("read client CA %s: no PEM certificate in it", path)
	}
	return pool, nil
}
