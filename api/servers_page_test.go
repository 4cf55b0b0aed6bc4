package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tcpdispatch/tcpdispatch/store"
)

// pageSnapshot has 25 servers s00..s24: every third down, every fifth of
// the rest unknown, the others up.
func pageSnapshot(t *testing.T) *store.Snapshot {
	t.Helper()
	var servers []store.Server
	for i := range 25 {
		srv := store.Server{ID: fmt.Sprintf("s%02d", i), Addr: fmt.Sprintf("10.0.0.%d:1", i+1), Weight: 100, State: "up", Healthy: true, Eligible: true}
		switch {
		case i%3 == 0:
			srv.State, srv.Healthy, srv.Eligible = "down", false, false
		case i%5 == 0:
			srv.State, srv.Healthy, srv.Eligible = "unknown", false, false
		}
		servers = append(servers, srv)
	}
	s, err := store.NewSnapshot(7, "wrr", servers, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type pageBody struct {
	Servers []store.Server `json:"servers"`
	Next    *string        `json:"next"`
}

func getPage(t *testing.T, h http.Handler, target string) pageBody {
	t.Helper()
	rec := get(t, h, target, "127.0.0.1:1234")
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: status %d (%s)", target, rec.Code, rec.Body)
	}
	var b pageBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	return b
}

func pageIDs(b pageBody) []string {
	var ids []string
	for _, s := range b.Servers {
		ids = append(ids, s.ID)
	}
	return ids
}

func TestServersPaged(t *testing.T) {
	snap := pageSnapshot(t)
	reg := prometheus.NewRegistry()
	srv := newTestServer(t, sourceOf(snap), fakeLeader(false), reg)
	h := srv.Handler()

	// No parameters: today's answer, every server, no cursor.
	all := getPage(t, h, "/v1/servers")
	if len(all.Servers) != 25 || all.Next != nil {
		t.Fatalf("unparameterised: %d servers, next %v; want 25 and no next", len(all.Servers), all.Next)
	}

	var down []string
	for _, s := range snap.Servers {
		if s.State == "down" {
			down = append(down, s.ID)
		}
	}
	if got := pageIDs(getPage(t, h, "/v1/servers?state=down")); !slices.Equal(got, down) {
		t.Errorf("state=down: %q, want %q", got, down)
	}
	if got := getPage(t, h, "/v1/servers?state=down,unknown"); len(got.Servers) != 9+3 {
		t.Errorf("state=down,unknown: %d servers, want 12", len(got.Servers))
	}

	// Walk down servers four at a time with the cursor.
	var walked []string
	target := "/v1/servers?state=down&limit=4"
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("cursor does not end")
		}
		b := getPage(t, h, target)
		walked = append(walked, pageIDs(b)...)
		if b.Next == nil {
			break
		}
		if *b.Next != walked[len(walked)-1] {
			t.Fatalf("next %q, want the last id returned %q", *b.Next, walked[len(walked)-1])
		}
		target = "/v1/servers?state=down&limit=4&after=" + *b.Next
	}
	if !slices.Equal(walked, down) {
		t.Errorf("paged walk: %q, want %q", walked, down)
	}
	// A page that ends exactly at the last match has no cursor.
	if b := getPage(t, h, "/v1/servers?state=down&limit=9"); len(b.Servers) != 9 || b.Next != nil {
		t.Errorf("limit = matches: %d servers, next %v", len(b.Servers), b.Next)
	}
	// after need not name a registered server.
	if got := pageIDs(getPage(t, h, "/v1/servers?after=s22a")); !slices.Equal(got, []string{"s23", "s24"}) {
		t.Errorf("after=s22a: %q", got)
	}

	for _, tt := range []struct{ query, reason string }{
		{"state=sick", `state "sick"`},
		{"state=", "state: empty"},
		{"limit=0", `limit "0"`},
		{"limit=ten", `limit "ten"`},
		{"limit=10001", `limit "10001"`},
		{"limit=1&limit=2", "limit: given 2 times"},
		{"after=" + strings.Repeat("x", 200), "after:"},
	} {
		t.Run(tt.query, func(t *testing.T) {
			wantJSONError(t, get(t, h, "/v1/servers?"+tt.query, "127.0.0.1:1234"), http.StatusBadRequest, tt.reason)
		})
	}
	if got := testutil.ToFloat64(srv.badAdmin.WithLabelValues("/v1/servers")); got != 7 {
		t.Errorf("tcpdispatch_admin_bad_requests_total = %v, want 7", got)
	}
}

