// Package api serves the dispatcher's HTTP contract (echo; the public
// listener's lookup routes on fasthttp, see fast.go):
//
//	GET /get-tcp-ip   one tcp-server for this client (?key= ?exclude= ?format= ?n=)
//	GET /v1/servers   this replica's view of every registered server
//	GET /v1/status    replica name, leader, snapshot revision and age, etcd reachability
//	GET /healthz      the process is alive
//	GET /readyz       has a snapshot and is not shutting down
//	GET /metrics      Prometheus metrics
//	GET /ui           the live status page (ui.go), fed by /v1/status and /v1/fleet
//	GET /v1/fleet     compact fleet view for the status page: replicas, servers, picks/s
//
// api/openapi.yaml documents every route, its fields and error bodies.
//
// With an admin listener (Listeners.Admin) /v1/*, /metrics and
// /debug/pprof/ are served there and not on the public one; see routes.go
// for where each route goes and security.go for HTTPS, trusted proxies and
// the rate limit.
//
// Every answer comes from the replica's local snapshot: no request waits on
// etcd, so lookups keep working, stale but valid, while etcd is unreachable.
package api

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/tcpdispatch/tcpdispatch"
	"github.com/tcpdispatch/tcpdispatch/internal/logging"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// Source is the local copy of the key space. *store.Watcher implements it.
type Source interface {
	// Snapshot returns the current snapshot or nil; it must not block.
	Snapshot() *store.Snapshot
	// Sync says up to which etcd revision the copy is known current.
	Sync() store.Sync
	// Age is how long ago etcd last confirmed the copy, -1 if never.
	Age() time.Duration
	// Reachable reports whether etcd confirmed the copy recently.
	Reachable() bool
}

// LeaderState reports whether this replica leads. *election.Election
// implements it.
type LeaderState interface {
	IsLeader() bool
}

// Config configures the HTTP server.
type Config struct {
	// Name is the replica name reported by /v1/status.
	Name string
	// ReadHeaderTimeout bounds reading request headers (slowloris). Default 5s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request. Default 10s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response. Default 10s.
	WriteTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections. Default 60s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds request headers; larger ones get 431. Default 16 KiB.
	MaxHeaderBytes int
	// LameDuck is how long /readyz fails before the listener closes on
	// shutdown, so load balancers and DNS health checks move clients away
	// while get-tcp-ip still answers. Default 2s; zero means none (it is
	// not replaced by the default); negative is rejected.
	LameDuck time.Duration
	// ShutdownTimeout bounds waiting for in-flight requests after the lame
	// duck window. Default 5s.
	ShutdownTimeout time.Duration
	// MetricsPerServer exports the tcpdispatch_server_* series, five per
	// registered server (see metrics.go). True in DefaultConfig.
	MetricsPerServer bool
	// EventLoop serves a plain-HTTP public listener (no PublicTLS, no
	// ProxyProtocol) from epoll event loops on Linux: GET and HEAD of
	// get-tcp-ip, /healthz and /readyz are answered there with one read and
	// one write per request, every other request by fasthttp as without
	// it (loop_linux.go). Ignored with TLS or the PROXY protocol, and off
	// Linux. True in DefaultConfig.
	EventLoop bool

	// Security knobs of the listeners; see security.go and
	// docs/SECURITY.md#http-listeners.
	Security
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		LameDuck:          2 * time.Second,
		ShutdownTimeout:   5 * time.Second,
		MetricsPerServer:  true,
		EventLoop:         true,
		Security:          Security{CertCheckInterval: time.Second},
	}
}

// withDefaults returns c with each zero timeout and MaxHeaderBytes replaced
// by its DefaultConfig value. LameDuck is not filled in: zero means no
// lame-duck window (--shutdown-delay=0).
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.ReadHeaderTimeout = cmp.Or(c.ReadHeaderTimeout, d.ReadHeaderTimeout)
	c.ReadTimeout = cmp.Or(c.ReadTimeout, d.ReadTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, d.WriteTimeout)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, d.IdleTimeout)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, d.ShutdownTimeout)
	c.MaxHeaderBytes = cmp.Or(c.MaxHeaderBytes, d.MaxHeaderBytes)
	c.CertCheckInterval = cmp.Or(c.CertCheckInterval, d.CertCheckInterval)
	return c
}

