// Package backoff is the dispatcher side's one way to wait before a retry:
// a capped exponential sequence of waits with jitter, a ±20% spread for
// fixed pauses, and a sleep that ends early when its ctx does.
//
// The SDK (client/) keeps a small copy of its own so that applications
// importing it depend on nothing of the dispatcher; serverkit, the store
// watcher, the election and the prober use this one.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Jitter says how each wait of an Exponential is drawn around its nominal
// value d.
type Jitter int

const (
	// Spread draws the wait from d ± 20%: retries keep their rhythm but
	// replicas that failed together do not retry in lockstep.
	Spread Jitter = iota
	// Full draws the wait from [Floor, d) ("full jitter"): many clients
	// that failed together spread their retries over the whole window.
	Full
	// None waits exactly d.
	None
)

// Exponential is a retry backoff whose n-th consecutive wait (n from 0) has
// the nominal value min(Cap, Base·2^n), drawn according to Jitter. The zero
// value is not useful: set Base and Cap (0 < Base <= Cap). An Exponential
// is not safe for concurrent use; each retry loop owns one.
type Exponential struct {
	// Base is the nominal first wait.
	Base time.Duration
	// Cap is the largest nominal wait.
	Cap time.Duration
	// Floor is the shortest wait Full jitter draws, so that a retry
	// never comes back at once. Ignored by Spread and None.
	Floor time.Duration
	// Jitter is how a wait is drawn; the zero value is Spread.
	Jitter Jitter

	attempt int
}

// Next returns the next wait and advances the sequence.
func (b *Exponential) Next() time.Duration {
	d := b.Cap
	if b.attempt < 62 && b.Base <= b.Cap>>b.attempt {
		d = b.Base << b.attempt
	}
	b.attempt++
	switch b.Jitter {
	case Full:
		if d <= 0 {
			return b.Floor
		}
		return max(time.Duration(rand.Int64N(int64(d))), b.Floor)
	case None:
		return d
	default:
		return SpreadOf(d)
	}
}

// Reset starts the sequence over: call it after a success, so that a
// failure after a long good spell waits Base again, not Cap.
func (b *Exponential) Reset() { b.attempt = 0 }

// Wait sleeps Next() or until ctx is done; it reports false if ctx ended
// first.
func (b *Exponential) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }

// SpreadOf returns d ± 20%, drawn uniformly; d <= 0 is returned as is.
func SpreadOf(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

// Sleep waits d or until ctx is done; it reports false if ctx ended first
// (also when both happened). It does not leak its timer.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return ctx.Err() == nil
	}
}
