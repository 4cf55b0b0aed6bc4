// Command tcpserver is the reference tcp-server for demos and tests: it
// accepts TCP connections and echoes every line back, prefixed with its id
// so a client can see where it landed.
//
// It is built on serverkit: --status-listen serves the status document at
// /status, --max-conns limits connections, and SIGTERM or SIGINT drains
// (stop accepting, report draining, close connections over --drain-window)
// before exiting; a second signal closes everything at once.
//
// When the dispatcher's leader asks it to shed connections for rebalancing
// (?shed=N on the status URL), it writes the goodbye line "GOODBYE <id>" to
// each connection it sheds, then closes it; a client that reads that line
// reconnects through the dispatcher (see client.ErrGoodbye).
// --register-etcd turns on self-registration in etcd under a lease (push
// mode, off by default; see package serverkit/register for why).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tcpdispatch/tcpdispatch/cmd/internal/flagconf"
	"github.com/tcpdispatch/tcpdispatch/etcdconn"
	"github.com/tcpdispatch/tcpdispatch/keyspace"
	"github.com/tcpdispatch/tcpdispatch/serverkit"
	"github.com/tcpdispatch/tcpdispatch/serverkit/register"
)

func main() {
	fs := flag.NewFlagSet("tcpserver", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:9000", "TCP address to accept clients on")
	id := fs.String("id", "", "server id echoed to clients (default: the listen address)")
	idle := fs.Duration("idle-timeout", 5*time.Minute, "close a connection that sends nothing for this long")
	statusListen := fs.String("status-listen", "", "serve the status document at http://<this address>/status (default off)")
	maxConns := fs.Int("max-conns", 0, "most connections served at once; 0 is unlimited")
	drainWindow := fs.Duration("drain-window", 10*time.Second, "on SIGTERM, close connections over this long")
	registerEtcd := fs.String("register-etcd", "", "comma list of etcd endpoints: register servers/<id>/addr under a lease (push mode, default off)")
	registerPrefix := fs.String("register-prefix", keyspace.DefaultPrefix, "etcd key prefix for --register-etcd")
	registerTTL := fs.Duration("register-ttl", 10*time.Second, "lease TTL for --register-etcd")
	advertise := fs.String("advertise", "", "address registered by --register-etcd (default: the listen address)")
	etcdCfg := etcdconn.DefaultConfig()
	etcdCfg.RegisterFlags(fs) // --etcd-cacert, --etcd-cert, --etcd-key, --etcd-user, --etcd-password-file
	flagconf.ParseOrExit(fs, os.Args[1:])
	if *id == "" {
		*id = *listen
	}
	log := logrus.New()
	log.Formatter = &logrus.TextFormatter{FullTimestamp: true}
	entry := log.WithField("server", *id)

	if *registerEtcd != "" {
		etcdCfg.Endpoints = strings.Split(*registerEtcd, ",")
		if err := etcdCfg.LoadPassword(os.LookupEnv); err != nil {
			entry.WithError(err).Error("exit")
			os.Exit(2)
		}
	}
	if err := run(runConfig{
		listen: *listen, id: *id, idle: *idle, statusListen: *statusListen,
		maxConns: *maxConns, drainWindow: *drainWindow,
		registerEtcd: *registerEtcd, registerPrefix: *registerPrefix, registerTTL: *registerTTL, advertise: *advertise,
		etcd: etcdCfg,
	}, entry); err != nil {
		entry.WithError(err).Error("exit")
		os.Exit(1)
	}
}

type runConfig struct {
	listen, id                   string
	idle                         time.Duration
	statusListen                 string
	maxConns                     int
	drainWindow                  time.Duration
	registerEtcd, registerPrefix string
	registerTTL                  time.Duration
	advertise                    string
	etcd                         etcdconn.Config // endpoints from registerEtcd
}

func run(cfg runConfig, log *logrus.Entry) error {
	srv, err := serverkit.New(serverkit.Config{MaxConns: cfg.maxConns, DrainWindow: cfg.drainWindow,
		OnShed: func(c net.Conn) { _, _ = fmt.Fprintf(c, "%s %s\n", GoodbyeLine, cfg.id) }})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var statusSrv *http.Server
	if cfg.statusListen != "" {
		sln, err := net.Listen("tcp", cfg.statusListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen status: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/status", srv.Status())
		statusSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := statusSrv.Serve(sln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.WithError(err).Error("status server")
			}
		}()
		log.WithField("url", "http://"+sln.Addr().String()+"/status").Info("serving status")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var wg sync.WaitGroup
	if cfg.registerEtcd != "" {
		cli, err := etcdconn.Dial(cfg.etcd, zap.NewNop())
		if err != nil {
			ln.Close()
			return fmt.Errorf("etcd client: %w", err)
		}
		defer cli.Close()
		addr := cfg.advertise
		if addr == "" {
			addr = ln.Addr().String()
		}
		wg.Go(func() {
			// Run deregisters (revokes its lease) as soon as ctx ends, so
			// the dispatchers stop offering this server before it drains.
			err := register.Run(ctx, cli, cfg.registerPrefix, cfg.id, addr, cfg.registerTTL,
				register.WithOnError(func(err error) { log.WithError(err).Warn("etcd registration; retrying") }),
				register.WithOnRegister(func(lease clientv3.LeaseID) {
					log.WithField("addr", addr).WithField("lease", fmt.Sprintf("%x", int64(lease))).Info("registered in etcd")
				}))
			if err != nil {
				log.WithError(err).Error("etcd registration")
			}
		})
	}

	// A second signal cuts the drain short.
	served := make(chan struct{})
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-served:
			return
		}
		stop()
		again := make(chan os.Signal, 1)
		signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(again)
		log.WithField("window", cfg.drainWindow).WithField("conns", srv.Status().Conns()).Info("draining")
		select {
		case <-again:
			log.Info("second signal: closing all connections")
			srv.Close()
		case <-served:
		}
	})

	log.WithField("addr", ln.Addr().String()).Info("accepting")
	err = srv.Serve(ctx, ln, func(_ context.Context, c net.Conn) { echo(c, cfg.id, cfg.idle) })
	close(served)
	stop()
	wg.Wait()
	if statusSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = statusSrv.Shutdown(sctx)
		cancel()
	}
	log.Info("stopped")
	return err
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

// GoodbyeLine starts the line the server writes to a connection it sheds
// for rebalancing: "GOODBYE <id>".
const GoodbyeLine = "GOODBYE"
