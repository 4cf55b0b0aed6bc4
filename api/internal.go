package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// HandleInternal registers h for POST on path, next to the /v1/* routes:
// internal routes one replica calls on another (the prober's second-opinion
// route). h authenticates its callers itself (a bearer token from etcd).
// It is served on both listeners: other replicas reach a replica at its
// advertised URL, by default the public listener, and --advertise-http may
// name the admin one instead. Call it before Run.
func (s *Server) HandleInternal(path string, h http.Handler) {
	wrapped := s.recoverPanics(echo.WrapHandler(h))
	for _, e := range []*echo.Echo{s.echo, s.public, s.admin} {
		e.POST(path, wrapped)
	}
}
