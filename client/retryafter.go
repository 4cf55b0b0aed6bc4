package client

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRetryAfter caps a dispatcher's Retry-After: a wrong or hostile value
// must not park a client for hours.
const maxRetryAfter = 5 * time.Minute

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP
// date. It returns 0 when the header is absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// RetryAfter returns how long a dispatcher asked the client to wait
// (HTTP 429 or 503 with Retry-After, at most 5 minutes) in err, the error
// of Dial; false when no dispatcher did. Reconnector waits at least that
// long before it dials again.
func RetryAfter(err error) (time.Duration, bool) {
	var de *dialError
	if errors.As(err, &de) && de.retryAfter > 0 {
		return de.retryAfter, true
	}
	var se *statusError
	if errors.As(err, &se) && se.retryAfter > 0 {
		return se.retryAfter, true
	}
	return 0, false
}

// dialError is Dial's error when nothing connected; it carries the longest
// Retry-After a dispatcher sent during the Dial.
type dialError struct {
	err        error
	retryAfter time.Duration
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }
