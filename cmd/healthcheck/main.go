// Command healthcheck probes one HTTP URL and exits 0 when it answers 2xx,
// 1 otherwise (2 on a usage error). It exists for container images with no
// shell and no curl (the Dockerfile's distroless stage):
//
//	HEALTHCHECK CMD ["/healthcheck", "http://127.0.0.1:8080/healthz"]
//
// It is a separate binary rather than a mode of the dispatcher so that the
// dispatcher's flags, and their env and config-file layering, stay the
// replica's configuration only, probing cannot start a replica by mistake,
// and the same probe serves bin/tcpserver's status endpoint. It imports the
// standard library only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// maxBody caps what is read of the answer; only the status matters.
const maxBody = 4 << 10

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 2*time.Second, "bound on the whole request")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: healthcheck [--timeout 2s] URL\n\nExits 0 when GET URL answers 2xx, 1 otherwise.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 || *timeout <= 0 {
		fs.Usage()
		return 2
	}
	if err := probe(fs.Arg(0), *timeout); err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	return 0
}

// probe GETs url within timeout and returns nil on a 2xx answer.
func probe(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	// No proxy from the environment: the probe is of this container.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	return nil
}
