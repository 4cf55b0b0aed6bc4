package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tcpdispatch/tcpdispatch"
)

// ErrNoServer is wrapped by the error Dial returns when neither a
// dispatcher, nor the cache, nor the static list led to a connection. The
// error also says how many requests and connects failed, and the last
// failure.
var ErrNoServer = errors.New("no tcp-server reachable")

// Server is one tcp-server as the dispatcher names it: the get-tcp-ip
// answer, defined by tcpdispatch.Server.
type Server tcpdispatch.Server

// Source says where the server of an Answer came from.
type Source int

const (
	// SourceDispatcher: a dispatcher replica offered the server in this Dial.
	SourceDispatcher Source = iota + 1
	// SourceCache: no dispatcher led to a connection; the server was in the
	// last-known-good cache.
	SourceCache
	// SourceStatic: the server came from Config.Static.
	SourceStatic
)

func (s Source) String() string {
	switch s {
	case SourceDispatcher:
		return "dispatcher"
	case SourceCache:
		return "cache"
	case SourceStatic:
		return "static"
	}
	return "Source(" + strconv.Itoa(int(s)) + ")"
}

// Answer describes the connection Dial made.
type Answer struct {
	Server
	Source Source
	// Dispatcher is the replica (host:port) that offered the server; empty
	// for SourceCache and SourceStatic.
	Dispatcher string
}

// Client dials tcp-servers through the dispatcher tier. It is safe for
// concurrent use and starts no goroutines.
type Client struct {
	cfg     Config
	host    string // Dispatcher name, "" when not set
	port    string // Dispatcher port
	static  []Server
	http    *http.Client
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	cache   *cache
	rand    func(int64) int64
	resolve chan struct{} // holds a token while a lookup runs: one at a time; others wait or use the old records

	mu         sync.Mutex
	resolved   []string             // host:port from the last good lookup
	nextLookup time.Time            // when resolved is due for renewal
	demoted    map[string]time.Time // endpoint -> tried last until then
}

// New returns a Client for cfg after validating it and loading the cache
// file, if any. An unreadable cache file is reported to Hooks.OnError and
// treated as empty, not as an error.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Client{cfg: cfg, demoted: map[string]time.Time{}, dial: cfg.DialContext, rand: cfg.Rand, resolve: make(chan struct{}, 1)}
	if cfg.Dispatcher != "" {
		c.host, c.port, _ = splitDispatcher(cfg.Dispatcher, cfg.Scheme)
	}
	if c.cfg.Resolver == nil {
		c.cfg.Resolver = net.DefaultResolver
	}
	if c.cfg.Now == nil {
		c.cfg.Now = time.Now
	}
	if c.rand == nil {
		c.rand = rand.Int64N
	}
	c.http = c.httpClient()
	if c.dial == nil {
		c.dial = (&net.Dialer{}).DialContext
	}
	for i, a := range cfg.Static {
		c.static = append(c.static, Server{ID: "static-" + strconv.Itoa(i), Addr: a})
	}
	var err error
	c.cache, err = loadCache(cfg.CachePath)
	if err != nil {
		c.onError(err)
	}
	return c, nil
}

// Dial returns a connection to a tcp-server and describes it. It tries, in
// order: the dispatcher replicas (each at most a few times, each request
// under RequestTimeout), the servers they offer (each address once, under
// ConnectTimeout), then the cached servers, then the static ones. It returns
// early with an error wrapping ctx.Err() when ctx ends, and otherwise an
// error wrapping ErrNoServer when nothing led to a connection.
func (c *Client) Dial(ctx context.Context) (net.Conn, Answer, error) {
	return c.dialAvoiding(ctx, nil)
}

// maxAsksPerReplica bounds how often one Dial asks the same replica: it asks
// again only while each answer brings servers not yet tried.
const maxAsksPerReplica = 4

