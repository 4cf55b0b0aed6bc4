package api

import (
	"net/http"
	"net/http/pprof"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcpdispatch/tcpdispatch"
)

// route is one path of the HTTP API. methods nil means GET and HEAD.
type route struct {
	path    string
	methods []string
	h       echo.HandlerFunc
}

// publicRoutes are served on the public listener (--listen-http). Their
// handlers depend on nothing but the request and the Server, so another
// server implementation can serve them as well.
func (s *Server) publicRoutes() []route {
	return []route{
		{path: tcpdispatch.GetTCPIPPath, h: s.timedGetTCPIP},
		{path: "/healthz", h: func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") }},
		{path: "/readyz", h: s.readyz},
	}
}

// adminRoutes are the operator routes: on the admin listener
// (--listen-admin) when there is one, else on the public listener as
// before the admin listener existed. Register every new operator page or
// API here.
func (s *Server) adminRoutes(gatherer prometheus.Gatherer) []route {
	rs := []route{
		{path: "/v1/servers", h: s.servers},
		{path: "/v1/status", h: s.status},
		// Operator pages (ui.go), beside the /v1 routes they read.
		{path: "/ui", h: s.ui},
		{path: "/v1/fleet", h: s.fleet},
	}
	if gatherer != nil {
		rs = append(rs, route{path: "/metrics", h: echo.WrapHandler(s.metricsHandler(gatherer))})
	}
	return rs
}

// adminOnlyRoutes are served only on a separate admin listener, never on
// the public one: profiles reveal internals and cost CPU on demand.
func (s *Server) adminOnlyRoutes() []route {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	h := echo.WrapHandler(mux)
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost}
	return []route{{path: "/debug/pprof/", methods: methods, h: h}, {path: "/debug/pprof/*", methods: methods, h: h}}
}
