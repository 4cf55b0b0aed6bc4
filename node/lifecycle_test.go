package node

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tcpdispatch/tcpdispatch/internal/logging"
)

// recorder collects the events of a runStages run in order.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// until returns a unit that runs until ctx ends and records its stop.
func (r *recorder) until(name string) unit {
	return unit{name: name, run: func(ctx context.Context) error {
		<-ctx.Done()
		r.add("stop " + name)
		return nil
	}}
}

// TestRunStagesStopsInReverse: the last stage stops first, a stage's
// release runs after its units returned and before the earlier stage is
// told to stop.
func TestRunStagesStopsInReverse(t *testing.T) {
	var r recorder
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runStages(ctx, logging.Discard(), []stage{
			{name: "a", units: []unit{r.until("a")}, release: func() { r.add("release a") }},
			{name: "b", release: func() { r.add("release b") }},
			{name: "c", units: []unit{r.until("c")}},
		})
	}()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("runStages = %v, want nil", err)
	}
	want := []string{"stop c", "release b", "stop a", "release a"}
	if got := r.get(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// TestRunStagesFailure: a unit's error stops every stage, in order, and is
// returned named after the unit.
func TestRunStagesFailure(t *testing.T) {
	var r recorder
	boom := errors.New("boom")
	err := runStages(context.Background(), logging.Discard(), []stage{
		{name: "a", units: []unit{r.until("a")}},
		{name: "b", units: []unit{{name: "failing", run: func(context.Context) error { return boom }}, r.until("b")}},
	})
	if !errors.Is(err, boom) || err.Error() != "failing: boom" {
		t.Fatalf("runStages = %v, want failing: boom", err)
	}
	if got, want := r.get(), []string{"stop b", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// TestRunStagesEarlyNil: a unit with nothing to do returns nil at once
// without stopping the others.
func TestRunStagesEarlyNil(t *testing.T) {
	var r recorder
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := runStages(ctx, logging.Discard(), []stage{{name: "a", units: []unit{
		{name: "idle", run: func(context.Context) error { r.add("idle"); return nil }},
		r.until("a"),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() == nil {
		t.Fatal("runStages returned before ctx ended")
	}
	if got, want := r.get(), []string{"idle", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// TestRunStagesForce: a unit that does not stop within its grace is forced.
func TestRunStagesForce(t *testing.T) {
	unblock := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := runStages(ctx, logging.Discard(), []stage{{name: "a", units: []unit{{
		name:  "stuck",
		run:   func(context.Context) error { <-unblock; return nil },
		grace: 10 * time.Millisecond,
		force: func() { close(unblock) },
	}}}})
	if err != nil {
		t.Fatal(err)
	}
}
