package serverkit_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/tcpdispatch/tcpdispatch/serverkit"
)

func ExampleServer() {
	srv, err := serverkit.New(serverkit.Config{MaxConns: 100, DrainWindow: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	// The status document, for the dispatcher to read; register it with
	// etcdctl put <prefix>servers/<id>/status-url http://host:port/status.
	status := httptest.NewServer(srv.Status())
	defer status.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- srv.Serve(ctx, ln, func(ctx context.Context, conn net.Conn) {
			sc := bufio.NewScanner(conn)
			for sc.Scan() {
				fmt.Fprintf(conn, "tcp1 %s\n", sc.Text())
			}
		})
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	fmt.Fprintln(conn, "hello")
	reply, _ := bufio.NewReader(conn).ReadString('\n')
	fmt.Print(reply)
	printStatus(status.URL)

	// On SIGTERM a server cancels ctx: Serve reports draining, stops
	// accepting and closes connections over DrainWindow. This client leaves
	// by itself, which ends the drain early.
	cancel()
	time.Sleep(50 * time.Millisecond)
	printStatus(status.URL)
	conn.Close()
	fmt.Println("Serve:", <-served)
	// Output:
	// tcp1 hello
	// 200 {"conns":1,"max_conns":100,"load":0.01,"draining":false}
	// 503 {"conns":1,"max_conns":100,"load":0.01,"draining":true}
	// Serve: <nil>
}

func printStatus(url string) {
	resp, err := http.Get(url)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s", resp.StatusCode, b)
}

func ExampleStatus_Track() {
	// A server with its own accept loop counts connections with Track and
	// serves the document with the Status itself as the http.Handler.
	status := serverkit.NewStatus(2, nil)
	a, b := net.Pipe()
	defer b.Close()
	conn := status.Track(a)
	fmt.Printf("%+v\n", status.Document())
	conn.Close()
	fmt.Printf("%+v\n", status.Document())
	// Output:
	// {Conns:1 MaxConns:2 Load:0.5 Draining:false ShedTotal:0}
	// {Conns:0 MaxConns:2 Load:0 Draining:false ShedTotal:0}
}
