package etcdconn

import (
	"context"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// authenticateMethod is the gRPC method the etcd client calls to trade the
// password for a token.
const authenticateMethod = "/etcdserverpb.Auth/Authenticate"

// AuthTimeout bounds one password check of the client's: etcd verifies the
// password with bcrypt (about 0.1 s of CPU at its default cost, ten times
// that in a -race build, more on a starved host) before the token goes
// through raft.
const AuthTimeout = 15 * time.Second

// authReuse is how long a token just obtained is handed to the calls that
// ask for one again: those whose own deadline ended while they waited for it.
const authReuse = 2 * time.Second

// authFlight makes the client's password checks one at a time and
// independent of the deadline of the call that needed one.
//
// The etcd client authenticates inside the call whose token was refused
// (the first call of a client made by New, every call after a member
// restart, since simple tokens live in one member's memory), with that
// call's deadline. A replica's election and directory calls have
// deadlines of about a second, shorter than a bcrypt check on a busy or
// race-built etcd: each call's Authenticate was cancelled before its token
// came back, the bcrypt work was done for nothing, and every call of the
// replica failed for as long as that lasted (a minute in CI). Here the
// first call that needs a token starts one Authenticate with AuthTimeout,
// detached from its own deadline; every call that needs a token meanwhile
// waits for the same one, and a call that gave up and asks again within
// authReuse of its arrival takes it.
type authFlight struct {
	mu       sync.Mutex
	inflight *authCall
	last     *authCall // the last successful one
	now      func() time.Time
}

type authCall struct {
	done  chan struct{}
	resp  *pb.AuthenticateResponse
	err   error
	ended time.Time
}

func newAuthFlight() *authFlight {
	return &authFlight{now: time.Now}
}

// intercept is a unary client interceptor: Authenticate calls share one
// flight, every other call passes through.
func (f *authFlight) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method != authenticateMethod {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	out, ok := reply.(*pb.AuthenticateResponse)
	if !ok {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c := f.join(ctx, method, req, cc, invoker, opts)
	select {
	case <-c.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if c.err != nil {
		return c.err
	}
	out.Header, out.Token = c.resp.Header, c.resp.Token
	return nil
}

// join returns the flight to wait for: a recent success, the one in
// progress, or a new one.
func (f *authFlight) join(ctx context.Context, method string, req any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) *authCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.last; c != nil && f.now().Sub(c.ended) < authReuse {
		return c
	}
	if f.inflight != nil {
		return f.inflight
	}
	c := &authCall{done: make(chan struct{})}
	f.inflight = c
	// The call ends by AuthTimeout at the latest, and at once when the
	// client closes its connection.
	go func() {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), AuthTimeout)
		defer cancel()
		resp := new(pb.AuthenticateResponse)
		err := invoker(actx, method, req, resp, cc, opts...)
		f.mu.Lock()
		c.resp, c.err, c.ended = resp, err, f.now()
		f.inflight = nil
		if err == nil {
			f.last = c
		}
		f.mu.Unlock()
		close(c.done)
	}()
	return c
}
