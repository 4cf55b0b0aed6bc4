package prober

import "time"

// status is a server's health as the hysteresis tracker sees it.
type status int

const (
	statusUnknown status = iota
	statusUp
	statusDown
)

// tracker applies rise/fall hysteresis to probe results, as HAProxy's rise
// and fall and Consul's success/failures-before thresholds do: a server that
// is up goes down only after fall consecutive failures, one that is down
// comes up only after rise consecutive successes. A server with no verdict
// yet takes the result of its first probe, so a new server is served
// without waiting rise intervals.
type tracker struct {
	addr   string
	status status
	since  time.Time
	reason string
	streak int // consecutive results contradicting status
	// held: the latest probe of this up server failed and its verdict was
	// held by a suspect round (see judge). It counts as failing, as the
	// streak does, until the next result is observed: a leader cut off
	// from the fleet whose first failures were held must still be
	// suspect when the next server's failure comes in alone.
	held bool
}

// observe records one probe result and reports whether status changed.
func (t *tracker) observe(ok bool, reason string, now time.Time, rise, fall int) bool {
	t.held = false
	if ok {
		t.reason = ""
	} else {
		t.reason = reason
	}
	switch {
	case t.status == statusUnknown:
		t.status, t.since, t.streak = statusDown, now, 0
		if ok {
			t.status = statusUp
		}
		return true
	case (t.status == statusUp) == ok:
		t.streak = 0
		return false
	}
	t.streak++
	need := fall
	if t.status == statusDown {
		need = rise
	}
	if t.streak < need {
		return false
	}
	t.streak = 0
	t.since = now
	if ok {
		t.status = statusUp
	} else {
		t.status = statusDown
	}
	return true
}

// failing reports whether the latest probe of an up server failed,
// counted or held.
func (t *tracker) failing() bool {
	return t.status == statusUp && (t.streak > 0 || t.held)
}

// down takes an up server down at once, whatever its streak: the death
// notice of a closed persistent connection followed by a refused connect
// (see link.go). It reports whether status changed.
func (t *tracker) down(reason string, now time.Time) bool {
	t.reason, t.held = reason, false
	if t.status != statusUp {
		return false
	}
	t.status, t.since, t.streak = statusDown, now, 0
	return true
}
