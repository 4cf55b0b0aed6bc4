// Package client connects applications to a tcp-server chosen by the
// tcpdispatch dispatcher tier, and keeps them connected.
//
// A Client finds a server without hard-coding one: Dial asks a dispatcher
// replica GET /get-tcp-ip?n=3, tries the servers offered in order, reports
// the ones it could not reach with ?exclude= on its next request, and moves
// to another replica when one fails or is slow. Replicas come from a DNS
// name (every A/AAAA record, shuffled per Dial) and/or a bootstrap list of
// addresses that needs no DNS at all.
//
// When no replica answers, Dial falls back to the servers it last received
// (kept in memory and, with Config.CachePath, in a file that survives
// restarts), then to Config.Static. An outage of the whole dispatcher tier
// therefore does not stop reconnects; it only means clients go back to
// servers they already knew.
//
// A Reconnector keeps a session up: it dials, runs the application's
// session function, and dials again when the session ends, waiting an
// exponential backoff with full jitter in between, so the clients of a
// server that dies do not all return in the same instant.
//
// A server may also end a session on purpose, with a goodbye in the
// application's own protocol: the dispatcher's leader asks servers above
// their fair share to shed connections (rebalancing, docs/BALANCING.md),
// and a draining server leaves. The session function says so by returning
// an error wrapping ErrGoodbye; the Reconnector then reconnects through the
// dispatcher, avoiding that server, after a jittered wait, and does not
// count the end as a failure.
//
// # What is and is not guaranteed
//
// Every retry path is bounded: Dial asks each replica a bounded number of
// times and tries each server address at most once, each step under its own
// timeout and the caller's ctx; Reconnector.Run never waits less than
// ReconnectConfig.MinDelay between two attempts. A Client starts no
// goroutines, so it needs no Close.
//
// The fallback is availability over precision: a cached or static server
// may be drained or overloaded, and the client will use it if it accepts a
// connection. The client cannot tell a dead server from one it cannot reach;
// it only knows what the connect told it. A response from a hijacked DNS
// name is validated (status, JSON shape, addresses) but not authenticated:
// use Scheme "https" when that matters: the dispatcher's certificate is
// then verified against the Dispatcher name even though each resolved IP
// is dialled (Config.TLSConfig for private roots).
//
// A dispatcher that answers 429 or 503 with Retry-After is tried last for
// at least that long, and a Reconnector waits at least that long (at most
// 5 minutes) before it dials again.
//
// The package depends on the standard library and the contract package
// tcpdispatch (itself standard library only: the answer's format and the
// request limits), so applications import a small package (no etcd, no
// HTTP framework, no logger).
package client
