package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// fakeCloud is a TEST DOUBLE of Berth's APIs: Keystone's token endpoint,
// Nova (region, with Berth's berth-sets and berth-hosts), Glance (imagesvc,
// with /layers) and Neutron, answering from the canned bodies in
// testdata/fake. It checks tokens, so re-authentication can be tested, and
// records every request.
type fakeCloud struct {
	t   testing.TB
	srv *httptest.Server
	dir string // the test's HOME: clouds.yaml and the token cache

	mu        sync.Mutex
	token     string
	tokenN    int
	authCount int
	expiresIn time.Duration
	requests  []fakeRequest
	handlers  map[string]http.HandlerFunc // "METHOD /path" (path with {id} kept literal)
}

type fakeRequest struct {
	Method, Path, Query string
	Body                []byte
}

func newFakeCloud(t testing.TB) *fakeCloud {
	t.Helper()
	f := &fakeCloud{t: t, dir: t.TempDir(), expiresIn: time.Hour, handlers: map[string]http.HandlerFunc{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	clouds := fmt.Sprintf(`clouds:
  fake:
    auth:
      auth_url: %s/identity/v3
      username: demo
      password: secret
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  wrongpw:
    auth:
      auth_url: %s/identity/v3
      username: demo
      password: wrong
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
`, f.srv.URL, f.srv.URL)
	if err := os.WriteFile(filepath.Join(f.dir, "clouds.yaml"), []byte(clouds), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeCloud) env() map[string]string {
	return map[string]string{
		"OS_CLOUD":              "fake",
		"OS_CLIENT_CONFIG_FILE": filepath.Join(f.dir, "clouds.yaml"),
		"HOME":                  f.dir,
		"XDG_CACHE_HOME":        filepath.Join(f.dir, "cache"),
	}
}

// run runs the CLI in-process against the fake.
func (f *fakeCloud) run(args ...string) (stdout, stderr string, code int) {
	return f.runWith(nil, nil, args...)
}

func (f *fakeCloud) runWith(extraEnv map[string]string, stdin io.Reader, args ...string) (string, string, int) {
	f.t.Helper()
	env := f.env()
	for k, v := range extraEnv {
		env[k] = v
	}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := Main(ctx, args, Env{
		Stdin: stdin, Stdout: &out, Stderr: &errb,
		Getenv:       func(k string) string { return env[k] },
		WaitInterval: time.Millisecond,
	})
	return out.String(), errb.String(), code
}

// handle overrides a route, e.g. "POST /compute/v2.1/servers/{id}/action".
func (f *fakeCloud) handle(route string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handlers[route] = h
}

// rotate invalidates the current token (as if it were revoked).
func (f *fakeCloud) rotate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.token = ""
}

func (f *fakeCloud) auths() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.authCount
}

func (f *fakeCloud) reqs() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.requests...)
}

