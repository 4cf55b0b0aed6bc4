package api

import (
	"bytes"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// The event loop (loop_linux.go) reads HTTP/1.x itself, but only the
// plainest requests: a GET or HEAD of /get-tcp-ip, /healthz or /readyz
// whose request line and headers are complete in what one read returned,
// with a Host header, no body and nothing unusual. parseHot says whether
// a request is such a one; any other request, and any request it is not
// sure about, is handed with its connection to fasthttp, which serves it
// as it serves every connection without the loop. The loop therefore
// never has to reject a request: every error answer about a request's
// form (400, 431, 413) and every other route is fasthttp's and echo's.

// hotRoute is a public route the loop answers.
type hotRoute uint8

const (
	routeGetTCPIP hotRoute = iota + 1
	routeHealthz
	routeReadyz
)

// maxHotForwarded is how many X-Forwarded-For headers a request the loop
// answers may carry; one with more is handed over (fasthttp reads them
// all, allocating).
const maxHotForwarded = 4

// hotRequest is a request parsed by parseHot. Its slices alias the read
// buffer and are valid until the next read.
type hotRequest struct {
	route hotRoute
	head  bool
	query []byte
	// http10: the request line said HTTP/1.0; the answer then says
	// whether the connection stays open.
	http10 bool
	// close: Connection: close, or HTTP/1.0 without keep-alive.
	close bool
	xff   [maxHotForwarded][]byte
	nxff  int
	xri   []byte
}

var (
	crlf        = []byte("\r\n")
	crlfcrlf    = []byte("\r\n\r\n")
	keepAlive   = []byte("keep-alive")
	closeToken  = []byte("close")
	http11Proto = []byte("HTTP/1.1")
	http10Proto = []byte("HTTP/1.0")
)

// parseHot parses the request at the start of b. It returns the length of
// the request and true when the loop may answer it; false when it must be
// handed over: another request, or one not complete in b, or longer than
// max bytes of request line and headers.
func parseHot(b []byte, max int, r *hotRequest) (int, bool) {
	end := bytes.Index(b, crlfcrlf)
	if end < 0 || end+4 > max {
		return 0, false
	}
	*r = hotRequest{}
	n := end + 4
	block := b[:end+2] // every line with its CRLF

	// Request line: method SP origin-form target SP version.
	i := bytes.Index(block, crlf)
	line := block[:i]
	block = block[i+2:]
	switch {
	case bytes.HasPrefix(line, []byte("GET ")):
		line = line[4:]
	case bytes.HasPrefix(line, []byte("HEAD ")):
		r.head, line = true, line[5:]
	default:
		return 0, false
	}
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return 0, false
	}
	target, proto := line[:sp], line[sp+1:]
	switch {
	case bytes.Equal(proto, http11Proto):
	case bytes.Equal(proto, http10Proto):
		r.http10, r.close = true, true
	default:
		return 0, false
	}
	for _, c := range target {
		// Visible ASCII only; a fragment is stripped by fasthttp's URI
		// parser, so a target with one is handed over too.
		if c <= ' ' || c >= 0x7f || c == '#' {
			return 0, false
		}
	}
	path := target
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		path, r.query = target[:q], target[q+1:]
	}
	switch string(path) {
	case "/get-tcp-ip":
		r.route = routeGetTCPIP
	case "/healthz":
		r.route = routeHealthz
	case "/readyz":
		r.route = routeReadyz
	default:
		return 0, false
	}

	hosts := 0
	for len(block) > 0 {
		i := bytes.Index(block, crlf)
		line := block[:i]
		block = block[i+2:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return 0, false
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range name {
			if !isTokenChar(c) {
				return 0, false
			}
		}
		for _, c := range value {
			if (c < ' ' && c != '\t') || c >= 0x7f {
				return 0, false
			}
		}
		switch {
		case asciiEqualFold(name, "Host"):
			if hosts++; hosts > 1 || !plainHost(value) {
				return 0, false
			}
		case asciiEqualFold(name, "Connection"):
			switch {
			case bytes.Equal(value, closeToken):
				r.close = true
			case bytes.Equal(value, keepAlive):
				if r.http10 {
					r.close = false
				}
			default:
				return 0, false
			}
		case asciiEqualFold(name, "X-Forwarded-For"):
			if r.nxff == maxHotForwarded {
				return 0, false
			}
			r.xff[r.nxff] = value
			r.nxff++
		case asciiEqualFold(name, "X-Real-Ip"):
			if r.xri != nil {
				return 0, false
			}
			r.xri = value
		case asciiEqualFold(name, "Content-Length"), asciiEqualFold(name, "Transfer-Encoding"),
			asciiEqualFold(name, "Expect"), asciiEqualFold(name, "Trailer"):
			// A body, or the promise of one: fasthttp's to read.
			return 0, false
		}
	}
	if hosts != 1 {
		return 0, false
	}
	return n, true
}

