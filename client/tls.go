package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
)

// serverNameKey carries, in a request's context, the name the dispatcher's
// certificate must be valid for.
type serverNameKey struct{}

// httpClient returns the client for dispatcher requests: cfg.HTTPClient,
// or a new one, whose TLS handshakes verify the certificate against the
// Dispatcher name even though the request goes to a resolved IP (the URL
// names the IP, so that each replica is its own connection and can be
// demoted on its own). A given HTTPClient is copied, with a copy of its
// *http.Transport; one whose transport is of another type, or dials TLS
// itself, is used as is and verifies what it verifies.
func (c *Client) httpClient() *http.Client {
	cfg := c.cfg
	if cfg.HTTPClient == nil {
		tr := &http.Transport{
			DialContext:           (&net.Dialer{}).DialContext,
			DisableKeepAlives:     true,
			TLSHandshakeTimeout:   cfg.RequestTimeout,
			ResponseHeaderTimeout: cfg.RequestTimeout,
		}
		tr.DialTLSContext = c.dialTLS(tr.DialContext, cfg.TLSConfig)
		return &http.Client{Transport: tr}
	}
	var tr *http.Transport
	switch t := cfg.HTTPClient.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return cfg.HTTPClient
	}
	//lint:ignore SA1019 a caller may still set the deprecated DialTLS; we must not override it
	if tr.DialTLSContext != nil || tr.DialTLS != nil {
		return cfg.HTTPClient
	}
	base := cfg.TLSConfig
	if base == nil {
		base = tr.TLSClientConfig
	}
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr.DialTLSContext = c.dialTLS(dial, base)
	hc := *cfg.HTTPClient
	hc.Transport = tr
	return &hc
}

// dialTLS returns a DialTLSContext that dials with dial and verifies the
// peer against the name in the context (the Dispatcher name), else the
// host it dials.
func (c *Client) dialTLS(dial func(ctx context.Context, network, addr string) (net.Conn, error), base *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := &tls.Config{}
		if base != nil {
			tc = base.Clone()
		}
		if name, _ := ctx.Value(serverNameKey{}).(string); name != "" {
			tc.ServerName = name
		} else if tc.ServerName == "" {
			if tc.ServerName, _, err = net.SplitHostPort(addr); err != nil {
				raw.Close()
				return nil, fmt.Errorf("tls dial %s: %w", addr, err)
			}
		}
		if len(tc.NextProtos) == 0 {
			tc.NextProtos = []string{"http/1.1"}
		}
		conn := tls.Client(raw, tc)
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			var ve *tls.CertificateVerificationError
			if errors.As(err, &ve) {
				return nil, fmt.Errorf("tls handshake with %s as %q: %w", addr, tc.ServerName, err)
			}
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		return conn, nil
	}
}
