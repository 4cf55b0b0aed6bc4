package integration

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// shaper is a TCP relay that makes a link slow and lossy the way TCP
// experiences it, which etcd's proxy cannot do: its delay is applied to one
// chunk after another, so a busy link's queue grows without bound, and its
// drops remove bytes from the stream, which no network does to TCP.
//
// Here every chunk is delivered at max(previous delivery, arrival + delay ±
// jitter): delays overlap as on a real path. A chunk "lost" with the given
// probability is delivered only after a retransmission timeout (200-400ms,
// Linux's minimum RTO is 200ms), and everything behind it waits, which is
// TCP's head-of-line blocking.
type shaper struct {
	ln   net.Listener
	to   string
	conf atomic.Pointer[shape]
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// shape is one link condition; the zero value is a clean link.
type shape struct {
	delay, jitter time.Duration
	loss          float64
}

// startShaper relays listen → to until the test ends.
func startShaper(t testing.TB, listen, to string) *shaper {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("shaper listen %s: %v", listen, err)
	}
	s := &shaper{ln: ln, to: to, conns: map[net.Conn]struct{}{}}
	s.conf.Store(&shape{})
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

// set changes the link condition for all connections, at once.
func (s *shaper) set(sh shape) { s.conf.Store(&sh) }

func (s *shaper) accept() {
	defer s.wg.Done()
	for {
		in, err := s.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", s.to, time.Second)
		if err != nil {
			in.Close()
			continue
		}
		if !s.track(in, out) {
			return
		}
		s.wg.Add(2)
		go s.pipe(out, in)
		go s.pipe(in, out)
	}
}

func (s *shaper) track(cs ...net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		s.conns[c] = struct{}{}
	}
	return true
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst through the shaping queue; closing either side
// ends both.
func (s *shaper) pipe(dst, src net.Conn) {
	defer s.wg.Done()
	q := make(chan chunk, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range q {
			time.Sleep(time.Until(c.at))
			if _, err := dst.Write(c.b); err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
		for range q { // let the reader finish
		}
	}()
	var last time.Time
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			sh := s.conf.Load()
			d := sh.delay
			if sh.jitter > 0 {
				d += time.Duration(rand.Int64N(int64(2*sh.jitter))) - sh.jitter
			}
			if sh.loss > 0 && rand.Float64() < sh.loss {
				d += 200*time.Millisecond + time.Duration(rand.IntN(200))*time.Millisecond
			}
			at := time.Now().Add(max(d, 0))
			if at.Before(last) {
				at = last
			}
			last = at
			q <- chunk{append([]byte(nil), buf[:n]...), at}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				src.Close()
			}
			break
		}
	}
	close(q)
	<-done
}

func (s *shaper) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	s.wg.Wait()
}
