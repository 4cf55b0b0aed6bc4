package api

import (
	"bufio"
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/tcpdispatch/tcpdispatch/store"
)

// The per-server series (Config.MetricsPerServer) are five samples per
// registered server: 50,000 at 10,000 servers. Through a prometheus.Collector
// each sample is a const metric, then a protobuf message, then text: a
// scrape allocated 36 MB in 550,000 objects and took 80 ms of CPU, and a
// replica's live heap grew by some 20 MB for the length of every scrape (so
// did its GC goal and its RSS). They are written instead straight from the
// snapshot into the response, in the text exposition format, after the
// registry's families: a few allocations per scrape, whatever the fleet
// (kube-state-metrics writes its large families the same way).

// serverFamily is one per-server family: its name, help, type, and the
// sample's value for a server.
type serverFamily struct {
	name, help, typ string
	value           func(*store.Server) float64
}

var serverFamilies = []serverFamily{
	{"tcpdispatch_server_up", "1 while the leader's last verdict for the server is up.", "gauge",
		func(s *store.Server) float64 { return boolFloat(s.State == store.HealthUp) }},
	{"tcpdispatch_server_effective_weight", "Weight get-tcp-ip balances on; 0 when the server is not eligible.", "gauge",
		func(s *store.Server) float64 { return float64(s.EffectiveWeight) }},
	{"tcpdispatch_server_load", "Reported load (0..1) from a fresh report; 0 without one.", "gauge",
		func(s *store.Server) float64 { return s.Load }},
	{"tcpdispatch_server_conns", "Reported connections from a fresh report; 0 without one.", "gauge",
		func(s *store.Server) float64 { return float64(s.Conns) }},
	{"tcpdispatch_server_picks_total", "get-tcp-ip answers of this replica naming the server.", "counter",
		func(s *store.Server) float64 { return float64(s.Picks()) }},
}

var (
	scrapeBufs  = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}
	scrapeGzips = sync.Pool{New: func() any { w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed); return w }}
)

// metricsHandler serves /metrics: the registry's families as promhttp
// would (text format), then the per-server series when they are on.
func (s *Server) metricsHandler(g prometheus.Gatherer) http.Handler {
	if !s.cfg.MetricsPerServer {
		return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mfs, err := g.Gather()
		if err != nil {
			// As promhttp's default (HTTPErrorOnError).
			http.Error(w, "An error has occurred while serving metrics:\n\n"+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", string(format))
		// Streamed: see flushing.
		var out io.Writer = newFlushing(w)
		if acceptsGzip(r) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Add("Vary", "Accept-Encoding")
			gz := scrapeGzips.Get().(*gzip.Writer)
			gz.Reset(out)
			defer func() {
				gz.Close()
				gz.Reset(nil)
				scrapeGzips.Put(gz)
			}()
			out = gz
		}
		bw := scrapeBufs.Get().(*bufio.Writer)
		bw.Reset(out)
		defer func() {
			bw.Reset(nil)
			scrapeBufs.Put(bw)
		}()
		enc := expfmt.NewEncoder(bw, format)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				return // the client went away
			}
		}
		if snap := s.src.Snapshot(); snap != nil {
			writeServerFamilies(bw, snap.Servers)
		}
		_ = bw.Flush()
	})
}

// writeServerFamilies writes the per-server families of servers in the
// text exposition format.
func writeServerFamilies(w *bufio.Writer, servers []*store.Server) {
	var num [32]byte
	for _, f := range serverFamilies {
		w.WriteString("# HELP ")
		w.WriteString(f.name)
		w.WriteByte(' ')
		w.WriteString(f.help)
		w.WriteString("\n# TYPE ")
		w.WriteString(f.name)
		w.WriteByte(' ')
		w.WriteString(f.typ)
		w.WriteByte('\n')
		for _, srv := range servers {
			w.WriteString(f.name)
			w.WriteString(`{server="`)
			writeLabelValue(w, srv.ID)
			w.WriteString(`"} `)
			w.Write(appendSample(num[:0], f.value(srv)))
			w.WriteByte('\n')
		}
	}
}

// writeLabelValue escapes v as the text format requires.
func writeLabelValue(w *bufio.Writer, v string) {
	if !strings.ContainsAny(v, "\\\"\n") {
		w.WriteString(v)
		return
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			w.WriteString(`\\`)
		case '"':
			w.WriteString(`\"`)
		case '\n':
			w.WriteString(`\n`)
		default:
			w.WriteByte(c)
		}
	}
}

// appendSample formats a sample value as the text format (and expfmt) do.
func appendSample(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// acceptsGzip reports whether the request accepts a gzip body.
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(enc) == "gzip" && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
			return true
		}
	}
	return false
}
