package client_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/tcpdispatch/tcpdispatch/client"
)

// echoOnce stands in for a tcp-server: it answers `accept` connections'
// first line with "tcp1 <line>" and closes them. The returned channel is
// closed when it is done.
func echoOnce(ln net.Listener, accept int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range accept {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(conn).ReadString('\n')
			fmt.Fprintf(conn, "tcp1 %s", line)
			conn.Close()
		}
	}()
	return done
}

// fakeDispatcher stands in for a dispatcher replica that always names the
// tcp-server at addr.
func fakeDispatcher(addr string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"id":"tcp1","addr":%q,"alternatives":[]}`, addr)
	}))
}

func ExampleClient_Dial() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	served := echoOnce(ln, 1)
	dispatcher := fakeDispatcher(ln.Addr().String())
	defer dispatcher.Close()

	c, err := client.New(client.Config{
		// The replicas' addresses: no DNS involved. With a DNS name, set
		// Dispatcher: "dispatch.example.com:8080" instead or as well.
		Bootstrap: []string{strings.TrimPrefix(dispatcher.URL, "http://")},
		// Keep the servers last offered, for when no dispatcher answers.
		// CachePath: "/var/lib/myapp/tcpdispatch.json",
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, ans, err := c.Dial(ctx)
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	fmt.Println("connected to", ans.ID, "from the", ans.Source)

	fmt.Fprintln(conn, "hello")
	reply, _ := bufio.NewReader(conn).ReadString('\n')
	fmt.Print(reply)
	<-served
	// Output:
	// connected to tcp1 from the dispatcher
	// tcp1 hello
}

func ExampleReconnector_Run() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	served := echoOnce(ln, 2) // closes each connection after one line
	dispatcher := fakeDispatcher(ln.Addr().String())
	defer dispatcher.Close()

	c, err := client.New(client.Config{Bootstrap: []string{strings.TrimPrefix(dispatcher.URL, "http://")}})
	if err != nil {
		panic(err)
	}
	cfg := client.DefaultReconnectConfig()
	cfg.BackoffBase = 50 * time.Millisecond // short for the example
	r, err := client.NewReconnector(c, cfg)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sessions := 0
	// Run returns when ctx is cancelled; every session end is followed by
	// a jittered backoff and a new Dial.
	_ = r.Run(ctx, func(ctx context.Context, conn net.Conn, ans client.Answer) error {
		sessions++
		fmt.Fprintln(conn, "ping")
		reply, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return err
		}
		fmt.Printf("session %d: %s", sessions, reply)
		if sessions == 2 {
			cancel()
		}
		return nil // the server closes the connection: reconnect
	})
	<-served
	// Output:
	// session 1: tcp1 ping
	// session 2: tcp1 ping
}
