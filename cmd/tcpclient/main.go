// Command tcpclient is the reference client: it finds a tcp-server through
// the dispatchers with the client SDK, sends "ping <n>" every --interval,
// prints each echo with where it came from, and reconnects whenever the
// session breaks. Stop it with SIGINT or SIGTERM.
//
//	tcpclient --bootstrap 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083 --cache /tmp/tcpclient.json
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tcpdispatch/tcpdispatch/client"
	"github.com/tcpdispatch/tcpdispatch/cmd/internal/flagconf"
)

func main() {
	cfg := client.DefaultConfig()
	rc := client.DefaultReconnectConfig()
	fs := flag.NewFlagSet("tcpclient", flag.ExitOnError)
	fs.StringVar(&cfg.Dispatcher, "dispatcher", "", "dispatcher DNS name[:port]; every A/AAAA record is used")
	bootstrap := fs.String("bootstrap", "", "comma list of dispatcher host:port (IP direct, no DNS)")
	static := fs.String("static", "", "comma list of tcp-server host:port tried last")
	fs.StringVar(&cfg.CachePath, "cache", "", "last-known-good cache file (default: memory only)")
	fs.StringVar(&cfg.Key, "key", "", "sticky key sent as ?key=")
	fs.IntVar(&cfg.N, "n", cfg.N, "servers asked per request (1-10)")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", cfg.RequestTimeout, "timeout of one dispatcher request")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", cfg.ConnectTimeout, "timeout of one tcp-server connect")
	fs.DurationVar(&rc.BackoffBase, "backoff-base", rc.BackoffBase, "first reconnect backoff ceiling (full jitter)")
	fs.DurationVar(&rc.BackoffCap, "backoff-cap", rc.BackoffCap, "largest reconnect backoff ceiling")
	interval := fs.Duration("interval", time.Second, "time between two pings")
	count := fs.Int("count", 0, "stop after this many echoes (0: run until signalled)")
	flagconf.ParseOrExit(fs, os.Args[1:])
	cfg.Bootstrap = splitList(*bootstrap)
	cfg.Static = splitList(*static)

	log := logrus.New()
	log.Formatter = &logrus.TextFormatter{FullTimestamp: true}
	cfg.Hooks = client.Hooks{
		OnDispatch: func(e client.DispatchEvent) {
			if e.Err != nil {
				log.WithField("dispatcher", e.Endpoint).WithError(e.Err).Warn("dispatcher failed")
			}
		},
		OnConnect: func(e client.ConnectEvent) {
			if e.Err != nil {
				log.WithField("server", e.Server.ID).WithField("source", e.Source).WithError(e.Err).Warn("connect failed")
			}
		},
		OnError: func(err error) { log.WithError(err).Warn("client") },
	}
	rc.OnRetry = func(e client.RetryEvent) {
		entry := log.WithField("retry_in", e.Wait.Round(time.Millisecond)).WithField("attempt", e.Attempt)
		if e.Err != nil {
			entry = entry.WithError(e.Err)
		}
		if e.Session {
			entry.Warn("session ended")
		} else {
			entry.Warn("no server reachable")
		}
	}
	if err := run(cfg, rc, *interval, *count, log); err != nil {
		log.WithError(err).Error("exit")
		os.Exit(1)
	}
}

func run(cfg client.Config, rc client.ReconnectConfig, interval time.Duration, count int, log *logrus.Logger) error {
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	r, err := client.NewReconnector(c, rc)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	seq := 0
	return r.Run(ctx, func(ctx context.Context, conn net.Conn, ans client.Answer) error {
		log.WithField("server", ans.ID).WithField("addr", ans.Addr).WithField("source", ans.Source).
			WithField("dispatcher", ans.Dispatcher).Info("connected")
		in := bufio.NewReader(conn)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			seq++
			_ = conn.SetDeadline(time.Now().Add(5*time.Second + interval))
			if _, err := fmt.Fprintf(conn, "ping %d\n", seq); err != nil {
				return err
			}
			reply, err := in.ReadString('\n')
			if err != nil {
				return err
			}
			log.WithField("server", ans.ID).Info(strings.TrimSpace(reply))
			if count > 0 && seq >= count {
				stop()
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	})
}

func splitList(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