// plainHost reports whether v is host[:port] in the plainest form: a
// name of letters, digits, '.', '-' and '_', or a bracketed IPv6 literal,
// and a port of digits. fasthttp builds the request URI from Host, and
// some odd values (a lone ']') make it lose the path (FuzzParseHot).
func plainHost(v []byte) bool {
	host, port, hasPort := v, []byte(nil), false
	if len(v) > 0 && v[0] == '[' {
		end := bytes.IndexByte(v, ']')
		if end < 0 {
			return false
		}
		host = v[1:end]
		if rest := v[end+1:]; len(rest) > 0 {
			if rest[0] != ':' {
				return false
			}
			port, hasPort = rest[1:], true
		}
		for _, c := range host {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == ':' || c == '.') {
				return false
			}
		}
		if a, err := netip.ParseAddr(string(host)); err != nil || !a.Is6() {
			return false
		}
	} else {
		if i := bytes.IndexByte(v, ':'); i >= 0 {
			host, port, hasPort = v[:i], v[i+1:], true
		}
		for _, c := range host {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
				return false
			}
		}
	}
	if len(host) == 0 || (hasPort && len(port) == 0) {
		return false
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// isTokenChar reports whether c may appear in a header name (RFC 9110
// tchar).
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// asciiEqualFold compares a header name to a canonical one, ignoring case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		d := s[i]
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// dateLine is the Date header fasthttp sends, reformatted once a second.
type dateLine struct {
	sec  int64
	line []byte
}

// at returns the Date line for now.
func (d *dateLine) at(now time.Time) []byte {
	if s := now.Unix(); s != d.sec || d.line == nil {
		d.sec = s
		d.line = append(d.line[:0], "Date: "...)
		d.line = now.UTC().AppendFormat(d.line, http.TimeFormat)
		d.line = append(d.line, "\r\n"...)
	}
	return d.line
}

// appendReply appends r as fasthttp writes it (fast.go's writeFast and
// fasthttp's ResponseHeader.AppendBytes): status line, Date, Content-Type,
// Content-Length, the reply's own headers, then Connection. TestLoopMatchesFast
// compares the two byte for byte.
func (r *reply) appendHTTP(dst, date []byte, head, http10, close bool) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(r.status), 10)
	dst = append(dst, ' ')
	dst = append(dst, fasthttp.StatusMessage(r.status)...)
	dst = append(dst, "\r\n"...)
	dst = append(dst, date...)
	if r.contentType != nil {
		dst = append(dst, "Content-Type: "...)
		dst = append(dst, r.contentType[0]...)
		dst = append(dst, "\r\n"...)
	}
	// fasthttp sends no length of an empty HEAD answer.
	if !head || len(r.body) > 0 {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(r.body)), 10)
		dst = append(dst, "\r\n"...)
	}
	if r.noStore {
		dst = append(dst, "Cache-Control: no-store\r\n"...)
	}
	if r.degraded {
		dst = append(dst, DegradedHeader+": "+DegradedAllDown+"\r\n"...)
	}
	if r.retryAfter > 0 {
		dst = append(dst, "Retry-After: "...)
		dst = strconv.AppendInt(dst, int64(r.retryAfter), 10)
		dst = append(dst, "\r\n"...)
	}
	switch {
	case close:
		dst = append(dst, "Connection: close\r\n"...)
	case http10:
		dst = append(dst, "Connection: keep-alive\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	if !head {
		dst = append(dst, r.body...)
	}
	return dst
}
