//go:build !linux

package api

import (
	"context"
	"net"
)

// publicServer is what Server.Serve needs of the public listener's server.
type publicServer interface {
	Serve(net.Listener) error
	ShutdownWithContext(context.Context) error
}

// newEpollServer returns fs: the event loops (loop_linux.go) need epoll.
func (s *Server) newEpollServer(fs publicServer) publicServer { return fs }
