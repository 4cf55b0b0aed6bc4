package prober

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestLinkPoller: one poller goroutine reports each way a link ends (the
// server closes it, resets it, talks on it) and nothing for a link the
// leader closes itself.
func TestLinkPoller(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	})
	ended := make(chan linkEvent, 8)
	p, err := newLinkPoller(ended)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// Links alternate between a dialed conn (add) and a bare socket, as
	// the connector opens them (addFD).
	viaFD := false
	open := func(id string) (uint64, net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		ev := linkEvent{id: id, l: &link{}, dialed: true}
		viaFD = !viaFD
		if !viaFD {
			key, err := p.add(c, ev)
			if err != nil {
				t.Fatal(err)
			}
			return key, <-accepted
		}
		f, err := c.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		fd, err := syscall.Dup(int(f.Fd()))
		f.Close()
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
		key, err := p.addFD(fd, ev)
		if err != nil {
			t.Fatal(err)
		}
		return key, <-accepted
	}
	wait := func(id string) linkEvent {
		t.Helper()
		select {
		case ev := <-ended:
			if ev.id != id {
				t.Fatalf("ended %s; want %s", ev.id, id)
			}
			return ev
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no end reported", id)
		}
		return linkEvent{}
	}

	_, srv := open("fin")
	srv.Close()
	if ev := wait("fin"); !errors.Is(ev.err, io.EOF) {
		t.Errorf("server close: err %v; want EOF", ev.err)
	}

	_, srv = open("rst")
	srv.(*net.TCPConn).SetLinger(0)
	srv.Close()
	if ev := wait("rst"); !refused(ev.err) {
		t.Errorf("server reset: err %v; want a reset", ev.err)
	}

	_, srv = open("chatty")
	srv.Write([]byte(strings.Repeat("x", linkReadCap+1)))
	if ev := wait("chatty"); ev.err == nil || !strings.Contains(ev.err.Error(), "idle link") {
		t.Errorf("server talking: err %v; want it closed as not a link", ev.err)
	}
	srv.Close()

	key, srv := open("mine")
	if !p.remove(key) {
		t.Errorf("remove of an open link = false")
	}
	if p.remove(key) {
		t.Errorf("second remove = true")
	}
	// The server sees the close; the leader gets no event.
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := srv.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("server side after the leader's close: %v; want EOF", err)
	}
	srv.Close()
	select {
	case ev := <-ended:
		t.Errorf("event %s for a link the leader closed", ev.id)
	case <-time.After(300 * time.Millisecond):
	}
	ln.Close()
}