// validateTimings rejects negative durations and sizes; zero ones are valid
// (New replaces them by their defaults, except LameDuck: see Config).
func (c Config) validateTimings() error {
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": c.ReadHeaderTimeout, "ReadTimeout": c.ReadTimeout, "WriteTimeout": c.WriteTimeout,
		"IdleTimeout": c.IdleTimeout, "ShutdownTimeout": c.ShutdownTimeout, "CertCheckInterval": c.CertCheckInterval,
		"LameDuck (shutdown-delay)": c.LameDuck,
	} {
		if d < 0 {
			return fmt.Errorf("api: %s %v must not be negative", name, d)
		}
	}
	if c.MaxHeaderBytes < 0 {
		return fmt.Errorf("api: MaxHeaderBytes %d must not be negative", c.MaxHeaderBytes)
	}
	return nil
}

// Server is the replica's HTTP front.
type Server struct {
	cfg      Config
	src      Source
	leader   LeaderState
	log      *logrus.Entry
	echo     *echo.Echo // every route: served when there is no admin listener
	public   *echo.Echo // public routes only
	admin    *echo.Echo // operator routes only
	draining atomic.Bool
	// degraded counts answers given from the all-down fallback; it backs
	// tcpdispatch_degraded_answers_total and /v1/status.
	degraded atomic.Uint64
	metrics  *metrics
	rates    pickRates
	sec      security

	picks, noServer, badRequest, heads prometheus.Counter
	// badAdmin counts admin requests rejected for bad parameters, by route.
	badAdmin *prometheus.CounterVec
}

// New returns a server answering from src. gatherer serves /metrics when
// not nil; reg receives the server's own metrics when not nil.
func New(cfg Config, src Source, leader LeaderState, log *logrus.Entry, reg prometheus.Registerer, gatherer prometheus.Gatherer) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = logging.OrDiscard(log)
	requests := newRequestsCounter()
	s := &Server{cfg: cfg, src: src, leader: leader, log: log,
		picks: requests.WithLabelValues("ok"), noServer: requests.WithLabelValues("no_server"),
		badRequest: requests.WithLabelValues("bad_request"), heads: requests.WithLabelValues("head"),
		badAdmin: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tcpdispatch_admin_bad_requests_total",
			Help: "Admin requests answered 400 for bad parameters, by route."}, []string{"route"})}
	m, err := newMetrics(reg, requests, s)
	if err != nil {
		return nil, err
	}
	s.metrics = m

	if err := s.initSecurity(reg, requests.WithLabelValues("rate_limited")); err != nil {
		return nil, err
	}
	public, admin := s.publicRoutes(), s.adminRoutes(gatherer)
	s.echo = s.newEcho(append(append([]route(nil), public...), admin...)...)
	s.public = s.newEcho(public...)
	s.admin = s.newEcho(append(admin, s.adminOnlyRoutes()...)...)
	return s, nil
}

// newEcho returns an echo instance serving routes.
func (s *Server) newEcho(routes ...route) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Logger.SetOutput(logWriter{s.log})
	// Hash on the peer address: a forwarded-for header is the client's to
	// forge, and would let one client pick any server. (Headers from
	// --trusted-proxies are believed in realIP, not here.)
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = s.errorHandler
	// Handlers are wrapped here, once: echo applies e.Use and route
	// middleware anew on every request, which allocates.
	for _, r := range routes {
		methods := r.methods
		if methods == nil {
			// HEAD as well: load balancers often health-check with it.
			methods = []string{http.MethodGet, http.MethodHead}
		}
		e.Match(methods, r.path, s.recoverPanics(r.h))
	}
	return e
}

