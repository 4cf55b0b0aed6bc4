package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/tcpdispatch/tcpdispatch"
)

// Config configures a Client. Start from DefaultConfig; New validates it.
// A Client never changes its Config: to change a field, build a new Client.
type Config struct {
	// Dispatcher is the DNS name of the dispatcher tier, "name" or
	// "name:port" (port default 80 for http, 443 for https). Every A and
	// AAAA record is used: the list is shuffled for each Dial and resolved
	// again after ResolveTTL. Optional if Bootstrap is set.
	Dispatcher string

	// Bootstrap lists dispatcher replicas as "ip:port" (or "host:port"),
	// tried together with the resolved Dispatcher records. With Bootstrap
	// alone the client never touches DNS ("IP direct" mode), so a broken or
	// hijacked resolver cannot keep it from a dispatcher.
	Bootstrap []string

	// Static lists tcp-server addresses "host:port" tried, shuffled, as the
	// last resort when neither the dispatchers nor the cache led to a
	// connection.
	Static []string

	// CachePath is the file that keeps the last-known-good tcp-servers
	// across restarts. Empty keeps the cache in memory only. The file is
	// replaced atomically (temp file, fsync, rename); a missing or corrupt
	// file is treated as empty.
	CachePath string

	// Key is sent as ?key= so that, with the hash strategy, this client
	// keeps landing on the same tcp-server while it is healthy. At most 256
	// bytes. Empty hashes on the client IP.
	Key string

	// N is how many servers one get-tcp-ip request asks for (?n=): the pick
	// plus N-1 alternatives, tried in order. 1..10, default 3.
	N int

	// RequestTimeout bounds one request to one dispatcher replica, and one
	// DNS lookup. Default 1s.
	RequestTimeout time.Duration

	// ConnectTimeout bounds one TCP connect to one tcp-server. Default 2s.
	ConnectTimeout time.Duration

	// ResolveTTL is how long the resolved Dispatcher records are used
	// before they are resolved again. A failed lookup keeps the previous
	// records and is retried after at most a second. Default 30s.
	ResolveTTL time.Duration

	// DemoteFor is how long a dispatcher replica that failed a request is
	// tried only after the others. Default 10s.
	DemoteFor time.Duration

	// Scheme is "http" (default) or "https" for dispatcher requests.
	Scheme string

	// TLSConfig configures HTTPS dispatcher requests (Scheme "https"): root
	// CAs, a client certificate. Its ServerName is replaced per request:
	// replicas resolved from Dispatcher must present a certificate for the
	// Dispatcher name (not for the IP dialled); Bootstrap entries one for
	// their own host, unless ServerName is set. Default: the system roots
	// (or HTTPClient's transport's TLSClientConfig).
	TLSConfig *tls.Config

	// Resolver resolves Dispatcher. Default net.DefaultResolver.
	Resolver Resolver

	// HTTPClient sends dispatcher requests. Its own Timeout, if any, applies
	// on top of RequestTimeout. Default: a client of its own that keeps no
	// idle connections (a client asks rarely, and a fleet of idle
	// keep-alives would weigh on the dispatchers) and ignores proxies. A
	// client whose Transport is an *http.Transport (or nil) is copied, with
	// a copy of the transport that does the TLS handshake itself to check
	// the certificate against the Dispatcher name (see TLSConfig).
	HTTPClient *http.Client

	// DialContext opens TCP connections to tcp-servers. Default
	// (&net.Dialer{}).DialContext.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// Hooks observe the client, for logs and metrics.
	Hooks Hooks

	// Now is the clock behind ResolveTTL, DemoteFor and session lifetimes.
	// Default time.Now.
	Now func() time.Time

	// Rand returns a uniform integer in [0, n) for n > 0; it must be safe
	// for concurrent use. It shuffles lists and draws backoff jitter.
	// Default math/rand/v2.Int64N.
	Rand func(n int64) int64
}

// Resolver looks up the addresses of a host name; *net.Resolver
// implements it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) (addrs []string, err error)
}

var _ Resolver = (*net.Resolver)(nil)

