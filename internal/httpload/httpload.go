// Package httpload is a small closed-loop HTTP/1.1 load generator for the
// benchmarks: Conns keep-alive connections each send one GET, read the whole
// response, and send the next. It speaks just enough HTTP (Content-Length
// bodies) to stay cheaper than the server it measures, the way wrk does.
package httpload

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Config describes one run.
type Config struct {
	// Addr is the server's host:port.
	Addr string
	// Path is the request target, e.g. "/get-tcp-ip".
	Path string
	// Conns is the number of connections, each with one request in flight.
	Conns int
	// Duration is how long to send requests after Warmup.
	Duration time.Duration
	// Warmup is sent first and not counted.
	Warmup time.Duration
	// Timeout bounds one request (and the dial).
	Timeout time.Duration
}

// Sample is one completed request: when it started, relative to the start
// of the counted window, and how long it took.
type Sample struct {
	At, Latency time.Duration
}

// Result is what a run measured.
type Result struct {
	Requests int
	Errors   int
	Non200   int
	Elapsed  time.Duration
	// Samples holds every counted request, sorted by At.
	Samples []Sample
}

// ErrNoRequests is returned by Run when not one request succeeded.
var ErrNoRequests = errors.New("httpload: no request succeeded")

// Rate returns requests per second.
func (r Result) Rate() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// Quantile returns the q-quantile (0..1) of the latencies of samples.
func Quantile(samples []Sample, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	lat := make([]time.Duration, len(samples))
	for i, s := range samples {
		lat[i] = s.Latency
	}
	slices.Sort(lat)
	return lat[min(len(lat)-1, int(q*float64(len(lat))))]
}

// Run sends load as cfg says until the window ends or ctx is cancelled.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Conns <= 0 {
		cfg.Conns = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	req := []byte(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: httpload\r\n\r\n", cfg.Path, cfg.Addr))
	begin := time.Now().Add(cfg.Warmup)
	end := begin.Add(cfg.Duration)
	var (
		mu  sync.Mutex
		res Result
		wg  sync.WaitGroup
	)
	for range cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []Sample
			var errs, non200 int
			defer func() {
				mu.Lock()
				res.Samples = append(res.Samples, local...)
				res.Errors += errs
				res.Non200 += non200
				mu.Unlock()
			}()
			var conn net.Conn
			var br *bufio.Reader
			for ctx.Err() == nil {
				now := time.Now()
				if now.After(end) {
					return
				}
				if conn == nil {
					c, err := net.DialTimeout("tcp", cfg.Addr, cfg.Timeout)
					if err != nil {
						errs++
						time.Sleep(10 * time.Millisecond)
						continue
					}
					conn, br = c, bufio.NewReaderSize(c, 16<<10)
				}
				start := time.Now()
				_ = conn.SetDeadline(start.Add(cfg.Timeout))
				code, keep, err := roundTrip(conn, br, req)
				lat := time.Since(start)
				if err != nil {
					errs++
					conn.Close()
					conn = nil
					continue
				}
				if !keep {
					conn.Close()
					conn = nil
				}
				if start.Before(begin) {
					continue
				}
				if code != 200 {
					non200++
				}
				local = append(local, Sample{At: start.Sub(begin), Latency: lat})
			}
			if conn != nil {
				conn.Close()
			}
		}()
	}
	wg.Wait()
	res.Elapsed = min(time.Since(begin), cfg.Duration)
	res.Requests = len(res.Samples)
	slices.SortFunc(res.Samples, func(a, b Sample) int { return int(a.At - b.At) })
	if res.Requests == 0 {
		return res, ErrNoRequests
	}
	return res, nil
}

// roundTrip writes req and reads one response with a Content-Length body.
func roundTrip(conn net.Conn, br *bufio.Reader, req []byte) (code int, keepAlive bool, err error) {
	if _, err := conn.Write(req); err != nil {
		return 0, false, fmt.Errorf("write request: %w", err)
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, fmt.Errorf("read status line: %w", err)
	}
	if len(line) < 12 {
		return 0, false, fmt.Errorf("read status line: short %q", line)
	}
	code, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("read status line: %w", err)
	}
	length, keepAlive := -1, true
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, false, fmt.Errorf("read header: %w", err)
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil {
				return 0, false, fmt.Errorf("read header: %w", err)
			}
		case bytes.EqualFold(k, []byte("Connection")) && bytes.EqualFold(v, []byte("close")):
			keepAlive = false
		}
	}
	if length < 0 {
		return 0, false, errors.New("read response: no Content-Length")
	}
	if _, err := br.Discard(length); err != nil {
		return 0, false, fmt.Errorf("read body: %w", err)
	}
	return code, keepAlive, nil
}
