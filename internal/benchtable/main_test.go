package main

import (
	"os"
	"testing"
)

func TestParseWrk(t *testing.T) {
	out := `Running 5s test @ http://127.0.0.1:18080/get-tcp-ip
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   133.10us  116.55us   3.26ms   97.74%
    Req/Sec    49.08k     2.59k   52.23k    50.00%
  Latency Distribution
     50%  117.00us
     75%  133.00us
     90%  166.00us
     99%    1.42ms
  48683 requests in 1.00s, 6.87MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  48542.61
Transfer/sec:      6.85MB
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := loadResult{Rate: 48542.61, P50: 117, P99: 1420, Requests: 48683, Errors: 3, Non200: 7}
	if r != want {
		t.Errorf("parseWrk = %+v, want %+v", r, want)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("parseWrk accepted output without figures")
	}
}

func TestSpread(t *testing.T) {
	d := []loadResult{{Rate: 50000, P99: 3000, CPU: 20}, {Rate: 70000, P99: 1000, CPU: 14}, {Rate: 60000, P99: 2000, CPU: 16}}
	n := []loadResult{{Rate: 60000, P99: 1500, CPU: 10}, {Rate: 60000, P99: 1000, CPU: 10}, {Rate: 50000, P99: 1000, CPU: 12}}
	measured, baseline := spread(d, n)
	if want := "get-tcp-ip req/s 50.0k–70.0k (median 60.0k), p99 1000–3000 µs (median 2000 µs), CPU 14.0–20.0 µs/request (median 16.0)"; measured != want {
		t.Errorf("measured = %q, want %q", measured, want)
	}
	// Round 2: 1.17× and p99 1.00× meets the target; round 1 (0.83×) and
	// round 3 (1.20×, p99 2.00×) do not.
	if want := "nginx req/s 50.0k–60.0k (median 60.0k), p99 1000–1500 µs (median 1000 µs), CPU 10.0–12.0 µs/request (median 10.0); " +
		"per round req/s ×0.83 1.17 1.20, p99 ×2.00 1.00 2.00; target met in 1 of 3 rounds; CPU per request ×1.60 (medians)"; baseline != want {
		t.Errorf("baseline = %q, want %q", baseline, want)
	}
}

func TestCPUTicks(t *testing.T) {
	if v := cpuTicks(os.Getpid()); v < 0 {
		t.Errorf("cpuTicks(self) = %d, want ≥ 0", v)
	}
	if v := cpuTicks(-1); v != -1 {
		t.Errorf("cpuTicks(-1) = %d, want -1", v)
	}
}
