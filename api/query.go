package api

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/tcpdispatch/tcpdispatch"
)

// query holds the parsed get-tcp-ip parameters. It is parsed by hand from
// RawQuery so the common request allocates nothing (url.ParseQuery builds a
// map per request).
type query struct {
	key  string
	text bool
	n    int
}

var errBadQuery = errors.New("bad query")

// parseQuery parses raw into q and returns the excluded ids, appended to
// buf[:0] (a caller's stack array in the common case, so nothing is
// allocated). Unknown parameters are ignored, so clients may add cache
// busters; a repeated parameter takes its last value.
func parseQuery(raw string, q *query, buf []string) (exclude []string, err error) {
	q.n = 1
	exclude = buf[:0]
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		if name, err = unescape(name); err != nil {
			return nil, err
		}
		switch name {
		case "key":
			if value, err = unescape(value); err != nil {
				return nil, err
			}
			if len(value) > tcpdispatch.MaxKeyLen {
				return nil, fmt.Errorf("%w: key longer than %d bytes", errBadQuery, tcpdispatch.MaxKeyLen)
			}
			q.key = value
		case "format":
			if value, err = unescape(value); err != nil {
				return nil, err
			}
			switch value {
			case "", "json":
				q.text = false
			case "text":
				q.text = true
			default:
				return nil, fmt.Errorf("%w: format must be json or text, not %q", errBadQuery, value)
			}
		case "n":
			if value, err = unescape(value); err != nil {
				return nil, err
			}
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 || n > tcpdispatch.MaxN {
				return nil, fmt.Errorf("%w: n must be an integer in 1..%d, not %q", errBadQuery, tcpdispatch.MaxN, value)
			}
			q.n = n
		case "exclude":
			if value, err = unescape(value); err != nil {
				return nil, err
			}
			exclude = exclude[:0]
			for value != "" {
				var id string
				id, value, _ = strings.Cut(value, ",")
				id = strings.TrimSpace(id)
				if id == "" {
					continue
				}
				if err := tcpdispatch.ValidateID(id); err != nil {
					return nil, fmt.Errorf("%w: exclude: %v", errBadQuery, err)
				}
				if len(exclude) == tcpdispatch.MaxExclude {
					return nil, fmt.Errorf("%w: exclude lists more than %d ids", errBadQuery, tcpdispatch.MaxExclude)
				}
				exclude = append(exclude, id)
			}
		}
	}
	return exclude, nil
}

// unescape decodes s only when it holds an escape, so plain values are
// returned without a copy.
func unescape(s string) (string, error) {
	if !strings.ContainsAny(s, "%+") {
		return s, nil
	}
	u, err := url.QueryUnescape(s)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errBadQuery, err)
	}
	return u, nil
}

// clientIP returns the host part of a RemoteAddr without allocating.
func clientIP(remote string) string {
	if i := strings.LastIndexByte(remote, ':'); i > 0 {
		remote = remote[:i]
	}
	return strings.TrimSuffix(strings.TrimPrefix(remote, "["), "]")
}
