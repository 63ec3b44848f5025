package compute_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/hypervisors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/instanceactions"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/limits"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/quotasets"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/secgroups"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servergroups"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gorilla/mux"

	"berth/internal/keystone"
	"berth/internal/pgtest"
	"berth/region/compute"
	"berth/region/dispatch"
	"berth/region/imageclient"
	"berth/region/monitor"
	"berth/region/store"
	"berth/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	agentToken = "test-agent-token-0123456789"
	demoImage  = "11111111-2222-3333-4444-555555555555"
	// altImage is a second public docker image (rebuilds).
	altImage  = "11111111-2222-3333-4444-666666666666"
	privImage = "99999999-2222-3333-4444-555555555555"
)

// fakeKeystone is a test double of Keystone's token validation API
// (GET /v3/auth/tokens): each token maps to a project and roles.
func fakeKeystone(t testing.TB) *httptest.Server {
	type who struct {
		project string
		roles   []string
	}
	tokens := map[string]who{
		"demo-token":   {"demo-project", []string{"member", "reader"}},
		"alt-token":    {"alt-project", []string{"member", "reader"}},
		"reader-token": {"demo-project", []string{"reader"}},
		"admin-token":  {"admin-project", []string{"admin", "member", "reader"}},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wh, ok := tokens[r.Header.Get("X-Subject-Token")]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		var roles []map[string]string
		for _, r := range wh.roles {
			roles = append(roles, map[string]string{"name": r})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
			"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			"user":       map[string]any{"id": "user-" + wh.project, "name": "u"},
			"project":    map[string]any{"id": wh.project, "name": wh.project, "domain": map[string]string{"id": "default"}},
			"roles":      roles,
		}})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// fakeGlance is a test double of imagesvc's GET /v2/images/{id}: two
// public docker images, and one private image only demo-project sees.
func fakeGlance(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/images" && r.URL.Query().Get("name") == "demo":
			_ = json.NewEncoder(w).Encode(map[string]any{"images": []imageclient.Image{{ID: demoImage, Name: "demo",
				Status: "active", ContainerFormat: "docker", DiskFormat: "raw", DockerImageID: "sha256:abc"}}})
		case r.URL.Path == "/v2/images":
			_ = json.NewEncoder(w).Encode(map[string]any{"images": []imageclient.Image{}})
		case r.URL.Path == "/v2/images/"+demoImage:
			_ = json.NewEncoder(w).Encode(imageclient.Image{ID: demoImage, Name: "demo", Status: "active",
				ContainerFormat: "docker", DiskFormat: "raw", DockerImageID: "sha256:abc"})
		case r.URL.Path == "/v2/images/"+altImage:
			_ = json.NewEncoder(w).Encode(imageclient.Image{ID: altImage, Name: "alt", Status: "active",
				ContainerFormat: "docker", DiskFormat: "raw", DockerImageID: "sha256:def"})
		case r.URL.Path == "/v2/images/"+privImage && r.Header.Get("X-Auth-Token") == "demo-token":
			_ = json.NewEncoder(w).Encode(imageclient.Image{ID: privImage, Name: "priv", Status: "active",
				ContainerFormat: "bare", DiskFormat: "qcow2"})
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

type env struct {
	url   string
	store *store.Store
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	net0, err := st.EnsureDefaultNetwork(ctx, "private", "10.77.0.0/29")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	notifier, err := dispatch.NewNotifier(dsn, log)
	if err != nil {
		t.Fatal(err)
	}
	nctx, cancel := context.WithCancel(ctx)
	go notifier.Run(nctx)
	t.Cleanup(func() { cancel(); notifier.Close() })
	ks, gl := fakeKeystone(t), fakeGlance(t)
	agents := dispatch.NewAPI(st, notifier, agentToken, log)
	h := compute.New(compute.Config{
		Store: st, Validator: keystone.NewValidator(ks.URL+"/v3", time.Minute, nil),
		Images: imageclient.New(gl.URL, nil), Log: log, DefaultNetworkID: net0.ID, HostGrace: time.Minute,
	}, func(r *mux.Router) { agents.Register(r.PathPrefix("/internal/v1").Subrouter()) })
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{url: srv.URL, store: st}
}

func (e *env) client(token string) *gophercloud.ServiceClient {
	pc := &gophercloud.ProviderClient{HTTPClient: http.Client{Timeout: 10 * time.Second}}
	pc.SetToken(token)
	return &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: e.url + "/v2.1/", ResourceBase: e.url + "/v2.1/"}
}

// agent speaks the internal wire as a host agent would.
func (e *env) agent(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.url+"/internal/v1"+path, rd)
	req.Header.Set(schema.AgentTokenHeader, agentToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func (e *env) registerHost(t *testing.T, name string, memMB int) {
	t.Helper()
	if code := e.agent(t, http.MethodPut, "/hosts/"+name, schema.HostRegister{VCPUs: 2, MemoryMB: memMB, DiskGB: 50}, nil); code != 200 {
		t.Fatalf("register host: %d", code)
	}
}

func (e *env) report(t *testing.T, host string, sets ...schema.ObservedSet) {
	t.Helper()
	if code := e.agent(t, http.MethodPost, "/hosts/"+host+"/report", schema.HostReport{Sets: sets}, nil); code != 204 {
		t.Fatalf("report: %d", code)
	}
}

func (e *env) desired(t *testing.T, host string) schema.DesiredState {
	t.Helper()
	var ds schema.DesiredState
	if code := e.agent(t, http.MethodGet, "/hosts/"+host+"/desired?index=0", nil, &ds); code != 200 {
		t.Fatalf("desired: %d", code)
	}
	return ds
}

func faultCode(err error) int {
	var ue gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ue) {
		return ue.Actual
	}
	return 0
}

func TestServerLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 4096)
	demo := e.client("demo-token")

	fl, err := flavors.ListDetail(demo, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := flavors.ExtractFlavors(fl)
	var names []string
	for _, f := range all {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, ","); got != "m1.tiny,m1.small,m1.medium,m1.large" {
		t.Errorf("flavors = %s, want Nova's m1 sizes", got)
	}

	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "web1", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	got, err := servers.Get(ctx, demo, srv.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != "BUILD" || got.Progress == 0 {
		t.Errorf("after create: status %s progress %d, want BUILD with progress", got.Status, got.Progress)
	}
	ds := e.desired(t, "h1")
	if len(ds.Sets) != 1 || ds.Sets[0].ID != srv.ID || ds.Sets[0].State != schema.SetRunning ||
		ds.Sets[0].Image.DockerImageID != "sha256:abc" || len(ds.Sets[0].Ports) != 1 || ds.Sets[0].Limits.MemoryMB != 512 {
		t.Fatalf("desired = %+v, want web1 running with one port and m1.tiny limits", ds)
	}
	port := ds.Sets[0].Ports[0]
	if port.IP != "10.77.0.2" || port.Gateway != "10.77.0.1" || port.PrefixLen != 29 {
		t.Errorf("port = %+v, want 10.77.0.2/29 via 10.77.0.1", port)
	}
	gen := ds.Sets[0].Generation
	e.report(t, "h1", schema.ObservedSet{ID: srv.ID, Generation: gen, Exists: true, PowerState: schema.PowerRunning})
	got, _ = servers.Get(ctx, demo, srv.ID).Extract()
	if got.Status != "ACTIVE" || got.Progress != 100 || got.HostID == "" || got.Addresses["private"] == nil {
		t.Fatalf("after report: %+v, want ACTIVE, progress 100, hostId and an address on private", got)
	}

	// Another project cannot see, stop or delete it.
	alt := e.client("alt-token")
	if _, err := servers.Get(ctx, alt, srv.ID).Extract(); faultCode(err) != 404 {
		t.Errorf("alt show: %v, want 404", err)
	}
	if err := servers.Stop(ctx, alt, srv.ID).ExtractErr(); faultCode(err) != 404 {
		t.Errorf("alt stop: %v, want 404", err)
	}
	if err := servers.Delete(ctx, alt, srv.ID).ExtractErr(); faultCode(err) != 404 {
		t.Errorf("alt delete: %v, want 404", err)
	}
	pages, _ := servers.List(alt, nil).AllPages(ctx)
	if l, _ := servers.ExtractServers(pages); len(l) != 0 {
		t.Errorf("alt list shows %d servers, want 0", len(l))
	}
	// A reader may look but not act.
	if err := servers.Stop(ctx, e.client("reader-token"), srv.ID).ExtractErr(); faultCode(err) != 403 {
		t.Errorf("reader stop: %v, want 403", err)
	}

	// Stop: the task is in flight until the agent reports shutdown.
	if err := servers.Stop(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := servers.Stop(ctx, demo, srv.ID).ExtractErr(); faultCode(err) != 409 {
		t.Errorf("second stop while powering-off: %v, want 409", err)
	}
	ds = e.desired(t, "h1")
	if ds.Sets[0].State != schema.SetStopped || ds.Sets[0].Generation <= gen {
		t.Fatalf("desired after stop = %+v, want stopped with a newer generation", ds.Sets[0])
	}
	// A stale report (old generation) must not finish the stop.
	e.report(t, "h1", schema.ObservedSet{ID: srv.ID, Generation: gen, Exists: true, PowerState: schema.PowerShutdown})
	if got, _ = servers.Get(ctx, demo, srv.ID).Extract(); got.Status != "ACTIVE" || got.TaskState != "powering-off" {
		t.Errorf("after stale report: %s/%s, want ACTIVE/powering-off", got.Status, got.TaskState)
	}
	gen = ds.Sets[0].Generation
	e.report(t, "h1", schema.ObservedSet{ID: srv.ID, Generation: gen, Exists: true, PowerState: schema.PowerShutdown})
	if got, _ = servers.Get(ctx, demo, srv.ID).Extract(); got.Status != "SHUTOFF" || got.PowerState != 4 {
		t.Errorf("after stop: %s power %d, want SHUTOFF power 4", got.Status, got.PowerState)
	}
	if err := servers.Stop(ctx, demo, srv.ID).ExtractErr(); faultCode(err) != 409 {
		t.Errorf("stop on stopped: %v, want 409 conflictingRequest", err)
	}

	// Start.
	if err := servers.Start(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("start: %v", err)
	}
	gen = e.desired(t, "h1").Sets[0].Generation
	e.report(t, "h1", schema.ObservedSet{ID: srv.ID, Generation: gen, Exists: true, PowerState: schema.PowerRunning})
	if got, _ = servers.Get(ctx, demo, srv.ID).Extract(); got.Status != "ACTIVE" {
		t.Errorf("after start: %s, want ACTIVE", got.Status)
	}

	// Delete: still ACTIVE while deleting, 404 once the agent reports it gone.
	if err := servers.Delete(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := servers.Delete(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Errorf("repeated delete: %v, want 204", err)
	}
	if got, _ = servers.Get(ctx, demo, srv.ID).Extract(); got.Status != "ACTIVE" || got.TaskState != "deleting" {
		t.Errorf("while deleting: %s/%s, want ACTIVE/deleting", got.Status, got.TaskState)
	}
	ds = e.desired(t, "h1")
	if ds.Sets[0].State != schema.SetDeleted {
		t.Fatalf("desired after delete = %s, want deleted", ds.Sets[0].State)
	}
	e.report(t, "h1", schema.ObservedSet{ID: srv.ID, Generation: ds.Sets[0].Generation, Exists: false})
	if _, err := servers.Get(ctx, demo, srv.ID).Extract(); faultCode(err) != 404 {
		t.Errorf("after delete: %v, want 404", err)
	}
	if err := servers.Delete(ctx, demo, srv.ID).ExtractErr(); faultCode(err) != 404 {
		t.Errorf("delete after delete: %v, want 404", err)
	}
	h, _ := e.store.FindHost(ctx, "h1")
	if h.MemoryMBUsed != 0 || h.VCPUsUsed != 0 {
		t.Errorf("host usage after delete: %d MB, %d vCPU, want 0", h.MemoryMBUsed, h.VCPUsUsed)
	}
	acts, err := instanceactions.List(demo, srv.ID, nil).AllPages(ctx)
	if err == nil {
		t.Errorf("instance actions of a deleted server visible: %v", acts)
	}
}

func TestBuildFailureAndNoValidHost(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	demo := e.client("demo-token")

	// No host registered: the server is accepted and goes ERROR with
	// Nova's fault.
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "lonely", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := servers.Get(ctx, demo, srv.ID).Extract()
	if got.Status != "ERROR" || !strings.Contains(got.Fault.Message, "No valid host was found") {
		t.Errorf("no host: %s fault %+v, want ERROR No valid host", got.Status, got.Fault)
	}
	if err := servers.Delete(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if _, err := servers.Get(ctx, demo, srv.ID).Extract(); faultCode(err) != 404 {
		t.Errorf("unplaced server delete: %v, want 404 at once", err)
	}

	// The agent fails the build: ERROR with its message as the fault.
	e.registerHost(t, "h1", 4096)
	srv, _ = servers.Create(ctx, demo, servers.CreateOpts{Name: "doomed", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	ds := e.desired(t, "h1")
	e.report(t, "h1", schema.ObservedSet{ID: srv.ID, Generation: ds.Sets[0].Generation, Error: "image load failed: boom"})
	got, _ = servers.Get(ctx, demo, srv.ID).Extract()
	if got.Status != "ERROR" || got.Fault.Message != "image load failed: boom" {
		t.Errorf("failed build: %s fault %+v, want ERROR with the agent's message", got.Status, got.Fault)
	}
}

func TestNoOvercommit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// 1024 MB × 1.5 ratio = room for three m1.tiny (512 MB) servers.
	e.registerHost(t, "small", 1024)
	demo := e.client("demo-token")
	const n = 8
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "p", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("create: %v", err)
		}
	}
	pages, _ := servers.List(demo, nil).AllPages(ctx)
	list, _ := servers.ExtractServers(pages)
	active, failed := 0, 0
	for _, s := range list {
		switch s.Status {
		case "BUILD":
			active++
		case "ERROR":
			failed++
		}
	}
	if active != 3 || failed != n-3 {
		t.Errorf("%d placed, %d failed; want exactly 3 placed and %d failed", active, failed, n-3)
	}
	h, _ := e.store.FindHost(ctx, "small")
	if h.MemoryMBUsed != 1536 {
		t.Errorf("host memory used %d, want 1536", h.MemoryMBUsed)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.registerHost(t, "h1", 4096)
	tests := []struct {
		name, method, path, token, ctype, body string
		status                                 int
		fault                                  string
	}{
		{"no token", "GET", "/v2.1/servers", "", "", "", 401, "unauthorized"},
		{"garbage token", "GET", "/v2.1/servers", "nope", "", "", 401, "unauthorized"},
		{"unknown server", "GET", "/v2.1/servers/00000000-0000-0000-0000-000000000000", "demo-token", "", "", 404, "itemNotFound"},
		{"not a uuid", "GET", "/v2.1/servers/xyz", "demo-token", "", "", 404, "itemNotFound"},
		{"unknown flavor", "POST", "/v2.1/servers", "demo-token", "application/json",
			`{"server": {"name": "a", "imageRef": "` + demoImage + `", "flavorRef": "99"}}`, 400, "badRequest"},
		{"unknown image", "POST", "/v2.1/servers", "demo-token", "application/json",
			`{"server": {"name": "a", "imageRef": "00000000-0000-0000-0000-000000000000", "flavorRef": "1"}}`, 400, "badRequest"},
		{"other project's private image", "POST", "/v2.1/servers", "alt-token", "application/json",
			`{"server": {"name": "a", "imageRef": "` + privImage + `", "flavorRef": "1"}}`, 400, "badRequest"},
		{"not a container image", "POST", "/v2.1/servers", "demo-token", "application/json",
			`{"server": {"name": "a", "imageRef": "` + privImage + `", "flavorRef": "1"}}`, 400, "badRequest"},
		{"malformed json", "POST", "/v2.1/servers", "demo-token", "application/json", `{"server": `, 400, "badRequest"},
		{"unknown field", "POST", "/v2.1/servers", "demo-token", "application/json",
			`{"server": {"name": "a", "imageRef": "x", "flavorRef": "1", "bogus": 1}}`, 400, "badRequest"},
		{"wrong type", "POST", "/v2.1/servers", "demo-token", "application/json",
			`{"server": {"name": 5, "imageRef": "x", "flavorRef": "1"}}`, 400, "badRequest"},
		{"name too long", "POST", "/v2.1/servers", "demo-token", "application/json",
			`{"server": {"name": "` + strings.Repeat("n", 256) + `", "imageRef": "x", "flavorRef": "1"}}`, 400, "badRequest"},
		{"wrong content type", "POST", "/v2.1/servers", "demo-token", "text/plain", `{}`, 415, "badMediaType"},
		{"huge body", "POST", "/v2.1/servers", "demo-token", "application/json",
			`{"server": {"name": "` + strings.Repeat("n", 2<<20) + `"}}`, 413, "overLimit"},
		{"member forcing a host", "POST", "/v2.1/servers", "demo-token", "application/json",
			`{"server": {"name": "a", "imageRef": "` + demoImage + `", "flavorRef": "1", "availability_zone": "nova:h1"}}`, 403, "forbidden"},
		{"reader creating", "POST", "/v2.1/servers", "reader-token", "application/json",
			`{"server": {"name": "a", "imageRef": "` + demoImage + `", "flavorRef": "1"}}`, 403, "forbidden"},
		{"no such action", "POST", "/v2.1/servers/00000000-0000-0000-0000-000000000000/action", "demo-token", "application/json",
			`{"frobnicate": null}`, 400, "badRequest"},
		{"microversion too new", "GET", "/v2.1/flavors", "demo-token", "", "", 406, "notAcceptable"},
		{"agent api without token", "GET", "/internal/v1/hosts/h1/desired", "", "", "", 401, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, e.url+tt.path, strings.NewReader(tt.body))
			if tt.token != "" {
				req.Header.Set("X-Auth-Token", tt.token)
			}
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			if tt.name == "microversion too new" {
				req.Header.Set("OpenStack-API-Version", "compute 2.999")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			f, ok := body[tt.fault]
			if resp.StatusCode != tt.status || !ok || f.Code != tt.status || f.Message == "" {
				t.Errorf("got %d %v, want %d with a %s fault", resp.StatusCode, body, tt.status, tt.fault)
			}
			if resp.Header.Get("X-Compute-Request-Id") == "" || resp.Header.Get("X-Openstack-Request-Id") == "" {
				t.Errorf("missing request id headers")
			}
			if tt.status == 401 && tt.path[:9] != "/internal" && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Keystone uri=") {
				t.Errorf("401 without WWW-Authenticate: %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

func TestMicroversionHeaders(t *testing.T) {
	e := newEnv(t)
	for _, hdr := range []struct{ name, value, want string }{
		{"", "", "2.1"}, {"OpenStack-API-Version", "compute 2.1", "2.1"}, {"X-OpenStack-Nova-API-Version", "2.1", "2.1"},
		{"OpenStack-API-Version", "compute 2.9", "2.9"}, {"OpenStack-API-Version", "image 2.5, compute 2.3", "2.3"},
		{"OpenStack-API-Version", "compute latest", compute.MaxVersion.String()},
	} {
		req, _ := http.NewRequest("GET", e.url+"/v2.1/flavors", nil)
		req.Header.Set("X-Auth-Token", "demo-token")
		if hdr.name != "" {
			req.Header.Set(hdr.name, hdr.value)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("OpenStack-API-Version") != "compute "+hdr.want ||
			resp.Header.Get("X-OpenStack-Nova-API-Version") != hdr.want || len(resp.Header.Values("Vary")) != 2 {
			t.Errorf("%s: %s → %d %v, want 200 echoing compute %s with Vary", hdr.name, hdr.value, resp.StatusCode, resp.Header, hdr.want)
		}
	}
	resp, err := http.Get(e.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Versions []schema.Version `json:"versions"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&v)
	if resp.StatusCode != 200 || len(v.Versions) != 1 || v.Versions[0].MinVersion != "2.1" {
		t.Errorf("GET / = %d %+v, want v2.1 with min 2.1 and no token needed", resp.StatusCode, v)
	}
}

// converge plays a host agent that has applied the current desired state
// of every set on host with the given power state.
func (e *env) converge(t *testing.T, host, power string, mutate func(*schema.DesiredSet, *schema.ObservedSet)) {
	t.Helper()
	for _, d := range e.desired(t, host).Sets {
		obs := schema.ObservedSet{ID: d.ID, Generation: d.Generation, Exists: d.State != schema.SetDeleted,
			PowerState: power, RebootSeq: d.RebootSeq, DockerImageID: d.Image.DockerImageID,
			Limits: &schema.SetLimits{VCPUs: d.Limits.VCPUs, MemoryMB: d.Limits.MemoryMB, DiskGB: d.Limits.DiskGB}}
		if mutate != nil {
			mutate(&d, &obs)
		}
		e.report(t, host, obs)
	}
}

func TestActions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 8192)
	demo := e.client("demo-token")
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "act", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)
	status := func() (string, string) {
		t.Helper()
		s, err := servers.Get(ctx, demo, srv.ID).Extract()
		if err != nil {
			t.Fatal(err)
		}
		return s.Status, s.TaskState
	}
	expect := func(step, want string) {
		t.Helper()
		if got, task := status(); got != want {
			t.Fatalf("%s: status %s (task %q), want %s", step, got, task, want)
		}
	}
	expect("built", "ACTIVE")

	// pause / unpause / suspend / resume
	if err := servers.Pause(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if ds := e.desired(t, "h1"); ds.Sets[0].State != schema.SetPaused {
		t.Fatalf("pause: desired %s, want paused", ds.Sets[0].State)
	}
	e.converge(t, "h1", schema.PowerPaused, nil)
	expect("paused", "PAUSED")
	if err := servers.Unpause(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)
	expect("unpaused", "ACTIVE")
	if err := servers.Suspend(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerPaused, nil)
	expect("suspended", "SUSPENDED")
	if err := servers.Unpause(ctx, demo, srv.ID).ExtractErr(); faultCode(err) != 409 {
		t.Errorf("unpause of a suspended server: %v, want 409", err)
	}
	if err := servers.Resume(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)
	expect("resumed", "ACTIVE")

	// reboot: REBOOT until the agent has applied the new reboot sequence.
	if err := servers.Reboot(ctx, demo, srv.ID, servers.RebootOpts{Type: servers.HardReboot}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	expect("rebooting", "HARD_REBOOT")
	e.converge(t, "h1", schema.PowerRunning, func(d *schema.DesiredSet, o *schema.ObservedSet) { o.RebootSeq = d.RebootSeq - 1 })
	expect("reboot not yet applied", "HARD_REBOOT")
	e.converge(t, "h1", schema.PowerRunning, nil)
	expect("rebooted", "ACTIVE")

	// resize to m1.small, live; VERIFY_RESIZE, then revert, then resize and confirm.
	if err := servers.Resize(ctx, demo, srv.ID, servers.ResizeOpts{FlavorRef: "2"}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	expect("resizing", "RESIZE")
	if ds := e.desired(t, "h1"); ds.Sets[0].Limits.MemoryMB != 2048 {
		t.Fatalf("resize: desired memory %d, want 2048", ds.Sets[0].Limits.MemoryMB)
	}
	h, _ := e.store.FindHost(ctx, "h1")
	if h.MemoryMBUsed != 512+2048 {
		t.Errorf("during resize host holds %d MB, want both flavors (2560)", h.MemoryMBUsed)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)
	expect("resized", "VERIFY_RESIZE")
	if err := servers.RevertResize(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)
	expect("reverted", "ACTIVE")
	if got, _ := servers.Get(ctx, demo, srv.ID).Extract(); got.Flavor["id"] != "1" {
		t.Errorf("after revert flavor %v, want 1", got.Flavor["id"])
	}
	if h, _ = e.store.FindHost(ctx, "h1"); h.MemoryMBUsed != 512 {
		t.Errorf("after revert host holds %d MB, want 512", h.MemoryMBUsed)
	}
	if err := servers.Resize(ctx, demo, srv.ID, servers.ResizeOpts{FlavorRef: "2"}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)
	if err := servers.ConfirmResize(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	expect("confirmed", "ACTIVE")
	if h, _ = e.store.FindHost(ctx, "h1"); h.MemoryMBUsed != 2048 {
		t.Errorf("after confirm host holds %d MB, want 2048", h.MemoryMBUsed)
	}

	// rebuild to the same image keeps the server and finishes when the
	// agent runs the image.
	if _, err := servers.Rebuild(ctx, demo, srv.ID, servers.RebuildOpts{ImageRef: demoImage, Name: "act2"}).Extract(); err != nil {
		t.Fatal(err)
	}
	expect("rebuilding", "REBUILD")
	e.converge(t, "h1", schema.PowerRunning, nil)
	expect("rebuilt", "ACTIVE")

	// lock: a member cannot act on a locked server; an admin can.
	if err := servers.Lock(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if err := servers.Stop(ctx, demo, srv.ID).ExtractErr(); faultCode(err) != 409 {
		t.Errorf("stop locked: %v, want 409", err)
	}
	if err := servers.Unlock(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	// reset-state is admin only.
	if err := servers.ResetState(ctx, demo, srv.ID, servers.StateError).ExtractErr(); faultCode(err) != 403 {
		t.Errorf("member reset-state: %v, want 403", err)
	}
	if err := servers.ResetState(ctx, e.client("admin-token"), srv.ID, servers.StateError).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	expect("reset", "ERROR")

	acts, err := instanceactions.List(demo, srv.ID, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, _ := instanceactions.ExtractInstanceActions(acts)
	var names []string
	for _, a := range list {
		names = append(names, a.Action)
	}
	want := "resetState,unlock,lock,rebuild,confirmResize,resize,revertResize,resize,reboot,resume,suspend,unpause,pause,create"
	if got := strings.Join(names, ","); got != want {
		t.Errorf("instance actions:\n got %s\nwant %s", got, want)
	}
}

func TestKeypairsQuotasMetadata(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 65536)
	demo := e.client("demo-token")

	kp, err := keypairs.Create(ctx, demo, keypairs.CreateOpts{Name: "k1"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(kp.PrivateKey, "-----BEGIN RSA PRIVATE KEY-----") || kp.Fingerprint == "" {
		t.Errorf("generated keypair: %+v, want a private key and fingerprint", kp)
	}
	if _, err := keypairs.Create(ctx, demo, keypairs.CreateOpts{Name: "k1"}).Extract(); faultCode(err) != 409 {
		t.Errorf("duplicate keypair: %v, want 409", err)
	}
	if _, err := keypairs.Create(ctx, demo, keypairs.CreateOpts{Name: "k2", PublicKey: "not a key"}).Extract(); faultCode(err) != 400 {
		t.Errorf("bad public key: %v, want 400", err)
	}
	if _, err := keypairs.Get(ctx, e.client("alt-token"), "k1", nil).Extract(); faultCode(err) != 404 {
		t.Errorf("alt sees demo's keypair: %v, want 404", err)
	}
	srv, err := servers.Create(ctx, demo, keypairs.CreateOptsExt{
		CreateOptsBuilder: servers.CreateOpts{Name: "withkey", ImageRef: demoImage, FlavorRef: "1",
			Metadata: map[string]string{"a": "1"}, UserData: []byte("#!/bin/sh\necho hi\n")},
		KeyName: "k1",
	}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	ds := e.desired(t, "h1")
	if !strings.HasPrefix(ds.Sets[0].AuthorizedKeys, "ssh-rsa ") || ds.Sets[0].UserData == "" {
		t.Errorf("desired set lacks the key or user data: %+v", ds.Sets[0])
	}
	if _, err := servers.Create(ctx, demo, keypairs.CreateOptsExt{
		CreateOptsBuilder: servers.CreateOpts{Name: "x", ImageRef: demoImage, FlavorRef: "1"}, KeyName: "nope"}, nil).Extract(); faultCode(err) != 400 {
		t.Errorf("unknown key_name: %v, want 400", err)
	}

	// metadata
	md, err := servers.UpdateMetadata(ctx, demo, srv.ID, servers.MetadataOpts{"b": "2"}).Extract()
	if err != nil || md["a"] != "1" || md["b"] != "2" {
		t.Errorf("merge metadata: %v %v", md, err)
	}
	if md, err = servers.ResetMetadata(ctx, demo, srv.ID, servers.MetadataOpts{"c": "3"}).Extract(); err != nil || len(md) != 1 {
		t.Errorf("replace metadata: %v %v", md, err)
	}
	if err := servers.DeleteMetadatum(ctx, demo, srv.ID, "c").ExtractErr(); err != nil {
		t.Error(err)
	}
	if err := servers.DeleteMetadatum(ctx, demo, srv.ID, "c").ExtractErr(); faultCode(err) != 404 {
		t.Errorf("delete missing metadatum: %v, want 404", err)
	}
	if u, err := servers.Update(ctx, demo, srv.ID, servers.UpdateOpts{Name: "renamed"}).Extract(); err != nil || u.Name != "renamed" {
		t.Errorf("rename: %v %v", u, err)
	}

	// quota: instances limited to 2 by the admin → the third boot is 403.
	admin := e.client("admin-token")
	if _, err := quotasets.Update(ctx, admin, "demo-project", quotasets.UpdateOpts{Instances: gophercloud.IntToPointer(2)}).Extract(); err != nil {
		t.Fatal(err)
	}
	if _, err := quotasets.Update(ctx, demo, "demo-project", quotasets.UpdateOpts{Instances: gophercloud.IntToPointer(99)}).Extract(); faultCode(err) != 403 {
		t.Errorf("member quota update: %v, want 403", err)
	}
	if _, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "two", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract(); err != nil {
		t.Fatal(err)
	}
	_, err = servers.Create(ctx, demo, servers.CreateOpts{Name: "three", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if faultCode(err) != 403 || !strings.Contains(err.Error(), "Quota exceeded for instances") {
		t.Errorf("over quota: %v, want 403 Quota exceeded for instances", err)
	}
	lim, err := limits.Get(ctx, demo, nil).Extract()
	if err != nil || lim.Absolute.MaxTotalInstances != 2 || lim.Absolute.TotalInstancesUsed != 2 {
		t.Errorf("limits: %+v %v, want max 2 used 2", lim, err)
	}

	// operator views
	if _, err := hypervisors.List(demo, nil).AllPages(ctx); faultCode(err) != 403 {
		t.Errorf("member hypervisors: %v, want 403", err)
	}
	pages, err := hypervisors.List(admin, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := hypervisors.ExtractHypervisors(pages)
	if err != nil || len(hs) != 1 || hs[0].HypervisorHostname != "h1" || hs[0].RunningVMs != 2 || hs[0].State != "up" {
		t.Errorf("hypervisors: %+v %v, want h1 up with 2 servers", hs, err)
	}
}

func TestFlavorAdmin(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	admin, demo := e.client("admin-token"), e.client("demo-token")
	priv := false
	if _, err := flavors.Create(ctx, demo, flavors.CreateOpts{Name: "x", RAM: 64, VCPUs: 1, Disk: gophercloud.IntToPointer(0)}).Extract(); faultCode(err) != 403 {
		t.Errorf("member create flavor: %v, want 403", err)
	}
	f, err := flavors.Create(ctx, admin, flavors.CreateOpts{Name: "b1.private", ID: "b1", RAM: 256, VCPUs: 1, Disk: gophercloud.IntToPointer(1), IsPublic: &priv}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := flavors.Create(ctx, admin, flavors.CreateOpts{Name: "b1.private", RAM: 256, VCPUs: 1, Disk: gophercloud.IntToPointer(0)}).Extract(); faultCode(err) != 409 {
		t.Errorf("duplicate flavor name: %v, want 409", err)
	}
	if _, err := flavors.Get(ctx, demo, f.ID).Extract(); faultCode(err) != 404 {
		t.Errorf("demo sees private flavor without access: %v, want 404", err)
	}
	if _, err := flavors.AddAccess(ctx, admin, f.ID, flavors.AddAccessOpts{Tenant: "demo-project"}).Extract(); err != nil {
		t.Fatal(err)
	}
	if _, err := flavors.Get(ctx, demo, f.ID).Extract(); err != nil {
		t.Errorf("demo with access: %v", err)
	}
	if _, err := flavors.Get(ctx, e.client("alt-token"), f.ID).Extract(); faultCode(err) != 404 {
		t.Errorf("alt sees demo's private flavor: %v, want 404", err)
	}
	specs, err := flavors.CreateExtraSpecs(ctx, admin, f.ID, flavors.ExtraSpecsOpts{"quota:vif_inbound_average": "1024"}).Extract()
	if err != nil || specs["quota:vif_inbound_average"] != "1024" {
		t.Errorf("extra specs: %v %v", specs, err)
	}
	got, err := flavors.ListExtraSpecs(ctx, demo, f.ID).Extract()
	if err != nil || len(got) != 1 {
		t.Errorf("list extra specs: %v %v", got, err)
	}
	if err := flavors.DeleteExtraSpec(ctx, admin, f.ID, "quota:vif_inbound_average").ExtractErr(); err != nil {
		t.Error(err)
	}
	if err := flavors.Delete(ctx, admin, f.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if _, err := flavors.Get(ctx, admin, f.ID).Extract(); faultCode(err) != 404 {
		t.Errorf("deleted flavor: %v, want 404", err)
	}
}

func TestServerGroupAntiAffinity(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 8192)
	e.registerHost(t, "h2", 8192)
	demo := e.client("demo-token")
	g, err := servergroups.Create(ctx, demo, servergroups.CreateOpts{Name: "spread", Policies: []string{"anti-affinity"}}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	// Three concurrent boots into an anti-affinity group over two hosts:
	// two land on different hosts, the third finds no valid host.
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() {
			_, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "g", ImageRef: demoImage, FlavorRef: "1"},
				servers.SchedulerHintOpts{Group: g.ID}).Extract()
			errs <- err
		}()
	}
	for i := 0; i < 3; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	pages, _ := servers.List(demo, nil).AllPages(ctx)
	list, _ := servers.ExtractServers(pages)
	hosts := map[string]int{}
	errored := 0
	for _, s := range list {
		if s.Status == "ERROR" {
			errored++
			continue
		}
		hosts[s.HostID]++
	}
	if len(hosts) != 2 || errored != 1 {
		t.Errorf("placements %v, %d errored; want one server on each of two hosts and one ERROR", hosts, errored)
	}
	got, _ := servergroups.Get(ctx, demo, g.ID).Extract()
	if len(got.Members) != 3 {
		t.Errorf("group members %v, want 3", got.Members)
	}
	if _, err := servergroups.Get(ctx, e.client("alt-token"), g.ID).Extract(); faultCode(err) != 404 {
		t.Errorf("alt sees demo's group: %v, want 404", err)
	}
}

func TestServerOnTenantNetworkAndPort(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 8192)
	demo := e.client("demo-token")
	sc := store.Scope{ProjectID: "demo-project"}
	n, err := e.store.CreateNetwork(ctx, store.Network{ID: "5a1f3c1e-0000-4000-8000-000000000001", Name: "net1",
		ProjectID: "demo-project", AdminStateUp: true, MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.CreateSubnet(ctx, sc, store.Subnet{ID: "5a1f3c1e-0000-4000-8000-000000000002", NetworkID: n.ID,
		ProjectID: "demo-project", CIDR: "192.168.9.0/24", EnableDHCP: true}); err != nil {
		t.Fatal(err)
	}
	p, err := e.store.CreatePort(ctx, sc, store.NewPort{Port: store.Port{ID: "5a1f3c1e-0000-4000-8000-000000000003",
		NetworkID: n.ID, ProjectID: "demo-project", AdminStateUp: true, PortSecurityEnabled: true}, FixedIP: "192.168.9.77"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "multi", ImageRef: demoImage, FlavorRef: "1",
		Networks: []servers.Network{{UUID: n.ID, FixedIP: "192.168.9.10"}, {Port: p.ID}}}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	ds := e.desired(t, "h1")
	if len(ds.Sets) != 1 || len(ds.Sets[0].Ports) != 2 || ds.Sets[0].Ports[0].IP != "192.168.9.10" || ds.Sets[0].Ports[1].IP != "192.168.9.77" {
		t.Fatalf("desired ports = %+v, want 192.168.9.10 then the given port's 192.168.9.77", ds.Sets)
	}
	// alt cannot boot onto demo's network or take its port.
	alt := e.client("alt-token")
	if _, err := servers.Create(ctx, alt, servers.CreateOpts{Name: "x", ImageRef: demoImage, FlavorRef: "1",
		Networks: []servers.Network{{UUID: n.ID}}}, nil).Extract(); faultCode(err) != 400 {
		t.Errorf("alt on demo's network: %v, want 400", err)
	}
	// Deleting the server deletes the port Nova made and keeps the user's.
	if err := servers.Delete(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerShutdown, func(d *schema.DesiredSet, o *schema.ObservedSet) { o.Exists = false })
	left, _ := e.store.ListPorts(ctx, store.PortFilter{Scope: sc, NetworkID: n.ID})
	if len(left) != 1 || left[0].ID != p.ID || left[0].ServerID != "" {
		t.Errorf("ports after delete = %+v, want only the user's port, detached", left)
	}
}

func TestHostDownAndStaleBuilds(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 8192)
	demo := e.client("demo-token")
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "on-h1", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)
	stuck, _ := servers.Create(ctx, demo, servers.CreateOpts{Name: "stuck", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()

	// The host goes silent: its servers' power state becomes unknown.
	if _, err := e.store.DB().Exec(`UPDATE hosts SET last_heartbeat = now() - interval '5 minutes'`); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	monitor.Pass(ctx, e.store, monitor.Config{Interval: time.Second, HostGrace: time.Minute, BuildTimeout: time.Hour}, log)
	got, _ := servers.Get(ctx, demo, srv.ID).Extract()
	if got.PowerState != 0 || got.Status != "ACTIVE" {
		t.Errorf("on a silent host: status %s power %d, want ACTIVE with power 0 (unknown)", got.Status, got.PowerState)
	}
	// Delete while the host is down: 204 and 404 at once, quota freed.
	if err := servers.Delete(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if _, err := servers.Get(ctx, demo, srv.ID).Extract(); faultCode(err) != 404 {
		t.Errorf("after delete on a down host: %v, want 404 at once", err)
	}
	if lim, _ := limits.Get(ctx, demo, nil).Extract(); lim.Absolute.TotalInstancesUsed != 1 {
		t.Errorf("instances used %d, want 1 (the stuck build)", lim.Absolute.TotalInstancesUsed)
	}
	// The build that never finished fails at the timeout with a fault.
	monitor.Pass(ctx, e.store, monitor.Config{Interval: time.Second, HostGrace: time.Minute, BuildTimeout: time.Nanosecond}, log)
	got, _ = servers.Get(ctx, demo, stuck.ID).Extract()
	if got.Status != "ERROR" || got.Fault.Message == "" || !strings.Contains(got.Fault.Message, "timed out") {
		t.Errorf("stale build: %s %+v, want ERROR with a timeout fault", got.Status, got.Fault)
	}
	// When the host reports again, the reported state wins.
	e.converge(t, "h1", schema.PowerShutdown, func(d *schema.DesiredSet, o *schema.ObservedSet) { o.Exists = false })
}

func TestDesiredDataPath(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 8192)
	admin, demo := e.client("admin-token"), e.client("demo-token")
	f, err := flavors.Create(ctx, admin, flavors.CreateOpts{Name: "bw", ID: "bw", RAM: 256, VCPUs: 1, Disk: gophercloud.IntToPointer(1)}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := flavors.CreateExtraSpecs(ctx, admin, f.ID, flavors.ExtraSpecsOpts{
		"quota:vif_inbound_average": "1000", "quota:vif_outbound_average": "500", "berth:bw_priority": "2"}).Extract(); err != nil {
		t.Fatal(err)
	}
	if _, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "a", ImageRef: demoImage, FlavorRef: "bw"}, nil).Extract(); err != nil {
		t.Fatal(err)
	}
	if _, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "b", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract(); err != nil {
		t.Fatal(err)
	}
	ds := e.desired(t, "h1")
	a, b := ds.Sets[0].Ports[0], ds.Sets[1].Ports[0]
	if a.Bandwidth == nil || a.Bandwidth.InboundAverageKBps != 1000 || a.Bandwidth.OutboundAverageKBps != 500 || a.Bandwidth.Priority != 2 {
		t.Errorf("bandwidth of a = %+v, want 1000/500 KB/s priority 2", a.Bandwidth)
	}
	if b.Bandwidth != nil {
		t.Errorf("bandwidth of b = %+v, want none", b.Bandwidth)
	}
	if !a.PortSecurity || a.CIDR != "10.77.0.0/29" || a.MTU != 1450 {
		t.Errorf("port a = %+v, want port security on 10.77.0.0/29 with MTU 1450", a)
	}
	// The default group: egress anywhere, ingress only from its members
	// (both servers' addresses).
	var ingress, egress []schema.SetRule
	for _, r := range a.Rules {
		if r.Direction == "ingress" {
			ingress = append(ingress, r)
		} else {
			egress = append(egress, r)
		}
	}
	if len(egress) != 1 || len(egress[0].Remote) != 0 || egress[0].RemoteGroup != "" || len(ingress) != 1 ||
		len(ingress[0].Remote) != 0 || ingress[0].RemoteGroup == "" || ingress[0].RemoteGroupTag <= 0 {
		t.Fatalf("rules = %+v, want egress any and ingress from the default group", a.Rules)
	}
	// The group's members are listed once for the host, not in the rule.
	members := func(ds schema.DesiredState) string {
		for _, g := range ds.Groups {
			if g.ID == ingress[0].RemoteGroup {
				if g.Tag != ingress[0].RemoteGroupTag {
					t.Errorf("group tag %d, rule's %d", g.Tag, ingress[0].RemoteGroupTag)
				}
				var ips []string
				for _, m := range g.Members {
					if m.NetworkID != a.NetworkID || m.VNI != a.VNI {
						t.Errorf("member %+v, want on network %s vni %d", m, a.NetworkID, a.VNI)
					}
					ips = append(ips, m.IP)
				}
				return strings.Join(ips, ",")
			}
		}
		t.Fatalf("groups %+v lack the default group %s", ds.Groups, ingress[0].RemoteGroup)
		return ""
	}
	if got, want := members(ds), strings.Join(slices.Sorted(slices.Values([]string{a.IP, b.IP})), ","); got != want {
		t.Errorf("default group members = %s, want %s", got, want)
	}

	// A server of the group booted on another host joins the members and
	// wakes this host's agent; the ports' rules (and their sets'
	// generations) stay as they were. Its delete does the same.
	e.registerHost(t, "h2", 8192)
	disabled := true
	if _, err := e.store.SetHostService(ctx, "h1", &disabled, nil, nil); err != nil {
		t.Fatal(err)
	}
	woken := func(what string, before schema.DesiredState) schema.DesiredState {
		t.Helper()
		after := e.desired(t, "h1")
		if after.Index <= before.Index {
			t.Errorf("h1's index %d → %d after %s; want its agent woken", before.Index, after.Index, what)
		}
		for i := range after.Sets {
			if after.Sets[i].Generation != before.Sets[i].Generation {
				t.Errorf("set %s generation %d → %d after %s", after.Sets[i].Name, before.Sets[i].Generation, after.Sets[i].Generation, what)
			}
		}
		return after
	}
	before := e.desired(t, "h1")
	c, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "c", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	var cIP string
	for _, d := range e.desired(t, "h2").Sets {
		if d.ID == c.ID {
			cIP = d.Ports[0].IP
		}
	}
	if cIP == "" {
		t.Fatalf("c is not on h2")
	}
	after := woken("a member booted on h2", before)
	if got, want := members(after), strings.Join(slices.Sorted(slices.Values([]string{a.IP, b.IP, cIP})), ","); got != want {
		t.Errorf("members after c booted = %s, want %s", got, want)
	}
	if err := servers.Delete(ctx, demo, c.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h2", schema.PowerShutdown, nil)
	after = woken("a member was deleted on h2", after)
	if got, want := members(after), strings.Join(slices.Sorted(slices.Values([]string{a.IP, b.IP})), ","); got != want {
		t.Errorf("members after c was deleted = %s, want %s", got, want)
	}
}

func TestSetAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 8192)
	demo := e.client("demo-token")
	body := map[string]any{"set": map[string]any{
		"name": "web", "flavorRef": "m1.small",
		"containers": []map[string]any{
			{"name": "app", "image": demoImage, "command": []string{"httpd", "-f"},
				"volumes": []map[string]string{{"name": "www", "path": "/www"}}, "limits": map[string]any{"vcpus": 0.5, "memory_mb": 256},
				"restart": "always"},
			{"name": "logship", "image": "demo", "role": "sidecar",
				"volumes": []map[string]string{{"name": "www", "path": "/www"}}},
		},
	}}
	var out struct {
		Set struct {
			ID         string           `json:"id"`
			Status     string           `json:"status"`
			Containers []map[string]any `json:"containers"`
		} `json:"set"`
	}
	resp, err := demo.Post(ctx, e.url+"/v2.1/berth-sets", body, &out, &gophercloud.RequestOpts{OkCodes: []int{202}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Location") == "" || out.Set.Status != "BUILD" || len(out.Set.Containers) != 2 {
		t.Fatalf("create set = %+v, want BUILD with two containers and a Location", out.Set)
	}
	ds := e.desired(t, "h1")
	cs := ds.Sets[0].Containers
	if len(cs) != 2 || cs[0].Limits == nil || cs[0].Limits.CPUMillis != 500 || cs[1].Role != schema.RoleSidecar ||
		cs[1].Image.DockerImageID != "sha256:abc" || cs[0].Volumes[0].Volume != "www" {
		t.Errorf("desired containers = %+v, want app (500 mCPU, volume www) and a sidecar resolved by image name", cs)
	}
	// The set is a server: it shows in the server list and goes ACTIVE.
	e.converge(t, "h1", schema.PowerRunning, nil)
	if s, err := servers.Get(ctx, demo, out.Set.ID).Extract(); err != nil || s.Status != "ACTIVE" {
		t.Errorf("set as a server: %v %v, want ACTIVE", s, err)
	}
	for name, bad := range map[string]map[string]any{
		"host path volume":   {"name": "x", "image": demoImage, "volumes": []map[string]string{{"name": "v", "path": "/proc/x"}}},
		"bad name":           {"name": "Infra!", "image": demoImage},
		"no such image":      {"name": "x", "image": "nope"},
		"limits over flavor": {"name": "x", "image": demoImage, "limits": map[string]any{"memory_mb": 999999}},
		"privileged":         {"name": "x", "image": demoImage, "privileged": true},
	} {
		_, err := demo.Post(ctx, e.url+"/v2.1/berth-sets", map[string]any{"set": map[string]any{
			"name": "bad", "flavorRef": "1", "containers": []map[string]any{bad}}}, nil, &gophercloud.RequestOpts{OkCodes: []int{202}})
		if faultCode(err) != 400 {
			t.Errorf("%s: %v, want 400", name, err)
		}
	}
	if _, err := e.client("alt-token").Get(ctx, e.url+"/v2.1/berth-sets/"+out.Set.ID, nil, nil); faultCode(err) != 404 {
		t.Errorf("alt sees demo's set: %v, want 404", err)
	}
}

func TestComputeSecurityGroupProxies(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 8192)
	demo := e.client("demo-token")
	g, err := secgroups.Create(ctx, demo, secgroups.CreateOpts{Name: "web", Description: "web servers"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	// Rename through the proxy; another project's group is 404.
	if up, err := secgroups.Update(ctx, demo, g.ID, secgroups.UpdateOpts{Name: "web", Description: ptrTo("www")}).Extract(); err != nil || up.Description != "www" {
		t.Errorf("rename group = %+v, %v; want description www", up, err)
	}
	if _, err := secgroups.Update(ctx, e.client("alt-token"), g.ID, secgroups.UpdateOpts{Name: "x", Description: ptrTo("y")}).Extract(); faultCode(err) != 404 {
		t.Errorf("another project renames the group: %v, want 404", err)
	}
	if _, err := secgroups.CreateRule(ctx, demo, secgroups.CreateRuleOpts{ParentGroupID: g.ID, FromPort: 80, ToPort: 80,
		IPProtocol: "tcp", CIDR: "0.0.0.0/0"}).Extract(); err != nil {
		t.Fatal(err)
	}
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "sg", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	gen := e.desired(t, "h1").Sets[0].Generation
	if err := secgroups.AddServer(ctx, demo, srv.ID, "web").ExtractErr(); err != nil {
		t.Fatal(err)
	}
	ds := e.desired(t, "h1").Sets[0]
	found := false
	for _, r := range ds.Ports[0].Rules {
		found = found || (r.Protocol == "tcp" && r.PortMin == 80 && r.PortMax == 80)
	}
	if !found || ds.Generation <= gen {
		t.Errorf("after addSecurityGroup the desired port rules are %+v (generation %d→%d), want tcp/80 and a newer generation", ds.Ports[0].Rules, gen, ds.Generation)
	}
	pages, _ := secgroups.ListByServer(demo, srv.ID).AllPages(ctx)
	list, _ := secgroups.ExtractSecurityGroups(pages)
	if len(list) != 2 {
		t.Errorf("server groups = %+v, want default and web", list)
	}
	if err := secgroups.RemoveServer(ctx, demo, srv.ID, "web").ExtractErr(); err != nil {
		t.Error(err)
	}
	if err := secgroups.RemoveServer(ctx, demo, srv.ID, "web").ExtractErr(); faultCode(err) != 404 {
		t.Errorf("remove a group the server lacks: %v, want 404", err)
	}
	if err := secgroups.AddServer(ctx, demo, srv.ID, "nope").ExtractErr(); faultCode(err) != 404 {
		t.Errorf("add unknown group: %v, want 404", err)
	}
	if _, err := secgroups.Get(ctx, e.client("alt-token"), g.ID).Extract(); faultCode(err) != 404 {
		t.Errorf("alt sees demo's group: %v, want 404", err)
	}
}

func TestMigrateAndEvacuate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 8192)
	demo, admin := e.client("demo-token"), e.client("admin-token")
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "mover", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)
	ip := e.desired(t, "h1").Sets[0].Ports[0].IP
	if err := servers.Migrate(ctx, demo, srv.ID).ExtractErr(); faultCode(err) != 403 {
		t.Errorf("member migrate: %v, want 403", err)
	}
	if err := servers.Migrate(ctx, admin, srv.ID).ExtractErr(); faultCode(err) != 400 {
		t.Errorf("migrate with no other host: %v, want 400 no valid host", err)
	}
	e.registerHost(t, "h2", 8192)
	if err := servers.Migrate(ctx, admin, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if ds := e.desired(t, "h1"); len(ds.Sets) != 0 {
		t.Errorf("h1 still desires %d sets after migrate, want 0 (its copy is reaped)", len(ds.Sets))
	}
	ds := e.desired(t, "h2")
	if len(ds.Sets) != 1 || ds.Sets[0].Ports[0].IP != ip {
		t.Fatalf("h2 desired = %+v, want the server with address %s", ds.Sets, ip)
	}
	if got, _ := servers.Get(ctx, demo, srv.ID).Extract(); got.Status != "MIGRATING" {
		t.Errorf("while migrating: %s, want MIGRATING", got.Status)
	}
	// A stale report from the old host does not finish the move.
	e.report(t, "h1", schema.ObservedSet{ID: srv.ID, Generation: ds.Sets[0].Generation, Exists: true, PowerState: schema.PowerRunning})
	if got, _ := servers.Get(ctx, demo, srv.ID).Extract(); got.Status != "MIGRATING" {
		t.Errorf("after the old host's report: %s, want still MIGRATING", got.Status)
	}
	e.converge(t, "h2", schema.PowerRunning, nil)
	if got, _ := servers.Get(ctx, demo, srv.ID).Extract(); got.Status != "ACTIVE" {
		t.Errorf("after the new host's report: %s, want ACTIVE", got.Status)
	}
	// Evacuate only from a host that is down.
	if _, err := servers.Evacuate(ctx, admin, srv.ID, servers.EvacuateOpts{}).ExtractAdminPass(); faultCode(err) != 400 {
		t.Errorf("evacuate from a live host: %v, want 400", err)
	}
	if _, err := e.store.DB().Exec(`UPDATE hosts SET last_heartbeat = now() - interval '10 minutes' WHERE name = 'h2'`); err != nil {
		t.Fatal(err)
	}
	if _, err := servers.Evacuate(ctx, admin, srv.ID, servers.EvacuateOpts{}).ExtractAdminPass(); err != nil {
		t.Fatal(err)
	}
	if ds := e.desired(t, "h1"); len(ds.Sets) != 1 || ds.Sets[0].Ports[0].IP != ip {
		t.Errorf("after evacuate h1 desires %+v, want the server back with %s", ds.Sets, ip)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)
	if got, _ := servers.Get(ctx, demo, srv.ID).Extract(); got.Status != "ACTIVE" {
		t.Errorf("after evacuation: %s, want ACTIVE", got.Status)
	}
	for _, h := range []string{"h1", "h2"} {
		hs, _ := e.store.FindHost(ctx, h)
		want := map[string]int{"h1": 512, "h2": 0}[h]
		if hs.MemoryMBUsed != want {
			t.Errorf("%s holds %d MB, want %d", h, hs.MemoryMBUsed, want)
		}
	}
}

func TestNovaDetails(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 8192)
	demo := e.client("demo-token")
	// A locked server cannot be deleted by its owner.
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "lk", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)
	if err := servers.Lock(ctx, demo, srv.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if err := servers.Delete(ctx, demo, srv.ID).ExtractErr(); faultCode(err) != 409 {
		t.Errorf("owner deletes a locked server: %v, want 409", err)
	}
	// Imported keys are kept as sent.
	const pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl berth@test\n"
	kp, err := keypairs.Create(ctx, demo, keypairs.CreateOpts{Name: "imp", PublicKey: pub}).Extract()
	if err != nil || kp.PublicKey != pub {
		t.Errorf("imported key = %q, %v; want it exactly as sent", kp.PublicKey, err)
	}
	// ips by network, os-interface.
	pages, err := servers.ListAddressesByNetwork(demo, srv.ID, "private").AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if addrs, _ := servers.ExtractNetworkAddresses(pages); len(addrs) != 1 {
		t.Errorf("addresses on private = %v, want one", addrs)
	}
	var ifs struct {
		Attachments []map[string]any `json:"interfaceAttachments"`
	}
	if _, err := demo.Get(ctx, e.url+"/v2.1/servers/"+srv.ID+"/os-interface", &ifs, nil); err != nil || len(ifs.Attachments) != 1 {
		t.Errorf("os-interface = %+v, %v; want one port", ifs, err)
	}
	// Unknown paths authenticate first (401), then 404.
	resp, err := http.Get(e.url + "/v2.1/no-such-thing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("unknown path without a token: %d, want 401", resp.StatusCode)
	}
}

func TestTunnelPeersAndVNI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for name, ip := range map[string]string{"h1": "172.31.0.1", "h2": "172.31.0.2", "h3": ""} {
		if code := e.agent(t, http.MethodPut, "/hosts/"+name, schema.HostRegister{VCPUs: 2, MemoryMB: 4096, DiskGB: 50, TunnelIP: ip}, nil); code != 200 {
			t.Fatalf("register %s: %d", name, code)
		}
	}
	ds := e.desired(t, "h1")
	if len(ds.Peers) != 1 || ds.Peers[0].Host != "h2" || ds.Peers[0].TunnelIP != "172.31.0.2" {
		t.Errorf("h1 peers = %+v, want only h2 (h3 has no tunnel endpoint)", ds.Peers)
	}
	if _, err := servers.Create(ctx, e.client("demo-token"), servers.CreateOpts{Name: "v", ImageRef: demoImage, FlavorRef: "1",
		AvailabilityZone: "nova"}, nil).Extract(); err != nil {
		t.Fatal(err)
	}
	var vni int
	for _, h := range []string{"h1", "h2", "h3"} {
		for _, s := range e.desired(t, h).Sets {
			vni = s.Ports[0].VNI
		}
	}
	if vni <= 0 {
		t.Errorf("port VNI = %d, want the network's positive VNI", vni)
	}
}

func ptrTo(s string) *string { return &s }
