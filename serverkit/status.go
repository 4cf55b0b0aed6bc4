// Package serverkit makes a tcp-server dispatchable by tcpdispatch.
//
// The dispatcher pulls everything it needs from a tcp-server: it connects
// to the server's address to probe it, and it may read a status document
// (operators register its URL as the etcd key
// <prefix>servers/<id>/status-url). The kit serves that document, counts
// connections for it, and drains a server before it exits:
//
//   - Status counts the connections it tracks (Track), knows the server's
//     limit (max_conns) and load, and serves the document over HTTP.
//   - Status.Drain stops accepting, reports draining, and closes the
//     connections over a window, the idlest first, so that clients come
//     back to other servers spread over the window rather than in one wave.
//   - Server runs an accept loop with all of the above.
//
// The package depends on the standard library and the contract package
// tcpdispatch (itself standard library only). Self-registration in
// etcd (the "push" alternative to the dispatcher's pull) lives in
// serverkit/register, so servers that do not use it do not link etcd.
//
// # The status document
//
//	{"conns": 12, "max_conns": 1000, "load": 0.012, "draining": false}
//
// conns is the number of tracked connections; max_conns 0 means unlimited;
// load is the server's own figure in [0, 1], by default conns/max_conns
// (0 when unlimited). The answer is 200 while serving and 503, with the
// same body, while draining. Readers ignore unknown fields. shed_total
// counts the connections shed for rebalancing.
//
// # Rebalancing
//
// The leader may add ?shed=N to its pull of the status URL: the server then
// sheds N connections, the idlest first, each after the application's
// goodbye (SetOnShed, Config.OnShed); see Status.Shed and docs/BALANCING.md.
package serverkit

import (
	"encoding/json"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcpdispatch/tcpdispatch"
)

// Document is the status document a Status serves; tcpdispatch.Status
// defines it for the kit and the dispatcher that reads it.
type Document = tcpdispatch.Status

// Status tracks a tcp-server's connections, limit, load and draining state,
// and serves them as the status document. It is safe for concurrent use.
type Status struct {
	maxConns int64
	load     func() float64
	now      func() time.Time

	conns     atomic.Int64
	draining  atomic.Bool
	drainOnce sync.Once
	drainCh   chan struct{}

	mu      sync.Mutex
	tracked map[*trackedConn]struct{}
	left    chan struct{} // signalled when a tracked conn closes, for Drain

	// Rebalancing (shed.go): the goodbye hook, the connections being shed
	// now (guarded by mu), the total shed and the goroutines saying goodbye.
	onShed      func(net.Conn)
	shedTimeout time.Duration
	shedding    int64
	shedTotal   atomic.Int64
	shedWG      sync.WaitGroup
}

var _ http.Handler = (*Status)(nil)

// NewStatus returns a Status for a server accepting up to maxConns
// connections (0 or less: unlimited). load, when not nil, supplies the
// document's load figure; it is called on every status request and must be
// safe for concurrent use. Results outside [0, 1] are clamped; NaN falls
// back to the default figure.
func NewStatus(maxConns int, load func() float64) *Status {
	return &Status{
		maxConns: int64(max(maxConns, 0)),
		load:     load,
		now:      time.Now,
		drainCh:  make(chan struct{}),
		tracked:  map[*trackedConn]struct{}{},
		left:     make(chan struct{}, 1),

		shedTimeout: DefaultShedTimeout,
	}
}

// Track counts c until it is closed and returns the wrapper to use in its
// place: closing the wrapper (more than once is fine) stops the count. The
// wrapper records the time of the last read or write, which Drain uses to
// close the idlest connections first. NetConn returns the original.
func (s *Status) Track(c net.Conn) net.Conn {
	tc := &trackedConn{Conn: c, s: s}
	tc.touch()
	s.mu.Lock()
	s.tracked[tc] = struct{}{}
	s.mu.Unlock()
	s.conns.Add(1)
	return tc
}

// Conns returns the number of tracked connections.
func (s *Status) Conns() int { return int(s.conns.Load()) }

// MaxConns returns the limit given to NewStatus; 0 is unlimited.
func (s *Status) MaxConns() int { return int(s.maxConns) }

// Full reports whether the limit is reached.
func (s *Status) Full() bool { return s.maxConns > 0 && s.conns.Load() >= s.maxConns }

// SetDraining marks the server as draining: the document says so and is
// served with status 503, and Draining's channel is closed. It cannot be
// undone: a drained server exits.
func (s *Status) SetDraining() {
	s.drainOnce.Do(func() {
		s.draining.Store(true)
		close(s.drainCh)
	})
}

// Draining returns a channel closed when draining starts, so connection
// handlers can tell their clients to go elsewhere in their own protocol
// before Drain closes them.
func (s *Status) Draining() <-chan struct{} { return s.drainCh }

// Document returns the current status document.
func (s *Status) Document() Document {
	d := Document{Conns: s.conns.Load(), MaxConns: s.maxConns, Draining: s.draining.Load(), ShedTotal: s.shedTotal.Load()}
	if d.MaxConns > 0 {
		d.Load = min(float64(d.Conns)/float64(d.MaxConns), 1)
	}
	if s.load != nil {
		if l := s.load(); !math.IsNaN(l) {
			d.Load = min(max(l, 0), 1)
		}
	}
	return d
}

// ServeHTTP serves the document to GET and HEAD: 200 while serving, 503
// while draining.
func (s *Status) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := s.shedRequest(r); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d := s.Document()
	b, _ := json.Marshal(d) // a struct of numbers and a bool cannot fail
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if d.Draining {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	if r.Method == http.MethodGet {
		_, _ = w.Write(append(b, '\n'))
	}
}

func (s *Status) untrack(c *trackedConn) {
	s.mu.Lock()
	delete(s.tracked, c)
	s.mu.Unlock()
	s.conns.Add(-1)
	select {
	case s.left <- struct{}{}:
	default:
	}
}

// trackedConn is a net.Conn counted by a Status.
type trackedConn struct {
	net.Conn
	s      *Status
	last   atomic.Int64 // UnixNano of the last read or write
	shed   bool         // taken by Shed; guarded by s.mu
	closed sync.Once
}

func (c *trackedConn) touch() { c.last.Store(c.s.now().UnixNano()) }

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.touch()
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.touch()
	}
	return n, err
}

// Close closes the connection and stops counting it.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() { c.s.untrack(c) })
	return err
}

// NetConn returns the wrapped connection.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }
