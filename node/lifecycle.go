package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// A unit is one long-running part of a replica.
type unit struct {
	name string
	// run runs until ctx is cancelled, then returns nil. An error (before
	// or during shutdown) ends the replica: runStages returns the first.
	// run may also return nil early (nothing to do, e.g. no systemd).
	run func(ctx context.Context) error
	// grace, when positive, is how long the stop waits for run after
	// cancelling its ctx before it calls force to unblock it; it then
	// goes on waiting.
	grace time.Duration
	force func()
}

// A stage is a set of units started together and stopped together.
type stage struct {
	name  string
	units []unit
	// release, if set, runs once every unit of the stage has returned:
	// it frees what the later stages used (the etcd client, the member).
	release func()
}

// runStages is the replica's one lifecycle, in the manner of
// cmd/prometheus's run group, but ordered: it starts the units of stages
// in order, each in its own goroutine, then waits until ctx is cancelled
// or a unit fails. It then stops the stages in reverse order: it cancels
// every unit of the last stage at once, waits for all of them, calls its
// release, and only then goes on to the stage before. A unit that must wait
// for an earlier stage to be ready (the embedded member) waits inside its
// run, on a channel: starting never blocks. Every goroutine runStages
// starts has returned when it returns.
//
// It returns the first error a unit returned, or nil when ctx was
// cancelled and every unit stopped cleanly.
func runStages(ctx context.Context, log *logrus.Entry, stages []stage) error {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	var (
		mu    sync.Mutex
		first error
	)
	failed := func(name string, err error) {
		err = fmt.Errorf("%s: %w", name, err)
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
		fail(err)
	}

	type started struct {
		unit
		done chan struct{}
	}
	cancels := make([]context.CancelFunc, len(stages))
	running := make([][]started, len(stages))
	for i, st := range stages {
		// A stage's context ends when the stop reaches it, not when
		// ctx does.
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		cancels[i] = cancel
		for _, u := range st.units {
			done := make(chan struct{})
			running[i] = append(running[i], started{u, done})
			go func() {
				defer close(done)
				if err := u.run(sctx); err != nil {
					failed(u.name, err)
				}
			}()
		}
	}

	<-ctx.Done()
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
		log.WithError(cause).Error("stopping the replica")
	}
	for i := len(stages) - 1; i >= 0; i-- {
		cancels[i]()
		for _, u := range running[i] {
			waitUnit(log, u.unit, u.done)
		}
		if stages[i].release != nil {
			stages[i].release()
		}
		log.WithField("stage", stages[i].name).Debug("stopped")
	}
	mu.Lock()
	defer mu.Unlock()
	return first
}

// waitUnit waits for done, calling u.force once u.grace has passed.
func waitUnit(log *logrus.Entry, u unit, done <-chan struct{}) {
	if u.grace <= 0 || u.force == nil {
		<-done
		return
	}
	t := time.NewTimer(u.grace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	log.WithFields(logrus.Fields{"unit": u.name, "grace": u.grace}).Warn("did not stop in time; forcing it")
	u.force()
	<-done
}