// Handler returns the HTTP handler, for tests and benchmarks.
func (s *Server) Handler() http.Handler { return s.echo }

// Run serves every route on ln until ctx is cancelled; it is Serve with
// only a public listener.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	return s.Serve(ctx, Listeners{Public: ln})
}

// Shared header values: assigning them avoids the slice Header.Set
// allocates. net/http only reads them.
var (
	contentJSON = []string{"application/json"}
	contentText = []string{"text/plain; charset=utf-8"}
	noStore     = []string{"no-store"}
)

// getTCPIP answers get-tcp-ip through echo (admin listener, Handler);
// the public listener answers it in fast.go. Both write lookup's reply.
func (s *Server) getTCPIP(c echo.Context) error {
	req := c.Request()
	var r reply
	s.lookup(req.Method == http.MethodHead, req.URL.RawQuery, s.realIP(req), &r)
	return r.writeEcho(c)
}

// noSnapshotReason is the 503 reason of every route that needs a snapshot
// before the replica has one.
const noSnapshotReason = "no snapshot yet: this replica has not reached etcd since it started"

func noServerReason(snap *store.Snapshot, excluded int) string {
	if excluded > 0 {
		return fmt.Sprintf("no healthy server: %d registered, %d eligible, %d excluded by the request", len(snap.Servers), snap.Eligible(), excluded)
	}
	return fmt.Sprintf("no healthy server: %d registered, %d eligible", len(snap.Servers), snap.Eligible())
}

// serversResponse is the body of /v1/servers.
type serversResponse struct {
	Name          string   `json:"name"`
	Revision      int64    `json:"revision"`
	SnapshotAgeMs int64    `json:"snapshot_age_ms"`
	Strategy      string   `json:"strategy"`
	Leader        string   `json:"leader"`
	Problems      []string `json:"problems,omitempty"`
	// Panic is set while too few servers are eligible and every healthy
	// one is served (see store.Balancing).
	Panic     bool          `json:"panic"`
	Balancing balancingView `json:"balancing"`
	Servers   []serverView  `json:"servers"`
	// Next, when ?limit= cut the list, is the cursor of the next page: pass
	// it as ?after= (with the same state filter).
	Next string `json:"next,omitempty"`
}

// serverView is one server in /v1/servers: the server as the dispatcher
// lists it plus the live count of clients this replica sent it since its
// last load report.
type serverView struct {
	store.ServerInfo
	// StatusURL hides the embedded one: its query string and credentials
	// are redacted (keyspace.RedactURL), as they may hold a token.
	StatusURL string `json:"status_url,omitempty"`
	Assigned  int64  `json:"assigned"`
}

// balancingView is store.Balancing with durations in a readable form.
type balancingView struct {
	SlowStart         string  `json:"slow_start"`
	PanicThreshold    float64 `json:"panic_threshold"`
	OverloadThreshold float64 `json:"overload_threshold"`
	OverloadRecover   float64 `json:"overload_recover"`
	HashLoadFactor    float64 `json:"hash_load_factor"`
	Accounting        bool    `json:"assignment_accounting"`
	MassRemoval       string  `json:"mass_removal"`
	AllDown           string  `json:"all_down"`
	// Rebalancing of long-lived connections (docs/BALANCING.md).
	Rebalance          string  `json:"rebalance"`
	RebalanceTolerance float64 `json:"rebalance_tolerance"`
	RebalanceRate      string  `json:"rebalance_rate"`
}