func readFake(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fake", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// requestID is stable per method and path, so golden files are too.
func requestID(r *http.Request) string {
	sum := sha256.Sum256([]byte(r.Method + " " + r.URL.Path))
	h := hex.EncodeToString(sum[:16])
	return "req-" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func replyJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	switch b := v.(type) {
	case []byte:
		_, _ = w.Write(b)
	default:
		_ = json.NewEncoder(w).Encode(v)
	}
}

func novaFault(w http.ResponseWriter, status int, name, msg string) {
	replyJSON(w, status, map[string]any{name: map[string]any{"code": status, "message": msg}})
}

var idSegment = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func (f *fakeCloud) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.requests = append(f.requests, fakeRequest{r.Method, r.URL.Path, r.URL.RawQuery, body})
	f.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	w.Header().Set("X-Openstack-Request-Id", requestID(r))

	if r.Method == http.MethodPost && r.URL.Path == "/identity/v3/auth/tokens" {
		f.issueToken(w, body)
		return
	}
	f.mu.Lock()
	ok := f.token != "" && r.Header.Get("X-Auth-Token") == f.token
	f.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/console") {
		ok = true // the serial console URL carries its own token
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", `Keystone uri="`+f.srv.URL+`/identity/v3"`)
		novaFault(w, http.StatusUnauthorized, "unauthorized", "The request you have made requires authentication.")
		return
	}
	// Overrides: match with id segments written as {id}.
	segs := strings.Split(r.URL.Path, "/")
	for i, s := range segs {
		if idSegment.MatchString(s) {
			segs[i] = "{id}"
		}
	}
	route := r.Method + " " + strings.Join(segs, "/")
	f.mu.Lock()
	h := f.handlers[route]
	f.mu.Unlock()
	if h != nil {
		h(w, r)
		return
	}
	switch {
	case strings.HasPrefix(r.URL.Path, "/compute/v2.1/"):
		f.compute(w, r, strings.TrimPrefix(r.URL.Path, "/compute/v2.1/"))
	case strings.HasPrefix(r.URL.Path, "/image/v2/"):
		f.image(w, r, strings.TrimPrefix(r.URL.Path, "/image/v2/"))
	case strings.HasPrefix(r.URL.Path, "/network/v2.0/"):
		f.network(w, r, strings.TrimPrefix(r.URL.Path, "/network/v2.0/"))
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeCloud) issueToken(w http.ResponseWriter, body []byte) {
	var req struct {
		Auth struct {
			Identity struct {
				Password struct {
					User struct {
						Name     string `json:"name"`
						Password string `json:"password"`
					} `json:"user"`
				} `json:"password"`
			} `json:"identity"`
		} `json:"auth"`
	}
	_ = json.Unmarshal(body, &req)
	if u := req.Auth.Identity.Password.User; u.Name != "demo" || u.Password != "secret" {
		replyJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]any{
			"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}})
		return
	}
	f.mu.Lock()
	f.authCount++
	f.tokenN++
	f.token = fmt.Sprintf("tok-%d", f.tokenN)
	tok, exp := f.token, time.Now().Add(f.expiresIn).UTC()
	f.mu.Unlock()
	ep := func(typ, name, url string) map[string]any {
		return map[string]any{"type": typ, "name": name, "id": name, "endpoints": []map[string]any{
			{"id": name + "-pub", "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": url}}}
	}
	w.Header().Set("X-Subject-Token", tok)
	replyJSON(w, http.StatusCreated, map[string]any{"token": map[string]any{
		"expires_at": exp.Format(time.RFC3339Nano), "issued_at": time.Now().UTC().Format(time.RFC3339Nano),
		"methods": []string{"password"},
		"user":    map[string]any{"id": "bf053f4692c24f1e8a308ce8e75ad10e", "name": "demo", "domain": map[string]any{"id": "default", "name": "Default"}},
		"project": map[string]any{"id": "4e1f93d559b843cb812fbcd6ab696dd2", "name": "demo", "domain": map[string]any{"id": "default", "name": "Default"}},
		"roles":   []map[string]any{{"id": "r1", "name": "member"}},
		"catalog": []any{
			ep("identity", "keystone", f.srv.URL+"/identity/v3"),
			ep("compute", "nova", f.srv.URL+"/compute/v2.1"),
			ep("image", "glance", f.srv.URL+"/image"),
			ep("network", "neutron", f.srv.URL+"/network"),
		},
	}})
}

// collection returns the items of a canned list body.
func (f *fakeCloud) collection(file, key string) []map[string]any {
	var body map[string]json.RawMessage
	if err := json.Unmarshal(readFake(f.t, file), &body); err != nil {
		f.t.Fatal(err)
	}
	var items []map[string]any
	if err := json.Unmarshal(body[key], &items); err != nil {
		f.t.Fatal(err)
	}
	return items
}

func byField(items []map[string]any, field, val string) map[string]any {
	for _, it := range items {
		if fmt.Sprint(it[field]) == val {
			return it
		}
	}
	return nil
}

func filterName(items []map[string]any, name string, regex bool) []map[string]any {
	if name == "" {
		return items
	}
	var out []map[string]any
	re, err := regexp.Compile(name)
	for _, it := range items {
		n := fmt.Sprint(it["name"])
		if (regex && err == nil && re.MatchString(n)) || (!regex && n == name) {
			out = append(out, it)
		}
	}
	if out == nil {
		out = []map[string]any{}
	}
	return out
}

