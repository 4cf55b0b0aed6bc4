package main

import "testing"

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