// dialAvoiding is Dial with ids sent as ?exclude= from the first request on
// (a server the caller just lost); they may still be reached through the
// cache or the static list.
func (c *Client) dialAvoiding(ctx context.Context, avoid []string) (net.Conn, Answer, error) {
	d := dialRun{c: c, tried: map[string]bool{}}
	for _, id := range avoid {
		d.exclude(id)
	}
	for _, ep := range c.endpoints(ctx) {
		for range maxAsksPerReplica {
			if err := ctx.Err(); err != nil {
				return nil, Answer{}, fmt.Errorf("dial tcp-server: %w", err)
			}
			servers, err := c.ask(ctx, ep, d.excluded)
			if err != nil {
				d.asksFailed++
				d.last = err
				// A 503 may be caused by our own exclude list, which is
				// not the replica's fault; anything else is.
				var se *statusError
				isStatus := errors.As(err, &se)
				if !isStatus || se.code != http.StatusServiceUnavailable || len(d.excluded) == 0 {
					c.demote(ep.addr, 0)
				}
				if isStatus && se.retryAfter > 0 {
					// Asked to come back later: this replica goes last
					// until then, and a Reconnector waits that long.
					c.demote(ep.addr, se.retryAfter)
					d.retryAfter = max(d.retryAfter, se.retryAfter)
				}
				break
			}
			if err := c.cache.remember(servers, c.cfg.Now()); err != nil {
				c.onError(err)
			}
			fresh := false
			for _, s := range servers {
				if d.tried[s.Addr] {
					continue
				}
				fresh = true
				if conn, err := d.connect(ctx, s, SourceDispatcher); err == nil {
					return conn, Answer{Server: s, Source: SourceDispatcher, Dispatcher: ep.addr}, nil
				}
			}
			if !fresh || len(d.excluded) >= tcpdispatch.MaxExclude {
				break
			}
		}
	}
	for _, s := range c.cache.servers() {
		if conn, err := d.connect(ctx, s, SourceCache); err == nil {
			return conn, Answer{Server: s, Source: SourceCache}, nil
		}
	}
	static := append([]Server(nil), c.static...)
	c.shuffle(len(static), func(i, j int) { static[i], static[j] = static[j], static[i] })
	for _, s := range static {
		if conn, err := d.connect(ctx, s, SourceStatic); err == nil {
			return conn, Answer{Server: s, Source: SourceStatic}, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, Answer{}, fmt.Errorf("dial tcp-server: %w", err)
	}
	if d.last == nil {
		d.last = errors.New("no dispatcher and no server address known")
	}
	err := fmt.Errorf("%w: %d dispatcher requests and %d connects failed; last: %w",
		ErrNoServer, d.asksFailed, d.connectsFailed, d.last)
	if d.retryAfter > 0 {
		err = &dialError{err: err, retryAfter: d.retryAfter}
	}
	return nil, Answer{}, err
}

// dialRun is the state of one Dial.
type dialRun struct {
	c                          *Client
	tried                      map[string]bool // addresses already tried
	excluded                   []string        // ids for ?exclude=
	asksFailed, connectsFailed int
	last                       error
	retryAfter                 time.Duration // longest Retry-After received
}

func (d *dialRun) exclude(id string) {
	if id == "" || len(d.excluded) >= tcpdispatch.MaxExclude {
		return
	}
	for _, e := range d.excluded {
		if e == id {
			return
		}
	}
	d.excluded = append(d.excluded, id)
}

// connect tries s unless its address was tried in this Dial.
func (d *dialRun) connect(ctx context.Context, s Server, src Source) (net.Conn, error) {
	if d.tried[s.Addr] {
		return nil, errTried
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.tried[s.Addr] = true
	conn, err := d.c.connect(ctx, s, src)
	if err != nil {
		d.connectsFailed++
		d.last = err
		if src == SourceDispatcher {
			d.exclude(s.ID)
		}
	}
	return conn, err
}

var errTried = errors.New("address already tried")

func (c *Client) connect(ctx context.Context, s Server, src Source) (net.Conn, error) {
	start := c.cfg.Now()
	cctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	conn, err := c.dial(cctx, "tcp", s.Addr)
	if err != nil {
		err = fmt.Errorf("connect %s (%s): %w", s.ID, s.Addr, err)
	}
	if h := c.cfg.Hooks.OnConnect; h != nil {
		h(ConnectEvent{Server: s, Source: src, Duration: c.cfg.Now().Sub(start), Err: err})
	}
	return conn, err
}

// maxBody caps a get-tcp-ip response; a real one is well under 2 KiB.
const maxBody = 64 << 10

// ask sends one get-tcp-ip request to ep and returns the valid servers of
// the answer, the pick first.
func (c *Client) ask(ctx context.Context, ep endpoint, exclude []string) (servers []Server, err error) {
	start := c.cfg.Now()
	status := 0
	defer func() {
		if h := c.cfg.Hooks.OnDispatch; h != nil {
			h(DispatchEvent{Endpoint: ep.addr, Status: status, Servers: servers, Duration: c.cfg.Now().Sub(start), Err: err})
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	q := url.Values{"n": {strconv.Itoa(c.cfg.N)}}
	if c.cfg.Key != "" {
		q.Set("key", c.cfg.Key)
	}
	if len(exclude) > 0 {
		q.Set("exclude", strings.Join(exclude, ","))
	}
	u := url.URL{Scheme: c.cfg.Scheme, Host: ep.addr, Path: tcpdispatch.GetTCPIPPath, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("ask %s: %w", ep.addr, err)
	}
	if ep.host != "" {
		req.Host = ep.host
		// Verify the certificate against the name, not the IP dialled.
		req = req.WithContext(context.WithValue(ctx, serverNameKey{}, c.host))
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask %s: %w", ep.addr, err)
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("ask %s: read body: %w", ep.addr, err)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("ask %s: body over %d bytes", ep.addr, maxBody)
	}
	if resp.StatusCode != http.StatusOK {
		var e tcpdispatch.ErrorBody
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		se := &statusError{endpoint: ep.addr, code: resp.StatusCode, status: resp.Status, msg: msg}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			se.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.cfg.Now())
		}
		return nil, se
	}
	var a tcpdispatch.Answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("ask %s: decode answer: %w", ep.addr, err)
	}
	first := Server(a.Server)
	if err := first.check(); err != nil {
		return nil, fmt.Errorf("ask %s: bad answer: %w", ep.addr, err)
	}
	servers = append(servers, first)
	for _, s := range a.Alternatives {
		if len(servers) == c.cfg.N {
			break
		}
		if s := Server(s); s.check() == nil {
			servers = append(servers, s)
		}
	}
	return servers, nil
}

// statusError is a dispatcher's non-200 answer.
type statusError struct {
	endpoint, status, msg string
	code                  int
	retryAfter            time.Duration // from Retry-After on 429 and 503
}

func (e *statusError) Error() string {
	return fmt.Sprintf("ask %s: %s: %s", e.endpoint, e.status, e.msg)
}

// check validates a server named by a dispatcher or the cache file.
func (s Server) check() error {
	if err := tcpdispatch.CheckIDLen(s.ID); err != nil {
		return err
	}
	return checkHostPort(s.Addr)
}

// endpoint is one dispatcher replica to ask.
type endpoint struct {
	addr string // host:port to connect to
	host string // Host header (the Dispatcher name) when addr came from DNS
}

// endpoints returns the replicas for one Dial: the bootstrap list and the
// resolved Dispatcher records, deduplicated and shuffled, with recently
// failed ones last.
func (c *Client) endpoints(ctx context.Context) []endpoint {
	var eps []endpoint
	seen := map[string]bool{}
	for _, a := range c.cfg.Bootstrap {
		if !seen[a] {
			seen[a] = true
			eps = append(eps, endpoint{addr: a})
		}
	}
	hostHeader := c.cfg.Dispatcher
	for _, a := range c.resolveDispatcher(ctx) {
		if !seen[a] {
			seen[a] = true
			eps = append(eps, endpoint{addr: a, host: hostHeader})
		}
	}
	c.shuffle(len(eps), func(i, j int) { eps[i], eps[j] = eps[j], eps[i] })
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	good := eps[:0:0]
	var bad []endpoint
	for _, ep := range eps {
		if until, ok := c.demoted[ep.addr]; ok {
			if now.Before(until) {
				bad = append(bad, ep)
				continue
			}
			delete(c.demoted, ep.addr)
		}
		good = append(good, ep)
	}
	return append(good, bad...)
}

// demote tries addr last for DemoteFor, or for atLeast if longer.
func (c *Client) demote(addr string, atLeast time.Duration) {
	until := c.cfg.Now().Add(max(c.cfg.DemoteFor, atLeast))
	c.mu.Lock()
	if until.After(c.demoted[addr]) {
		c.demoted[addr] = until
	}
	c.mu.Unlock()
}

// resolveRetry is how soon a failed lookup is retried.
const resolveRetry = time.Second

// resolveDispatcher returns the Dispatcher records as host:port, looking
// them up again when they are older than ResolveTTL. A failed or empty
// lookup keeps the previous records.
func (c *Client) resolveDispatcher(ctx context.Context) []string {
	if c.host == "" {
		return nil
	}
	// One lookup at a time. A Dial that finds one in flight uses the
	// records it has rather than wait; with none yet, it waits for the
	// lookup (bounded by RequestTimeout) or its own ctx.
	select {
	case c.resolve <- struct{}{}:
	default:
		c.mu.Lock()
		old := c.resolved
		c.mu.Unlock()
		if len(old) > 0 {
			return old
		}
		select {
		case c.resolve <- struct{}{}: // the lookup in flight ended
		case <-ctx.Done():
			return nil
		}
	}
	defer func() { <-c.resolve }()
	now := c.cfg.Now()
	c.mu.Lock()
	old, due := c.resolved, !now.Before(c.nextLookup)
	c.mu.Unlock()
	if !due {
		return old
	}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	ips, err := c.cfg.Resolver.LookupHost(lctx, c.host)
	if err == nil && len(ips) == 0 {
		err = errors.New("no address")
	}
	if err != nil {
		c.mu.Lock()
		c.nextLookup = now.Add(min(c.cfg.ResolveTTL, resolveRetry))
		c.mu.Unlock()
		if ctx.Err() == nil {
			c.onError(fmt.Errorf("resolve %s: %w", c.host, err))
		}
		return old
	}
	addrs := make([]string, 0, len(ips))
	for _, ip := range ips {
		addrs = append(addrs, net.JoinHostPort(ip, c.port))
	}
	c.mu.Lock()
	c.resolved, c.nextLookup = addrs, now.Add(c.cfg.ResolveTTL)
	c.mu.Unlock()
	return addrs
}

// shuffle is a Fisher-Yates shuffle drawing from Config.Rand.
func (c *Client) shuffle(n int, swap func(i, j int)) {
	for i := n - 1; i > 0; i-- {
		swap(i, int(c.rand(int64(i+1))))
	}
}

func (c *Client) onError(err error) {
	if h := c.cfg.Hooks.OnError; h != nil {
		h(err)
	}
}