func (s *Server) servers(c echo.Context) error {
	snap := s.src.Snapshot()
	if snap == nil {
		return writeError(c, http.StatusServiceUnavailable, noSnapshotReason)
	}
	pg, err := parseServersPage(c.QueryParams())
	if err != nil {
		s.badAdmin.WithLabelValues("/v1/servers").Inc()
		return writeError(c, http.StatusBadRequest, err.Error())
	}
	page, next := pg.page(snap.Servers)
	b := snap.Balancing
	resp := serversResponse{
		Name: s.cfg.Name, Revision: s.src.Sync().Revision, SnapshotAgeMs: ageMs(s.src.Age()),
		Strategy: string(snap.Strategy), Leader: snap.Leader, Problems: snap.Problems, Panic: snap.Panic,
		Balancing: balancingView{SlowStart: b.SlowStart.String(), PanicThreshold: b.PanicThreshold,
			OverloadThreshold: b.OverloadThreshold, OverloadRecover: b.OverloadRecover, HashLoadFactor: b.HashLoadFactor,
			Accounting: b.Accounting, MassRemoval: string(b.MassRemoval), AllDown: string(b.AllDown),
			Rebalance: string(b.Rebalance.Mode), RebalanceTolerance: b.Rebalance.Tolerance, RebalanceRate: b.Rebalance.Rate.String()},
		Next: next,
	}
	if c.QueryParams().Has("pretty") {
		resp.Servers = make([]serverView, len(page))
		for i := range page {
			resp.Servers[i] = viewOf(page[i])
		}
		return c.JSONPretty(http.StatusOK, resp, "  ")
	}
	return streamServers(c.Response(), &resp, page)
}

// viewOf is srv as /v1/servers lists it.
func viewOf(srv *store.Server) serverView {
	v := serverView{ServerInfo: srv.Info(), Assigned: srv.Assigned()}
	if u := srv.StatusURL; u != "" {
		v.StatusURL = keyspace.RedactURL(u)
	}
	return v
}

// streamServers writes resp with page as its servers, encoding one server
// at a time into the response: the whole list (4 MB at 10,000 servers) is
// never held, nor its views, which made every full listing raise the
// replica's heap by three times that for its length. The bytes are
// encoding/json's for resp, with a newline between servers.
func streamServers(w *echo.Response, resp *serversResponse, page []*store.Server) error {
	head, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	// head is resp with "servers":null; the servers go in its place.
	const hole = `"servers":null`
	at := bytes.Index(head, []byte(hole))
	if at < 0 {
		return fmt.Errorf("servers response: no %s in %s", hole, head)
	}
	w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.WriteHeader(http.StatusOK)
	bw := serversBufs.Get().(*bufio.Writer)
	bw.Reset(newFlushing(w))
	defer func() {
		bw.Reset(nil)
		serversBufs.Put(bw)
	}()
	enc := json.NewEncoder(bw)
	bw.Write(head[:at])
	bw.WriteString(`"servers":[`)
	for i := range page {
		if i > 0 {
			bw.WriteByte(',')
		}
		if err := enc.Encode(viewOf(page[i])); err != nil {
			return err
		}
	}
	bw.WriteByte(']')
	bw.Write(head[at+len(hole):])
	bw.WriteByte('\n')
	return bw.Flush()
}

var serversBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// flushing writes to w and flushes it after every write, so that each
// chunk a streaming handler's buffer fills goes to the client at once. On
// the public listener, fasthttpadaptor otherwise holds the whole body (a
// 3.4 MB /v1/servers at 10,000 servers, and its copy in fasthttp's
// response) until the handler returns: 25 MB allocated per full listing
// and the heap up by 23–30 MB, against 6 MB and 8–10 MB streamed. On
// net/http (the admin listener) bodies were chunked past 4 kB anyway. A
// writer that cannot flush just buffers.
type flushing struct {
	w  io.Writer
	rc *http.ResponseController
}

func newFlushing(w http.ResponseWriter) flushing {
	rw := w
	if r, ok := w.(*echo.Response); ok {
		rw = r.Writer // echo's own Flush panics where flushing is not supported
	}
	return flushing{w: w, rc: http.NewResponseController(rw)}
}

func (f flushing) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		_ = f.rc.Flush()
	}
	return n, err
}

