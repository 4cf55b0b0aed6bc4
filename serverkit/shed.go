package serverkit

import (
	"cmp"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// ShedParam is the query parameter of the status URL by which the leader
// asks a server to shed connections for rebalancing: GET /status?shed=N
// (see docs/BALANCING.md). Servers that do not know it ignore it.
const ShedParam = "shed"

// MaxShed bounds the N of one ?shed=N request.
const MaxShed = 1 << 30

// DefaultShedTimeout is the write deadline set on a connection before
// OnShed is called with it.
const DefaultShedTimeout = time.Second

// SetOnShed sets the goodbye hook of shedding: fn is called with each
// connection Shed takes, before Shed closes it, so the application can send
// its own goodbye (a protocol message asking the client to reconnect after
// a jittered delay). The connection carries a write deadline of timeout (0
// or less: DefaultShedTimeout) so a stuck client cannot hold a shed up. fn
// runs concurrently with the connection's handler: its writes must be safe
// against the handler's (whole Write calls on a net.Conn are). A nil fn
// only closes. Set it before serving.
func (s *Status) SetOnShed(fn func(conn net.Conn), timeout time.Duration) {
	if timeout <= 0 {
		timeout = DefaultShedTimeout
	}
	s.mu.Lock()
	s.onShed, s.shedTimeout = fn, timeout
	s.mu.Unlock()
}

// Shed takes up to n connections out for rebalancing and returns how many it
// took: the least recently active first, skipping connections already
// being shed, and counting those toward n, so a repeated request before
// the earlier goodbyes finished does not shed twice. It stops as soon as n
// is met and never takes more than the server holds (the leader's n is
// computed so that the server keeps its fair share). Each taken connection
// gets the OnShed goodbye and is closed in its own goroutine; Shed does not
// wait for them (Server.Serve does when it returns; WaitShed waits too).
// A draining server sheds nothing: Drain is emptying it already.
func (s *Status) Shed(n int) int {
	if n <= 0 || s.draining.Load() {
		return 0
	}
	s.mu.Lock()
	n -= int(s.shedding)
	var free []*trackedConn
	if n > 0 {
		free = make([]*trackedConn, 0, len(s.tracked))
		for c := range s.tracked {
			if !c.shed {
				free = append(free, c)
			}
		}
	}
	if n <= 0 || len(free) == 0 {
		s.mu.Unlock()
		return 0
	}
	slices.SortFunc(free, func(a, b *trackedConn) int {
		return cmp.Compare(a.last.Load(), b.last.Load())
	})
	take := free[:min(n, len(free))]
	for _, c := range take {
		c.shed = true
	}
	s.shedding += int64(len(take))
	hook, timeout := s.onShed, s.shedTimeout
	s.shedWG.Add(len(take))
	s.mu.Unlock()

	s.shedTotal.Add(int64(len(take)))
	for _, c := range take {
		go func() {
			defer s.shedWG.Done()
			if hook != nil {
				_ = c.SetWriteDeadline(s.now().Add(timeout))
				hook(c)
			}
			c.Close()
			s.mu.Lock()
			s.shedding--
			s.mu.Unlock()
		}()
	}
	return len(take)
}

// ShedTotal returns how many connections Shed has taken since the Status
// was made; it is the document's shed_total.
func (s *Status) ShedTotal() int64 { return s.shedTotal.Load() }

// WaitShed waits until every goodbye Shed started has finished and its
// connection is closed.
func (s *Status) WaitShed() { s.shedWG.Wait() }

// shedRequest applies the ?shed=N of a status request. A malformed N is
// the caller's error: it returns an error for a 400 and sheds nothing.
func (s *Status) shedRequest(r *http.Request) error {
	q := r.URL.Query()
	if !q.Has(ShedParam) {
		return nil
	}
	v := q.Get(ShedParam)
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > MaxShed || len(q[ShedParam]) > 1 {
		return fmt.Errorf("%s=%q: want one integer in 0..%d", ShedParam, v, MaxShed)
	}
	s.Shed(n)
	return nil
}
