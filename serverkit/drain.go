package serverkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"
)

// minDrainStep bounds how often Drain wakes up.
const minDrainStep = 10 * time.Millisecond

// Drain takes the server out of service gracefully and returns when no
// tracked connection is left:
//
//  1. SetDraining: the status document reports draining with status 503,
//     so the dispatcher stops sending clients here.
//  2. ln is closed (ln may be nil), so a client still directed here is
//     refused at once and tries its next server.
//  3. The tracked connections are closed over window, at an even pace and
//     the least recently active first; connections that close by themselves
//     count toward the pace. Whatever is left when window ends is closed.
//
// Closing the connections of a tracked conn's handler is how Drain stops it;
// handlers that want to say goodbye in their protocol watch Draining. When
// ctx ends before the window, the remaining connections are closed at once
// and Drain returns ctx.Err(). A window of 0 or less closes everything at
// once. Drain does not wait for handler goroutines: Server does that.
func (s *Status) Drain(ctx context.Context, ln net.Listener, window time.Duration) error {
	s.SetDraining()
	var lnErr error
	if ln != nil {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			lnErr = fmt.Errorf("close listener: %w", err)
		}
	}
	total := s.Conns()
	if total == 0 || window <= 0 {
		s.closeIdlest(0)
		return lnErr
	}
	start := time.Now()
	step := max(window/time.Duration(total), minDrainStep)
	tick := time.NewTicker(step)
	defer tick.Stop()
	for {
		elapsed := time.Since(start)
		if elapsed >= window {
			s.closeIdlest(0)
			return lnErr
		}
		// The k-th of total closes at k/total of the window.
		keep := total - int(int64(total)*int64(elapsed)/int64(window))
		if s.closeIdlest(max(keep, 0)) == 0 {
			return lnErr
		}
		select {
		case <-ctx.Done():
			s.closeIdlest(0)
			return ctx.Err()
		case <-tick.C:
		case <-s.left:
		}
	}
}

// closeIdlest closes the least recently active tracked connections until at
// most keep remain, and returns how many remain.
func (s *Status) closeIdlest(keep int) int {
	s.mu.Lock()
	conns := make([]*trackedConn, 0, len(s.tracked))
	for c := range s.tracked {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if len(conns) <= keep {
		return len(conns)
	}
	slices.SortFunc(conns, func(a, b *trackedConn) int {
		la, lb := a.last.Load(), b.last.Load()
		switch {
		case la < lb:
			return -1
		case la > lb:
			return 1
		}
		return 0
	})
	for _, c := range conns[:len(conns)-keep] {
		c.Close()
	}
	return keep
}