// statusResponse is the body of /v1/status.
type statusResponse struct {
	Name          string `json:"name"`
	Leader        string `json:"leader"`
	IsLeader      bool   `json:"is_leader"`
	LeaderEpoch   int64  `json:"leader_epoch"`
	Revision      int64  `json:"revision"`
	SnapshotAgeMs int64  `json:"snapshot_age_ms"`
	Etcd          string `json:"etcd"`
	Ready         bool   `json:"ready"`
	Strategy      string `json:"strategy"`
	Servers       int    `json:"servers"`
	Eligible      int    `json:"eligible"`
	Panic         bool   `json:"panic"`
	// AllDown is set while servers are registered, none is eligible and
	// get-tcp-ip answers degraded from all of them (config/all-down serve).
	AllDown bool `json:"all_down"`
	// DegradedAnswers counts get-tcp-ip answers given while all down.
	DegradedAnswers uint64 `json:"degraded_answers"`
	// OldestVerdictAgeSeconds is the age of the oldest health verdict among
	// the servers get-tcp-ip may return; 0 when none has one.
	OldestVerdictAgeSeconds float64 `json:"oldest_verdict_age_seconds"`
	// Problems lists rejected operator values outside server keys and
	// election keys that block every election.
	Problems []string `json:"problems,omitempty"`
}

func (s *Server) status(c echo.Context) error {
	st := statusResponse{Name: s.cfg.Name, IsLeader: s.leader.IsLeader(), Revision: s.src.Sync().Revision,
		SnapshotAgeMs: ageMs(s.src.Age()), Etcd: "unreachable", DegradedAnswers: s.degraded.Load()}
	if s.src.Reachable() {
		st.Etcd = "ok"
	}
	if snap := s.src.Snapshot(); snap != nil {
		st.Leader, st.LeaderEpoch = snap.Leader, snap.LeaderEpoch
		st.Strategy, st.Servers, st.Eligible, st.Panic = string(snap.Strategy), len(snap.Servers), snap.Eligible(), snap.Panic
		st.AllDown, st.Problems = snap.AllDown, snap.Problems
		st.OldestVerdictAgeSeconds = snap.OldestVerdictAge(time.Now()).Seconds()
		st.Ready = !s.draining.Load()
	}
	// This replica's own term is known before its snapshot's watch brings
	// the new election key: is_leader, leader and leader_epoch agree.
	if le, ok := s.leader.(interface{ LeaderEpoch() int64 }); ok && st.IsLeader {
		if epoch := le.LeaderEpoch(); epoch != 0 {
			st.Leader, st.LeaderEpoch = s.cfg.Name, epoch
		}
	}
	return c.JSON(http.StatusOK, st)
}

func (s *Server) readyz(c echo.Context) error {
	var r reply
	s.ready(&r)
	return r.writeEcho(c)
}

func ageMs(d time.Duration) int64 {
	if d < 0 {
		return -1
	}
	return d.Milliseconds()
}

func writeError(c echo.Context, code int, msg string) error {
	return c.JSON(code, tcpdispatch.ErrorBody{Error: msg})
}

// errorHandler answers echo's own errors (404, 405, panics) in the same
// JSON shape as ours.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, "internal error"
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code, msg = he.Code, fmt.Sprint(he.Message)
	} else {
		s.log.WithError(err).WithField("path", c.Request().URL.Path).Error("request failed")
	}
	if werr := writeError(c, code, msg); werr != nil {
		s.log.WithError(werr).Debug("write error response")
	}
}

// recoverPanics turns a handler panic into a 500 and a log line. echo's
// Recover middleware allocates on every request; this wrapper is built once
// per route.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		defer func() {
			if r := recover(); r != nil {
				s.panicked(c, r)
			}
		}()
		return next(c)
	}
}

func (s *Server) panicked(c echo.Context, r any) {
	if r == http.ErrAbortHandler {
		panic(r)
	}
	s.log.WithField("panic", r).WithField("stack", string(debug.Stack())).Error("handler panicked")
	s.errorHandler(echo.NewHTTPError(http.StatusInternalServerError, "internal error"), c)
}

// logWriter routes echo's internal logger to logrus at debug level.
type logWriter struct{ log *logrus.Entry }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Debug(string(p))
	return len(p), nil
}
