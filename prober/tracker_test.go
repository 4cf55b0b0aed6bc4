package prober

import (
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	// Results are written as a string: '+' success, '-' failure. want is
	// the status after each result ('u' up, 'd' down) and changed marks the
	// results that must report a transition.
	tests := []struct {
		name       string
		rise, fall int
		start      status
		results    string
		want       string
		changed    string
	}{
		{name: "unknown, first success decides", rise: 3, fall: 3, results: "+", want: "u", changed: "x"},
		{name: "unknown, first failure decides", rise: 3, fall: 3, results: "-", want: "d", changed: "x"},
		{name: "up needs fall failures", rise: 2, fall: 3, start: statusUp, results: "---", want: "uud", changed: "..x"},
		{name: "down needs rise successes", rise: 3, fall: 2, start: statusDown, results: "+++", want: "ddu", changed: "..x"},
		{name: "fall 1 flips at once", rise: 2, fall: 1, start: statusUp, results: "-", want: "d", changed: "x"},
		{name: "rise 1 flips at once", rise: 1, fall: 2, start: statusDown, results: "+", want: "u", changed: "x"},
		{name: "a success resets the failure streak", rise: 2, fall: 2, start: statusUp,
			results: "-+-+-+--", want: "uuuuuuud", changed: ".......x"},
		{name: "a failure resets the success streak", rise: 2, fall: 2, start: statusDown,
			results: "+-+-++", want: "dddddu", changed: ".....x"},
		{name: "streak starts over after a transition", rise: 2, fall: 2, start: statusUp,
			results: "--+-++--", want: "udddduud", changed: ".x...x.x"},
		{name: "steady results never report", rise: 2, fall: 2, start: statusUp,
			results: "++++", want: "uuuu", changed: "...."},
		{name: "new server: first result then hysteresis", rise: 2, fall: 2,
			results: "+--++", want: "uuddu", changed: "x.x.x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.want) != len(tt.results) || len(tt.changed) != len(tt.results) {
				t.Fatalf("bad table row: %d results, %d wants, %d changed", len(tt.results), len(tt.want), len(tt.changed))
			}
			start := time.Unix(100, 0)
			tr := &tracker{addr: "a:1", status: tt.start}
			if tt.start != statusUnknown {
				tr.since = start
			}
			since := tr.since
			for i, r := range tt.results {
				now := start.Add(time.Duration(i+1) * time.Second)
				ok := r == '+'
				changed := tr.observe(ok, "boom", now, tt.rise, tt.fall)
				if changed != (tt.changed[i] == 'x') {
					t.Fatalf("result %d (%c): changed = %v; want %v", i, r, changed, !changed)
				}
				want := statusUp
				if tt.want[i] == 'd' {
					want = statusDown
				}
				if tr.status != want {
					t.Fatalf("result %d (%c): status = %v; want %v", i, r, tr.status, want)
				}
				if changed {
					since = now
				}
				if !tr.since.Equal(since) {
					t.Fatalf("result %d: since = %v; want %v (moves only on a transition)", i, tr.since, since)
				}
				// The reason is that of the latest probe, whatever the status.
				if wantReason := map[bool]string{true: "", false: "boom"}[ok]; tr.reason != wantReason {
					t.Fatalf("result %d: reason = %q; want %q", i, tr.reason, wantReason)
				}
			}
		})
	}
}
