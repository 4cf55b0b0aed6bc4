package api

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzParseHot checks that every request parseHot accepts is read by
// fasthttp the same way: no error, the same method, raw path, query,
// keep-alive and forwarding headers. A request parseHot refuses is
// fasthttp's anyway, so only acceptance needs checking.
func FuzzParseHot(f *testing.F) {
	for _, s := range []string{
		"GET /get-tcp-ip HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /healthz HTTP/1.0\r\nHost: a.b:80\r\nConnection: keep-alive\r\n\r\n",
		"GET /get-tcp-ip?key=a&n=2 HTTP/1.1\r\nhost: [::1]:8080\r\nX-Forwarded-For: 1.2.3.4, 5.6.7.8\r\nx-real-ip: 9.9.9.9\r\nConnection: close\r\n\r\n",
		"GET /readyz HTTP/1.1\r\nHost: x\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r hotRequest
		n, ok := parseHot(b, 16<<10, &r)
		if !ok {
			return
		}
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(bytes.NewReader(b[:n]))); err != nil {
			t.Fatalf("parseHot accepted %q; fasthttp: %v", b[:n], err)
		}
		h := &req.Header
		path := map[hotRoute]string{routeGetTCPIP: "/get-tcp-ip", routeHealthz: "/healthz", routeReadyz: "/readyz"}[r.route]
		switch {
		case h.IsHead() != r.head || (!r.head && !h.IsGet()):
			t.Fatalf("%q: method %s, parseHot head=%v", b[:n], h.Method(), r.head)
		case string(req.URI().PathOriginal()) != path:
			t.Fatalf("%q: path %q, parseHot %q", b[:n], req.URI().PathOriginal(), path)
		case string(req.URI().QueryString()) != string(r.query):
			t.Fatalf("%q: query %q, parseHot %q", b[:n], req.URI().QueryString(), r.query)
		case h.ConnectionClose() != r.close:
			t.Fatalf("%q: close %v, parseHot %v", b[:n], h.ConnectionClose(), r.close)
		case h.IsHTTP11() == r.http10:
			t.Fatalf("%q: HTTP/1.1 %v, parseHot HTTP/1.0 %v", b[:n], h.IsHTTP11(), r.http10)
		}
		xff := h.PeekAll("X-Forwarded-For")
		if len(xff) != r.nxff {
			t.Fatalf("%q: %d X-Forwarded-For, parseHot %d", b[:n], len(xff), r.nxff)
		}
		for i, v := range xff {
			if string(v) != string(r.xff[i]) {
				t.Fatalf("%q: X-Forwarded-For %q, parseHot %q", b[:n], v, r.xff[i])
			}
		}
		if v := h.Peek("X-Real-Ip"); string(v) != string(r.xri) {
			t.Fatalf("%q: X-Real-Ip %q, parseHot %q", b[:n], v, r.xri)
		}
	})
}
