package tcpdispatch

import "fmt"

// GetTCPIPPath is the route of the dispatcher's main lookup.
const GetTCPIPPath = "/get-tcp-ip"

// Limits of a get-tcp-ip request. The dispatcher answers 400 to a request
// over them; the SDK rejects a configuration over them.
const (
	// MaxKeyLen bounds ?key=, in bytes.
	MaxKeyLen = 256
	// MaxExclude bounds the ids in ?exclude=.
	MaxExclude = 32
	// MaxN bounds ?n=, the servers asked for in one answer.
	MaxN = 10
)

// MaxIDLen bounds a server id, in bytes; an id travels in every get-tcp-ip
// answer.
const MaxIDLen = 128

// ValidateID reports whether id can name a server: 1..MaxIDLen bytes of
// letters, digits, '-', '_', '.', ':' and '@'.
func ValidateID(id string) error {
	if err := CheckIDLen(id); err != nil {
		return err
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
			c == '-' || c == '_' || c == '.' || c == ':' || c == '@' {
			continue
		}
		return fmt.Errorf("server id %q: byte %q not allowed (use letters, digits, - _ . : @)", id, c)
	}
	return nil
}

// CheckIDLen reports whether id is 1..MaxIDLen bytes long: the part of
// ValidateID a reader of answers holds the dispatcher to, so that a later
// widening of the alphabet does not break deployed clients.
func CheckIDLen(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("server id %q: must be 1..%d bytes", id, MaxIDLen)
	}
	return nil
}

// Server is one tcp-server as get-tcp-ip names it: the JSON body of a plain
// answer, and each alternative of an answer with ?n=.
//
//	{"id":"tcp1","addr":"10.0.0.1:9000"}
type Server struct {
	// ID is the server's id (see ValidateID).
	ID string `json:"id"`
	// Addr is the host:port to connect to.
	Addr string `json:"addr"`
}

// Answer is the get-tcp-ip JSON body with ?n= greater than 1: the pick,
// then up to n-1 alternatives in preference order.
//
//	{"id":"tcp1","addr":"10.0.0.1:9000","alternatives":[{"id":"tcp2","addr":"10.0.0.2:9000"}]}
//
// The dispatcher always writes alternatives (an empty list when it has no
// other server); a reader treats an absent list as empty, and reads a plain
// answer (Server) as an Answer without alternatives.
type Answer struct {
	Server
	Alternatives []Server `json:"alternatives"`
}

// ErrorBody is the JSON body of every error answer of the dispatcher's
// HTTP API.
type ErrorBody struct {
	Error string `json:"error"`
}
