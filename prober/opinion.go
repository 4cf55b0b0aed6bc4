package prober

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tcpdispatch/tcpdispatch/keyspace"
)

// OpinionPath is the internal route on which every replica probes a list of
// addrs for the leader (POST, JSON OpinionRequest, answer OpinionResponse).
// It requires "Authorization: Bearer <token>" with the token the current
// leader wrote, fenced, under keyspace.Layout.OpinionToken.
const OpinionPath = "/v1/internal/probe"

// MaxOpinionAddrs caps the addrs of one OpinionRequest; a longer list gets
// 400.
const MaxOpinionAddrs = 256

// maxOpinionBody caps the request body of the opinion route.
const maxOpinionBody = 64 << 10

// OpinionRequest asks a replica to probe Addrs once each.
type OpinionRequest struct {
	Addrs []string `json:"addrs"`
}

// Opinion is one replica's probe of one addr.
type Opinion struct {
	Addr string `json:"addr"`
	// Result is up, down, or local (the asked replica could not probe:
	// its own fault, which says nothing about the server).
	Result OpinionResult `json:"result"`
	Reason string        `json:"reason,omitempty"`
}

// OpinionResponse is the answer of the opinion route.
type OpinionResponse struct {
	Replica  string    `json:"replica"`
	Opinions []Opinion `json:"opinions"`
}

// OpinionResult is the outcome of one probe made for another replica.
type OpinionResult string

// Probe outcomes reported by the opinion route.
const (
	OpinionUp    OpinionResult = "up"
	OpinionDown  OpinionResult = "down"
	OpinionLocal OpinionResult = "local"
)

// TokenSource returns the opinion token the current leader wrote.
type TokenSource interface {
	// Token returns the token in etcd; refresh forces a read instead of
	// the cached value. It must be bounded by ctx.
	Token(ctx context.Context, refresh bool) (string, error)
}

// OpinionHandler serves OpinionPath: it probes the requested addrs the way
// the leader would, with the same timeout and the same classification of
// the prober's own errors. At most maxInFlight requests run at once (more
// get 429); each is bounded by twice the probe timeout.
func (p *Prober) OpinionHandler(name string, tokens TokenSource, maxInFlight int) http.Handler {
	return &opinionHandler{p: p, name: name, tokens: tokens, sem: make(chan struct{}, max(1, maxInFlight))}
}

type opinionHandler struct {
	p      *Prober
	name   string
	tokens TokenSource
	sem    chan struct{}
}

// errBadToken is returned by authorize when the request's token is not the
// current leader's.
var errBadToken = errors.New("opinion token does not match the leader's")

func (h *opinionHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		h.fail(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	select {
	case h.sem <- struct{}{}:
		defer func() { <-h.sem }()
	default:
		h.fail(w, http.StatusTooManyRequests, "too many opinion requests in flight")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*h.p.cfg.Timeout+time.Second)
	defer cancel()
	if err := h.authorize(ctx, r); err != nil {
		h.fail(w, http.StatusUnauthorized, err.Error())
		return
	}
	var req OpinionRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxOpinionBody))
	if err := dec.Decode(&req); err != nil {
		h.fail(w, http.StatusBadRequest, "decode request: "+err.Error())
		return
	}
	if len(req.Addrs) == 0 || len(req.Addrs) > MaxOpinionAddrs {
		h.fail(w, http.StatusBadRequest, fmt.Sprintf("want 1..%d addrs, got %d", MaxOpinionAddrs, len(req.Addrs)))
		return
	}
	targets := make([]target, len(req.Addrs))
	for i, a := range req.Addrs {
		addr, err := keyspace.ParseAddr(a)
		if err != nil {
			h.fail(w, http.StatusBadRequest, err.Error())
			return
		}
		targets[i] = target{addr: addr}
	}
	h.p.metrics.opinionsServed.Inc()
	h.p.probe(ctx, targets, 0)
	resp := OpinionResponse{Replica: h.name, Opinions: make([]Opinion, len(targets))}
	for i, t := range targets {
		o := Opinion{Addr: t.addr, Result: OpinionUp, Reason: t.reason}
		switch {
		case t.local:
			o.Result = OpinionLocal
		case !t.ok:
			o.Result = OpinionDown
		}
		resp.Opinions[i] = o
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// authorize checks the bearer token against the leader's token in etcd,
// re-reading it once when it does not match the cached one (a new term
// writes a new token).
func (h *opinionHandler) authorize(ctx context.Context, r *http.Request) error {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		return errors.New("missing bearer token")
	}
	for _, refresh := range []bool{false, true} {
		want, err := h.tokens.Token(ctx, refresh)
		if err != nil {
			if refresh {
				return fmt.Errorf("read opinion token: %w", err)
			}
			continue
		}
		if want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 {
			return nil
		}
	}
	return errBadToken
}

func (h *opinionHandler) fail(w http.ResponseWriter, code int, reason string) {
	h.p.metrics.opinionsRejected.Inc()
	h.p.log.WithField("code", code).WithField("reason", reason).Warn("opinion request rejected")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": reason})
}

// Peer is another replica that can give a second opinion.
type Peer struct {
	Name string
	// URL is the replica's advertised HTTP base URL.
	URL string
}

// Peers lists the other replicas. It must be bounded by ctx.
type Peers interface {
	Peers(ctx context.Context) ([]Peer, error)
}

// opinions is one addr's second opinions: replicas that reached it and
// replicas that could not (local results are not counted).
type opinions struct{ up, down int }

// askPeers asks every peer to probe addrs, at once, each request bounded by
// OpinionTimeout, and tallies the answers per addr. It returns how many
// peers answered.
func (p *Prober) askPeers(ctx context.Context, peers []Peer, token string, addrs []string) (map[string]opinions, int) {
	body, err := json.Marshal(OpinionRequest{Addrs: addrs})
	if err != nil {
		return nil, 0
	}
	var mu sync.Mutex
	tally := make(map[string]opinions, len(addrs))
	answered := 0
	var wg sync.WaitGroup
	for _, peer := range peers {
		wg.Go(func() {
			resp, err := p.askPeer(ctx, peer, token, body)
			if err != nil {
				p.metrics.opinionFailures.Inc()
				p.log.WithError(err).WithField("peer", peer.Name).Warn("second opinion failed")
				return
			}
			mu.Lock()
			defer mu.Unlock()
			answered++
			want := make(map[string]bool, len(addrs))
			for _, a := range addrs {
				want[a] = true
			}
			for _, o := range resp.Opinions {
				if !want[o.Addr] {
					continue
				}
				delete(want, o.Addr) // one vote per peer and addr
				t := tally[o.Addr]
				switch o.Result {
				case OpinionUp:
					t.up++
				case OpinionDown:
					t.down++
				}
				tally[o.Addr] = t
			}
		})
	}
	wg.Wait()
	return tally, answered
}

func (p *Prober) askPeer(ctx context.Context, peer Peer, token string, body []byte) (*OpinionResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.OpinionTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(peer.URL, "/")+OpinionPath, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("ask %s: %w", peer.Name, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.peerHTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask %s: %w", peer.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxOpinionBody))
	if err != nil {
		return nil, fmt.Errorf("read answer of %s: %w", peer.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ask %s: %d %s", peer.Name, resp.StatusCode, bytes.TrimSpace(b))
	}
	var out OpinionResponse
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("decode answer of %s: %w", peer.Name, err)
	}
	return &out, nil
}
