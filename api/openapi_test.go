package api

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"
)

// openAPI is api/openapi.yaml decoded as generic JSON.
type openAPI map[string]any

func loadOpenAPI(t *testing.T) openAPI {
	t.Helper()
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPI
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi.yaml: openapi %q, want 3.x", v)
	}
	return doc
}

// resolve follows a local "$ref" ("#/components/...") until a node without
// one.
func (d openAPI) resolve(t *testing.T, node map[string]any) map[string]any {
	t.Helper()
	for range 10 {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		var cur any = map[string]any(d)
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, _ := cur.(map[string]any)
			cur = m[part]
		}
		next, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("openapi.yaml: $ref %q resolves to nothing", ref)
		}
		node = next
	}
	t.Fatal("openapi.yaml: $ref loop")
	return nil
}

var httpMethods = []string{"get", "head", "post", "put", "patch", "delete", "options", "trace"}

// TestOpenAPIRoutes checks that the spec documents exactly the routes and
// methods of the real router.
func TestOpenAPIRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	reg := prometheus.NewRegistry()
	srv := newTestServer(t, sourceOf(nil), fakeLeader(false), reg)
	inRouter := map[string]bool{}
	for _, r := range srv.echo.Routes() {
		inRouter[strings.ToLower(r.Method)+" "+r.Path] = true
	}
	inSpec := map[string]bool{}
	paths, _ := doc["paths"].(map[string]any)
	for path, item := range paths {
		for method := range item.(map[string]any) {
			if slices.Contains(httpMethods, method) {
				inSpec[method+" "+path] = true
			}
		}
	}
	for r := range inRouter {
		if !inSpec[r] {
			t.Errorf("route %s is served but not in openapi.yaml", r)
		}
	}
	for r := range inSpec {
		if !inRouter[r] {
			t.Errorf("openapi.yaml documents %s, which the router does not serve", r)
		}
	}
	if len(inRouter) < 16 {
		t.Errorf("router lists %d routes; want GET and HEAD of 8 paths", len(inRouter))
	}
}

// TestOpenAPIResponses serves sample requests of every route, answers and
// errors, and validates each body against the schema documented for its
// path, method, status and content type.
func TestOpenAPIResponses(t *testing.T) {
	doc := loadOpenAPI(t)
	f := newFixtures(t)
	reg := prometheus.NewRegistry()
	h := newTestServer(t, sourceOf(f.mixed), fakeLeader(true), reg).Handler()
	none := newTestServer(t, sourceOf(f.none), fakeLeader(false), nil).Handler()
	empty := newTestServer(t, &fakeSource{age: -1}, fakeLeader(false), nil).Handler()
	// The second /v1/fleet request has a rate window.
	get(t, h, "/v1/fleet", "192.0.2.1:1")

	for _, tc := range []struct {
		h      http.Handler
		target string
		path   string // in the spec; "" for the shared error body
		status int
	}{
		{h, "/get-tcp-ip", "/get-tcp-ip", 200},
		{h, "/get-tcp-ip?n=3&key=k", "/get-tcp-ip", 200},
		{h, "/get-tcp-ip?format=text", "/get-tcp-ip", 200},
		{h, "/get-tcp-ip?n=99", "/get-tcp-ip", 400},
		{h, "/get-tcp-ip?exclude=a,b,c,e", "/get-tcp-ip", 503},
		{none, "/get-tcp-ip", "/get-tcp-ip", 503},
		{empty, "/get-tcp-ip", "/get-tcp-ip", 503},
		{h, "/v1/servers", "/v1/servers", 200},
		{empty, "/v1/servers", "/v1/servers", 503},
		{h, "/v1/status", "/v1/status", 200},
		{empty, "/v1/status", "/v1/status", 200},
		{h, "/v1/fleet", "/v1/fleet", 200},
		{empty, "/v1/fleet", "/v1/fleet", 503},
		{h, "/ui", "/ui", 200},
		{h, "/metrics", "/metrics", 200},
		{h, "/healthz", "/healthz", 200},
		{h, "/readyz", "/readyz", 200},
		{empty, "/readyz", "/readyz", 503},
		{h, "/no-such-route", "", 404},
	} {
		t.Run(tc.target+"/"+strconv.Itoa(tc.status), func(t *testing.T) {
			rec := get(t, tc.h, tc.target, "192.0.2.1:1")
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			mediaType, _, err := mime.ParseMediaType(rec.Header().Get("Content-Type"))
			if err != nil {
				t.Fatalf("Content-Type %q: %v", rec.Header().Get("Content-Type"), err)
			}
			var schema map[string]any
			if tc.path == "" {
				schema = doc.resolve(t, map[string]any{"$ref": "#/components/schemas/Error"})
			} else {
				schema = doc.responseSchema(t, tc.path, "get", tc.status, mediaType)
			}
			if mediaType != "application/json" {
				if typ, _ := schema["type"].(string); typ != "string" {
					t.Errorf("%s body documented as %q, want string", mediaType, typ)
				}
				return
			}
			var body any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			for _, problem := range doc.validate(t, schema, body, "body") {
				t.Error(problem)
			}
		})
	}
	// HEAD answers as documented too.
	for _, target := range []string{"/get-tcp-ip", "/v1/status", "/ui", "/healthz"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, target, nil))
		doc.responseSchemaOrStatus(t, target, "head", rec.Code)
	}
}

