// Command tcpserver is the reference tcp-server for demos and tests: it
// accepts TCP connections and echoes every line back, prefixed with its id
// so a client can see where it landed.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

func main() {
	fs := flag.NewFlagSet("tcpserver", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:9000", "TCP address to accept clients on")
	id := fs.String("id", "", "server id echoed to clients (default: the listen address)")
	idle := fs.Duration("idle-timeout", 5*time.Minute, "close a connection that sends nothing for this long")
	_ = fs.Parse(os.Args[1:])
	if *id == "" {
		*id = *listen
	}
	log := logrus.New()
	log.Formatter = &logrus.TextFormatter{FullTimestamp: true}
	entry := log.WithField("server", *id)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		entry.WithError(err).Error("listen")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	entry.WithField("addr", ln.Addr().String()).Info("accepting")
	if err := serve(ctx, ln, *id, *idle, entry); err != nil {
		entry.WithError(err).Error("serve")
		os.Exit(1)
	}
}

// serve accepts connections until ctx is cancelled, then closes the
// listener and every open connection and waits for their handlers.
func serve(ctx context.Context, ln net.Listener, id string, idle time.Duration, log *logrus.Entry) error {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			continue
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			echo(c, id, idle)
		}()
	}
}

// echo answers each line read from c with "<id> <line>".
func echo(c net.Conn, id string, idle time.Duration) {
	r := bufio.NewScanner(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		if !r.Scan() {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(c, "%s %s\n", id, r.Text()); err != nil {
			return
		}
	}
}
