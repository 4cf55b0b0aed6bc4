package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// HandleInternal registers h for POST on path, next to the /v1/* routes:
// internal routes one replica calls on another (the prober's second-opinion
// route). h authenticates its callers itself. Call it before Run.
func (s *Server) HandleInternal(path string, h http.Handler) {
	s.echo.POST(path, s.recoverPanics(echo.WrapHandler(h)))
}