// TestServersStreamedAsEncoded: the streamed /v1/servers decodes to what
// encoding/json makes of the whole response (?pretty), every field and
// every page shape included: a full list, a cut page with its cursor, an
// empty page.
func TestServersStreamedAsEncoded(t *testing.T) {
	h := newTestServer(t, sourceOf(pageSnapshot(t)), fakeLeader(false), prometheus.NewRegistry()).Handler()
	for _, q := range []string{"", "?limit=4", "?state=down&limit=3&after=s03", "?state=unknown&after=s24"} {
		decode := func(target string) map[string]any {
			t.Helper()
			rec := get(t, h, target, "127.0.0.1:1234")
			if rec.Code != http.StatusOK {
				t.Fatalf("%s: status %d (%s)", target, rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: Content-Type %q", target, ct)
			}
			var v map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
				t.Fatalf("%s: %v in %s", target, err, rec.Body)
			}
			delete(v, "snapshot_age_ms")
			return v
		}
		sep := "?"
		if q != "" {
			sep = "&"
		}
		streamed, whole := decode("/v1/servers"+q), decode("/v1/servers"+q+sep+"pretty")
		if fmt.Sprint(streamed) != fmt.Sprint(whole) {
			t.Errorf("/v1/servers%s streamed:\n%v\nwhole:\n%v", q, streamed, whole)
		}
		if list, ok := streamed["servers"].([]any); !ok || list == nil {
			t.Errorf("/v1/servers%s: servers %v, want a list (empty or not)", q, streamed["servers"])
		}
	}
}

// TestListingsStreamedOnPublicListener: a full /v1/servers listing and a
// /metrics scrape with per-server series, on the public listener
// (fasthttp, echo through fasthttpadaptor), are streamed chunk by chunk,
// not buffered whole before the first byte leaves; the listing decodes
// to every server.
func TestListingsStreamedOnPublicListener(t *testing.T) {
	const n = 2000 // ~0.5 MB: many of streamServers' 32 kB chunks
	servers := make([]store.Server, n)
	for i := range servers {
		servers[i] = store.Server{ID: fmt.Sprintf("s%04d", i), Addr: fmt.Sprintf("127.0.%d.%d:1", i/250, i%250+1), Weight: 100, State: "up", Healthy: true, Eligible: true}
	}
	snap, err := store.NewSnapshot(7, "wrr", servers, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Name, cfg.MetricsPerServer = "replica-1", true
	srv, err := New(cfg, sourceOf(snap), fakeLeader(false), nil, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	addr := runPublic(t, srv)
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + addr + "/v1/servers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if resp.ContentLength != -1 || !slices.Contains(resp.TransferEncoding, "chunked") {
		t.Errorf("Content-Length %d, Transfer-Encoding %q: the listing was buffered whole, not streamed", resp.ContentLength, resp.TransferEncoding)
	}
	var body pageBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if len(body.Servers) != n || body.Servers[n-1].ID != servers[n-1].ID {
		t.Errorf("%d servers listed, want %d", len(body.Servers), n)
	}

	for _, gz := range []bool{false, true} {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		if gz {
			req.Header.Set("Accept-Encoding", "gzip") // the client then leaves the body compressed
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics gzip %v: status %d, %v", gz, resp.StatusCode, err)
		}
		if resp.ContentLength != -1 || !slices.Contains(resp.TransferEncoding, "chunked") {
			t.Errorf("/metrics gzip %v: Content-Length %d, Transfer-Encoding %q: buffered whole, not streamed", gz, resp.ContentLength, resp.TransferEncoding)
		}
		if !gz && !strings.Contains(string(b), `tcpdispatch_server_up{server="s1999"}`) {
			t.Errorf("/metrics: no per-server series of s1999 in %d bytes", len(b))
		}
	}
}