func (f *fakeCloud) compute(w http.ResponseWriter, r *http.Request, p string) {
	parts := strings.Split(p, "/")
	q := r.URL.Query()
	get := r.Method == http.MethodGet
	switch {
	case get && (p == "servers/detail" || p == "servers"):
		replyJSON(w, 200, map[string]any{"servers": filterName(f.collection("servers.json", "servers"), q.Get("name"), true)})
	case get && len(parts) == 2 && parts[0] == "servers":
		if s := byField(f.collection("servers.json", "servers"), "id", parts[1]); s != nil {
			replyJSON(w, 200, map[string]any{"server": s})
			return
		}
		novaFault(w, 404, "itemNotFound", "Instance "+parts[1]+" could not be found.")
	case get && (p == "flavors/detail" || p == "flavors"):
		replyJSON(w, 200, map[string]any{"flavors": f.collection("flavors.json", "flavors")})
	case get && len(parts) == 2 && parts[0] == "flavors":
		if s := byField(f.collection("flavors.json", "flavors"), "id", parts[1]); s != nil {
			replyJSON(w, 200, map[string]any{"flavor": s})
			return
		}
		novaFault(w, 404, "itemNotFound", "Flavor "+parts[1]+" could not be found.")
	case get && p == "berth-hosts":
		replyJSON(w, 200, readFake(f.t, "hosts.json"))
	case get && len(parts) == 2 && parts[0] == "berth-hosts":
		if h := byField(f.collection("hosts.json", "hosts"), "name", parts[1]); h != nil {
			replyJSON(w, 200, map[string]any{"host": h})
			return
		}
		novaFault(w, 404, "itemNotFound", "Host "+parts[1]+" could not be found.")
	case get && p == "berth-sets":
		replyJSON(w, 200, map[string]any{"sets": filterName(f.collection("sets.json", "sets"), q.Get("name"), false)})
	case get && len(parts) == 2 && parts[0] == "berth-sets":
		if s := byField(f.collection("sets.json", "sets"), "id", parts[1]); s != nil {
			replyJSON(w, 200, map[string]any{"set": s})
			return
		}
		novaFault(w, 404, "itemNotFound", "Set "+parts[1]+" could not be found.")
	case get && p == "os-keypairs":
		replyJSON(w, 200, readFake(f.t, "keypairs.json"))
	default:
		novaFault(w, 404, "itemNotFound", "The resource could not be found.")
	}
}

func glanceFault(w http.ResponseWriter, status int, msg string) {
	replyJSON(w, status, map[string]any{"message": msg, "code": fmt.Sprintf("%d %s", status, http.StatusText(status)),
		"title": http.StatusText(status)})
}

func (f *fakeCloud) image(w http.ResponseWriter, r *http.Request, p string) {
	parts := strings.Split(p, "/")
	get := r.Method == http.MethodGet
	switch {
	case get && p == "images":
		imgs := filterName(f.collection("images.json", "images"), r.URL.Query().Get("name"), false)
		replyJSON(w, 200, map[string]any{"images": imgs, "first": "/v2/images", "schema": "/v2/schemas/images"})
	case get && len(parts) == 2 && parts[0] == "images":
		if img := byField(f.collection("images.json", "images"), "id", parts[1]); img != nil {
			replyJSON(w, 200, img)
			return
		}
		glanceFault(w, 404, "No image found with ID "+parts[1])
	case get && len(parts) == 3 && parts[2] == "layers":
		var all map[string]json.RawMessage
		_ = json.Unmarshal(readFake(f.t, "layers.json"), &all)
		if l, ok := all[parts[1]]; ok {
			replyJSON(w, 200, []byte(l))
			return
		}
		glanceFault(w, 404, "No image found with ID "+parts[1])
	default:
		glanceFault(w, 404, "The resource could not be found.")
	}
}

func (f *fakeCloud) network(w http.ResponseWriter, r *http.Request, p string) {
	parts := strings.Split(p, "/")
	switch {
	case r.Method == http.MethodGet && p == "networks":
		replyJSON(w, 200, map[string]any{"networks": filterName(f.collection("networks.json", "networks"), r.URL.Query().Get("name"), false)})
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "networks":
		if n := byField(f.collection("networks.json", "networks"), "id", parts[1]); n != nil {
			replyJSON(w, 200, map[string]any{"network": n})
			return
		}
		replyJSON(w, 404, map[string]any{"NeutronError": map[string]any{"type": "NetworkNotFound",
			"message": "Network " + parts[1] + " could not be found.", "detail": ""}})
	default:
		replyJSON(w, 404, map[string]any{"NeutronError": map[string]any{"type": "HTTPNotFound", "message": "The resource could not be found.", "detail": ""}})
	}
}

// checkGolden compares got with testdata/golden/name.golden (rewritten
// with -update).
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no golden file (run go test -update): %v", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test ./client/cli -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