// responseSchema returns the schema documented for one answer.
func (d openAPI) responseSchema(t *testing.T, path, method string, status int, mediaType string) map[string]any {
	t.Helper()
	resp := d.responseSchemaOrStatus(t, path, method, status)
	content, _ := resp["content"].(map[string]any)
	media, ok := content[mediaType].(map[string]any)
	if !ok {
		t.Fatalf("openapi.yaml: %s %s %d documents no %s body", method, path, status, mediaType)
	}
	schema, ok := media["schema"].(map[string]any)
	if !ok {
		t.Fatalf("openapi.yaml: %s %s %d %s has no schema", method, path, status, mediaType)
	}
	return d.resolve(t, schema)
}

// responseSchemaOrStatus returns the documented response of one status.
func (d openAPI) responseSchemaOrStatus(t *testing.T, path, method string, status int) map[string]any {
	t.Helper()
	paths, _ := d["paths"].(map[string]any)
	item, _ := paths[path].(map[string]any)
	op, _ := item[method].(map[string]any)
	responses, _ := op["responses"].(map[string]any)
	resp, ok := responses[strconv.Itoa(status)].(map[string]any)
	if !ok {
		t.Fatalf("openapi.yaml: %s %s does not document status %d", method, path, status)
	}
	return d.resolve(t, resp)
}

// validate checks value against schema: types, required properties, enums,
// recursively through properties and items. It returns what is wrong.
func (d openAPI) validate(t *testing.T, schema map[string]any, value any, at string) []string {
	t.Helper()
	schema = d.resolve(t, schema)
	var problems []string
	typ, _ := schema["type"].(string)
	ok := true
	switch typ {
	case "object":
		_, ok = value.(map[string]any)
	case "array":
		_, ok = value.([]any)
	case "string":
		_, ok = value.(string)
	case "boolean":
		_, ok = value.(bool)
	case "number":
		_, ok = value.(float64)
	case "integer":
		n, isNum := value.(float64)
		ok = isNum && n == float64(int64(n))
	}
	if !ok {
		return []string{fmt.Sprintf("%s: %v is not of type %s", at, value, typ)}
	}
	if enum, isEnum := schema["enum"].([]any); isEnum && !slices.Contains(enum, value) {
		problems = append(problems, fmt.Sprintf("%s: %v is not one of %v", at, value, enum))
	}
	switch v := value.(type) {
	case map[string]any:
		props, _ := schema["properties"].(map[string]any)
		required, _ := schema["required"].([]any)
		for _, r := range required {
			if _, has := v[r.(string)]; !has {
				problems = append(problems, fmt.Sprintf("%s: required field %q missing", at, r))
			}
		}
		for name, fv := range v {
			ps, documented := props[name].(map[string]any)
			if !documented {
				problems = append(problems, fmt.Sprintf("%s: field %q is not documented", at, name))
				continue
			}
			problems = append(problems, d.validate(t, ps, fv, at+"."+name)...)
		}
	case []any:
		if items, has := schema["items"].(map[string]any); has {
			for i, iv := range v {
				problems = append(problems, d.validate(t, items, iv, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return problems
}
