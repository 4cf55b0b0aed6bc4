package prober

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	neturl "net/url"
	"time"

	"github.com/tcpdispatch/tcpdispatch"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// Status is the status document a tcp-server serves; see
// tcpdispatch.Status for the contract.
type Status = tcpdispatch.Status

// pullStatus GETs url within timeout and parses the document. 200 is a
// serving server; 503 with a valid document is a draining one (Draining is
// forced true); anything else is an error.
func pullStatus(ctx context.Context, client *statusClient, rawURL string, timeout time.Duration) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The URL's query may hold a token: errors, which reach logs and
	// health records, name it redacted.
	url := keyspace.RedactURL(rawURL)
	u, err := neturl.Parse(rawURL)
	if err != nil || u.Host == "" {
		return Status{}, fmt.Errorf("status %s: does not parse", url)
	}
	var (
		code int
		body []byte
	)
	if u.Scheme == "http" && u.User == nil {
		deadline, _ := ctx.Deadline()
		code, body, err = client.get(ctx, u, deadline)
		if err != nil {
			cause := ctx.Err()
			if cause == nil && !time.Now().Before(deadline) {
				cause = context.DeadlineExceeded // the conn's timer fired first
			}
			if cause != nil && isTimeout(err) {
				// The conn's deadline is the context's: name it so.
				err = fmt.Errorf("%w: %w", cause, err)
			}
			if errors.Is(err, errStatusTooLarge) {
				return Status{}, fmt.Errorf("status %s: answer larger than %d bytes", url, maxStatusResponse)
			}
			return Status{}, fmt.Errorf("status: Get %q: %w", url, err)
		}
	} else {
		code, body, err = fallbackGet(ctx, client.fallback, rawURL, url)
		if err != nil {
			return Status{}, err
		}
	}
	if len(body) > tcpdispatch.MaxStatusBytes {
		return Status{}, fmt.Errorf("status %s: body larger than %d bytes", url, tcpdispatch.MaxStatusBytes)
	}
	if code != http.StatusOK && code != http.StatusServiceUnavailable {
		return Status{}, fmt.Errorf("status %s: HTTP %d", url, code)
	}
	st, err := tcpdispatch.ParseStatus(body)
	if err != nil {
		return Status{}, fmt.Errorf("status %s: HTTP %d: %w", url, code, err)
	}
	if code == http.StatusServiceUnavailable {
		st.Draining = true
	}
	return st, nil
}

// fallbackGet GETs rawURL with net/http: the status URLs statusClient does
// not speak (https).
func fallbackGet(ctx context.Context, client *http.Client, rawURL, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("status %s: does not parse", url)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		var ue *neturl.Error
		if errors.As(err, &ue) {
			ue.URL = url
		}
		return 0, nil, fmt.Errorf("status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, tcpdispatch.MaxStatusBytes+1))
	if err != nil {
		return 0, nil, fmt.Errorf("status %s: read body: %w", url, err)
	}
	return resp.StatusCode, body, nil
}

// loadTracker smooths one server's reported load and applies overload
// hysteresis, and remembers what was last written to etcd so that only
// meaningful changes are.
type loadTracker struct {
	has        bool // a report is current
	ewma       float64
	overloaded bool
	last       Status
	pulledAt   time.Time

	written     bool // etcd holds a report from this tracker's state
	wLoad       float64
	wConns      int64
	wOverloaded bool
	wDraining   bool
	wAt         time.Time
}

// observe records one pull (st nil: the pull failed or there is no status
// URL). alpha is the EWMA weight of the new sample; high and recover are the
// overload marks.
func (l *loadTracker) observe(st *Status, now time.Time, alpha, high, recover float64) {
	if st == nil {
		l.has, l.overloaded = false, false
		return
	}
	u := st.Utilization()
	if !l.has {
		l.ewma = min(u, 1)
	} else {
		l.ewma = alpha*min(u, 1) + (1-alpha)*l.ewma
	}
	switch {
	case !l.overloaded && u >= high:
		l.overloaded = true
	case l.overloaded && u < recover:
		l.overloaded = false
	}
	l.has, l.last, l.pulledAt = true, *st, now
}

// Write thresholds: a report is rewritten when the smoothed load moved by
// loadDelta, or conns by connsDelta of the last written value (at least
// minConnsDelta), or a state changed, or it is older than the refresh.
const (
	loadDelta     = 0.05
	connsDelta    = 0.05
	minConnsDelta = 10
)

// dirty reports whether etcd's copy of the report is out of date enough to
// rewrite; refresh 0 never rewrites an unchanged report.
func (l *loadTracker) dirty(now time.Time, refresh time.Duration) bool {
	if l.has != l.written {
		return true
	}
	if !l.has {
		return false
	}
	dc := l.last.Conns - l.wConns
	return math.Abs(l.ewma-l.wLoad) >= loadDelta ||
		float64(max(dc, -dc)) >= max(connsDelta*float64(l.wConns), minConnsDelta) ||
		l.overloaded != l.wOverloaded || l.last.Draining != l.wDraining ||
		refresh > 0 && now.Sub(l.wAt) >= refresh
}

// fill copies the report into h and marks it written once h is.
func (l *loadTracker) fill(h *store.Health, ttl time.Duration) {
	if !l.has {
		return
	}
	h.Load = math.Round(l.ewma*1000) / 1000
	h.Conns, h.MaxConns = l.last.Conns, l.last.MaxConns
	h.Overloaded, h.Draining = l.overloaded, l.last.Draining
	h.ReportedAt, h.ReportExpires = l.pulledAt, l.pulledAt.Add(ttl)
}

// markWritten records that h (filled from l) is in etcd.
func (l *loadTracker) markWritten(h store.Health) {
	l.written = h.HasReport()
	l.wLoad, l.wConns, l.wOverloaded, l.wDraining, l.wAt = h.Load, h.Conns, h.Overloaded, h.Draining, h.ReportedAt
}