// Hooks are called synchronously from the goroutine calling Dial or Run,
// so they must be quick; nil hooks are skipped.
type Hooks struct {
	// OnDispatch is called after every request to a dispatcher replica.
	OnDispatch func(DispatchEvent)
	// OnConnect is called after every connect attempt to a tcp-server.
	OnConnect func(ConnectEvent)
	// OnError receives errors that do not fail the call in progress: a
	// failed DNS lookup (the previous records are kept), an unreadable or
	// unwritable cache file.
	OnError func(error)
}

// DispatchEvent describes one request to a dispatcher replica.
type DispatchEvent struct {
	Endpoint string        // host:port asked
	Status   int           // HTTP status; 0 when no response arrived
	Servers  []Server      // servers offered, on success
	Duration time.Duration // from sending to the end of the body
	Err      error         // nil on success
}

// ConnectEvent describes one connect attempt to a tcp-server.
type ConnectEvent struct {
	Server   Server
	Source   Source
	Duration time.Duration
	Err      error // nil on success
}

// DefaultConfig returns a Config with every default filled in; set
// Dispatcher and/or Bootstrap before calling New.
func DefaultConfig() Config {
	return Config{
		N:              3,
		RequestTimeout: time.Second,
		ConnectTimeout: 2 * time.Second,
		ResolveTTL:     30 * time.Second,
		DemoteFor:      10 * time.Second,
		Scheme:         "http",
	}
}

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.N == 0 {
		c.N = d.N
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = d.ConnectTimeout
	}
	if c.ResolveTTL == 0 {
		c.ResolveTTL = d.ResolveTTL
	}
	if c.DemoteFor == 0 {
		c.DemoteFor = d.DemoteFor
	}
	if c.Scheme == "" {
		c.Scheme = d.Scheme
	}
	return c
}

// Validate reports the first invalid field. Zero durations and N are
// valid: New replaces them with their defaults.
func (c Config) Validate() error {
	if c.Dispatcher == "" && len(c.Bootstrap) == 0 && len(c.Static) == 0 {
		return errors.New("client config: set Dispatcher, Bootstrap or Static")
	}
	if c.Dispatcher != "" {
		if _, _, err := splitDispatcher(c.Dispatcher, "http"); err != nil {
			return fmt.Errorf("client config: Dispatcher: %w", err)
		}
	}
	for _, a := range c.Bootstrap {
		if err := checkHostPort(a); err != nil {
			return fmt.Errorf("client config: Bootstrap: %w", err)
		}
	}
	for _, a := range c.Static {
		if err := checkHostPort(a); err != nil {
			return fmt.Errorf("client config: Static: %w", err)
		}
	}
	if c.N < 0 || c.N > tcpdispatch.MaxN {
		return fmt.Errorf("client config: N must be in 1..%d, not %d", tcpdispatch.MaxN, c.N)
	}
	if len(c.Key) > tcpdispatch.MaxKeyLen {
		return fmt.Errorf("client config: Key longer than %d bytes", tcpdispatch.MaxKeyLen)
	}
	for name, d := range map[string]time.Duration{
		"RequestTimeout": c.RequestTimeout, "ConnectTimeout": c.ConnectTimeout,
		"ResolveTTL": c.ResolveTTL, "DemoteFor": c.DemoteFor,
	} {
		if d < 0 {
			return fmt.Errorf("client config: %s must not be negative", name)
		}
	}
	switch c.Scheme {
	case "", "http", "https":
	default:
		return fmt.Errorf("client config: Scheme must be http or https, not %q", c.Scheme)
	}
	return nil
}

// splitDispatcher splits "name[:port]" and supplies the scheme's port.
func splitDispatcher(s, scheme string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(s)
	if err != nil {
		// No port: the whole string is the name.
		host, port = s, "80"
		if scheme == "https" {
			port = "443"
		}
	}
	if host == "" {
		return "", "", fmt.Errorf("%q: empty host", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", "", fmt.Errorf("%q: bad port", s)
	}
	return host, port, nil
}

// checkHostPort validates "host:port" with a numeric port.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	if host == "" {
		return fmt.Errorf("%q: empty host", s)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%q: bad port", s)
	}
	return nil
}
