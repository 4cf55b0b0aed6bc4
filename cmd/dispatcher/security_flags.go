package main

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"

	"github.com/tcpdispatch/tcpdispatch/node"
)

// securityFlags defines the flags of the listeners' security (HTTPS,
// trusted proxies, rate limit, target policy) on fs.
func securityFlags(fs *flag.FlagSet, cfg *node.Config) {
	a := &cfg.API
	fs.StringVar(&cfg.ListenAdmin, "listen-admin", "", "address of the operator routes (/v1/*, /metrics, /debug/pprof/); when set they leave --listen-http. Use loopback or a private interface")
	fs.StringVar(&a.PublicTLS.CertFile, "http-cert-file", "", "serve --listen-http over HTTPS with this PEM certificate (chain); reloaded when the file changes")
	fs.StringVar(&a.PublicTLS.KeyFile, "http-key-file", "", "PEM private key of --http-cert-file")
	fs.StringVar(&a.AdminTLS.CertFile, "admin-cert-file", "", "serve --listen-admin over HTTPS with this PEM certificate (chain); reloaded when the file changes")
	fs.StringVar(&a.AdminTLS.KeyFile, "admin-key-file", "", "PEM private key of --admin-cert-file")
	fs.StringVar(&a.AdminTLS.ClientCAFile, "admin-client-ca", "", "PEM CA certificates: admin clients must present a certificate signed by one (mTLS)")
	fs.Var(prefixList{&a.TrustedProxies}, "trusted-proxies", "CIDR,... of proxies whose X-Forwarded-For / X-Real-IP (and PROXY protocol header) name the client, for hashing and rate limiting")
	fs.BoolVar(&a.ProxyProtocol, "http-proxy-protocol", false, "read a PROXY protocol v1/v2 header on --listen-http connections from --trusted-proxies; other peers sending one are disconnected")
	fs.Float64Var(&a.RateLimit, "rate-limit", 0, "get-tcp-ip requests per second allowed per client address (IPv6: per /64); 0 disables")
	fs.IntVar(&a.RateBurst, "rate-burst", 0, "get-tcp-ip requests one client address may send at once (default ceil(--rate-limit))")
	fs.IntVar(&a.RateTableSize, "rate-limit-addresses", 65536, "most client addresses the rate limiter remembers; past it the least recently seen are forgotten")
	fs.Var(prefixList{&cfg.AllowedTargets}, "allowed-targets", "CIDR,... a tcp-server addr and status-url may name (default: all but link-local 169.254.0.0/16 and fe80::/10)")
}

// prefixList is a flag of comma-separated CIDRs; a bare IP is a /32 or
// /128.
type prefixList struct{ p *[]netip.Prefix }

func (l prefixList) String() string {
	if l.p == nil {
		return ""
	}
	s := make([]string, len(*l.p))
	for i, p := range *l.p {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (l prefixList) Set(v string) error {
	var out []netip.Prefix
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		if a, err := netip.ParseAddr(part); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return fmt.Errorf("%q: want a CIDR (10.0.0.0/8) or an IP", part)
		}
		out = append(out, p.Masked())
	}
	*l.p = out
	return nil
}
