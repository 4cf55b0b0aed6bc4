package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tcpdispatch/tcpdispatch"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// reply is the answer to a public route (get-tcp-ip, /healthz, /readyz),
// decided once and written by whichever server took the request: fasthttp
// on the public listener (fast.go), echo everywhere else. Keeping the
// decision in one place keeps both servers' answers byte for byte alike.
type reply struct {
	status int
	// contentType is one of the shared header values (contentJSON,
	// contentText, contentPlain); nil sends none (HEAD 503).
	contentType []string
	noStore     bool // Cache-Control: no-store
	degraded    bool // DegradedHeader: DegradedAllDown
	retryAfter  int  // seconds; 0 sends no Retry-After
	body        []byte
}

// contentPlain is what echo's c.String sends, kept for /healthz and /readyz.
var contentPlain = []string{echo.MIMETextPlainCharsetUTF8}

// Bodies of /healthz and /readyz.
var (
	okBody         = []byte("ok\n")
	drainingBody   = []byte("shutting down\n")
	noSnapshotBody = []byte("no snapshot yet: waiting for etcd\n")
)

// lookup decides the get-tcp-ip answer for a request with the given method
// (HEAD or GET), raw query string and client address (realIP). It
// allocates nothing on a 200 answer of one server; error bodies and ?n=
// answers are encoded per request.
func (s *Server) lookup(head bool, rawQuery, ip string, r *reply) {
	if s.sec.limiter != nil {
		if retry, ok := s.sec.limiter.allow(ip); !ok {
			s.tooMany(r, retry)
			return
		}
	}
	var (
		q   query
		buf [8]string
	)
	exclude, err := parseQuery(rawQuery, &q, buf[:])
	if err != nil {
		s.badRequest.Inc()
		r.setError(http.StatusBadRequest, err.Error())
		return
	}
	snap := s.src.Snapshot()
	if snap == nil {
		s.noServer.Inc()
		r.setError(http.StatusServiceUnavailable, noSnapshotReason)
		return
	}
	if head {
		s.headTCPIP(r, snap, &q, exclude)
		return
	}
	key := q.key
	if key == "" {
		key = ip
	}
	if q.n > 1 {
		s.pickN(r, snap, key, &q, exclude)
		return
	}
	srv := snap.Pick(key, exclude)
	if !s.picked(r, snap, srv != nil, len(exclude)) {
		return
	}
	if q.text {
		r.contentType, r.body = contentText, srv.AnswerText()
		return
	}
	r.contentType, r.body = contentJSON, srv.Answer()
}

// picked counts a get-tcp-ip pick and starts its reply: 200, not to be
// cached, marked degraded in all-down mode; or, when nothing was picked
// (ok false), 503 with the reason. It reports ok.
func (s *Server) picked(r *reply, snap *store.Snapshot, ok bool, excluded int) bool {
	if !ok {
		s.noServer.Inc()
		r.setError(http.StatusServiceUnavailable, noServerReason(snap, excluded))
		return false
	}
	s.picks.Inc()
	r.status, r.noStore = http.StatusOK, true
	r.degraded = s.countDegraded(snap)
	return true
}

// pickN answers get-tcp-ip with alternatives (?n=K).
func (s *Server) pickN(r *reply, snap *store.Snapshot, key string, q *query, exclude []string) {
	var buf [tcpdispatch.MaxN]*store.Server
	got := snap.PickN(key, exclude, q.n, buf[:0])
	if !s.picked(r, snap, len(got) > 0, len(exclude)) {
		return
	}
	if q.text {
		var b []byte
		for i, srv := range got {
			if i > 0 {
				b = append(b, '\n')
			}
			b = append(b, srv.Addr...)
		}
		r.contentType, r.body = contentText, b
		return
	}
	resp := tcpdispatch.Answer{Server: tcpdispatch.Server{ID: got[0].ID, Addr: got[0].Addr}, Alternatives: make([]tcpdispatch.Server, 0, len(got)-1)}
	for _, srv := range got[1:] {
		resp.Alternatives = append(resp.Alternatives, tcpdispatch.Server{ID: srv.ID, Addr: srv.Addr})
	}
	r.setJSON(http.StatusOK, resp)
}

// tooMany answers 429 with Retry-After in whole seconds.
func (s *Server) tooMany(r *reply, retry time.Duration) {
	s.sec.limited.Inc()
	secs := max(1, int((retry+time.Second-1)/time.Second))
	r.setError(http.StatusTooManyRequests,
		fmt.Sprintf("rate limit: more than %g requests/s from this address; retry after %ds", s.cfg.RateLimit, secs))
	r.retryAfter, r.noStore = secs, true
}

// ready decides /readyz.
func (s *Server) ready(r *reply) {
	r.contentType = contentPlain
	switch {
	case s.draining.Load():
		r.status, r.body = http.StatusServiceUnavailable, drainingBody
	case s.src.Snapshot() == nil:
		r.status, r.body = http.StatusServiceUnavailable, noSnapshotBody
	default:
		r.status, r.body = http.StatusOK, okBody
	}
}

// healthy decides /healthz.
func healthy(r *reply) {
	r.status, r.contentType, r.body = http.StatusOK, contentPlain, okBody
}

// setError makes r the JSON error body every route answers with.
func (r *reply) setError(code int, msg string) {
	r.setJSON(code, tcpdispatch.ErrorBody{Error: msg})
}

// setJSON encodes v as echo's c.JSON does: with HTML escaping and a final
// newline.
func (r *reply) setJSON(code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	r.status, r.contentType, r.body = code, contentJSON, append(b, '\n')
}

// writeEcho writes r through echo.
func (r *reply) writeEcho(c echo.Context) error {
	h := c.Response().Header()
	if r.contentType != nil {
		h["Content-Type"] = r.contentType
	}
	if r.noStore {
		h["Cache-Control"] = noStore
	}
	if r.degraded {
		h[DegradedHeader] = degradedAllDown
	}
	if r.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(r.retryAfter))
	}
	c.Response().WriteHeader(r.status)
	if len(r.body) == 0 {
		return nil
	}
	_, err := c.Response().Write(r.body)
	return err
}
