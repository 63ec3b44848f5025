package compute_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"berth/internal/keystone"
	"berth/internal/pgtest"
	"berth/region/agentclient"
	"berth/region/compute"
	"berth/region/dispatch"
	"berth/region/imageclient"
	"berth/region/store"
	"berth/schema"
)

// The fuzz targets drive region's real compute handler (real PostgreSQL
// via pgtest, a test double of Keystone's token API, of imagesvc's image
// lookup and of a host agent that knows no set) with arbitrary bodies,
// content types and microversions. Every answer must be below 500 — but
// Nova's documented 501 notImplemented — and every error a Nova fault
// {"<name>": {"code", "message"}} with the name Nova uses for its status
// (A6, C1). `go test` runs the seeds; `make soak` runs them with -fuzz.

const (
	fzAgentToken = "fuzz-agent-token-0123456789"
	fzImage      = "f0220000-0000-4000-8000-000000000001"
	fzHost       = "fz-host-1"
)

var fzTokens = map[string]struct {
	project string
	roles   []string
}{
	"fz-demo":   {"fz-demo-project", []string{"member", "reader"}},
	"fz-alt":    {"fz-alt-project", []string{"member", "reader"}},
	"fz-reader": {"fz-demo-project", []string{"reader"}},
	"fz-admin":  {"fz-admin-project", []string{"admin", "member", "reader"}},
}

var fzTokenNames = []string{"fz-demo", "fz-alt", "fz-reader", "fz-admin"}

type fzEnv struct {
	h      http.Handler
	server string // a server of fz-demo-project actions aim at
}

func newFuzzEnv(tb testing.TB) *fzEnv {
	tb.Helper()
	dsn := pgtest.DSN(tb)
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	net0, err := st.EnsureDefaultNetwork(ctx, "private", "10.88.0.0/16")
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	notifier, err := dispatch.NewNotifier(dsn, log)
	if err != nil {
		tb.Fatal(err)
	}
	nctx, cancel := context.WithCancel(ctx)
	go notifier.Run(nctx)
	tb.Cleanup(func() { cancel(); notifier.Close() })

	ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, ok := fzTokens[r.Header.Get("X-Subject-Token")]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		var roles []map[string]string
		for _, r := range who.roles {
			roles = append(roles, map[string]string{"name": r})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
			"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			"user":       map[string]any{"id": "user-" + who.project, "name": "u"},
			"project":    map[string]any{"id": who.project, "name": who.project, "domain": map[string]string{"id": "default"}},
			"roles":      roles,
		}})
	}))
	tb.Cleanup(ks.Close)
	glance := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v2/images": // a snapshot's record
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(imageclient.Image{ID: "f0220000-0000-4000-8000-000000000002", Name: "snap", Status: "queued",
				ContainerFormat: "docker", DiskFormat: "raw"})
			return
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if r.URL.Path == "/v2/images/"+fzImage {
			_ = json.NewEncoder(w).Encode(imageclient.Image{ID: fzImage, Name: "fz", Status: "active",
				ContainerFormat: "docker", DiskFormat: "raw", DockerImageID: "sha256:abc"})
			return
		}
		w.WriteHeader(http.StatusNotFound)
	}))
	tb.Cleanup(glance.Close)
	// An agent that has no set: every operation is a Nova 404.
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"itemNotFound": {"code": 404, "message": "No such set."}}`)
	}))
	tb.Cleanup(agent.Close)

	agents := dispatch.NewAPI(st, notifier, fzAgentToken, log)
	h := compute.New(compute.Config{
		Store: st, Validator: keystone.NewValidator(ks.URL+"/v3", time.Hour, nil),
		Images: imageclient.New(glance.URL, nil), Agents: agentclient.New(fzAgentToken), Log: log,
		DefaultNetworkID: net0.ID, HostGrace: time.Hour,
	}, func(r *mux.Router) { agents.Register(r.PathPrefix("/internal/v1").Subrouter()) })
	e := &fzEnv{h: h}

	reg, _ := json.Marshal(schema.HostRegister{VCPUs: 1024, MemoryMB: 1 << 24, DiskGB: 1 << 20, AgentURL: agent.URL})
	if rec := e.do(http.MethodPut, "/internal/v1/hosts/"+fzHost, "", reg, map[string]string{schema.AgentTokenHeader: fzAgentToken}); rec.Code != http.StatusOK {
		tb.Fatalf("register host: %d %s", rec.Code, rec.Body)
	}
	for _, p := range []string{"fz-demo-project", "fz-alt-project"} {
		body := `{"quota_set": {"instances": 1000000, "cores": 1000000, "ram": 1000000000, "key_pairs": 1000000, "server_groups": 1000000, "server_group_members": 1000000, "metadata_items": 1000}}`
		if rec := e.do(http.MethodPut, "/v2.1/os-quota-sets/"+p, "fz-admin", []byte(body), nil); rec.Code != http.StatusOK {
			tb.Fatalf("raise quota of %s: %d %s", p, rec.Code, rec.Body)
		}
	}
	e.server = e.newServer(tb)
	return e
}

// do serves one request in process.
func (e *fzEnv) do(method, path, token string, body []byte, hdr map[string]string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r := httptest.NewRequest(method, path, rd)
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		r.Header.Set("X-Auth-Token", token)
	}
	for k, v := range hdr {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

func (e *fzEnv) newServer(tb testing.TB) string {
	tb.Helper()
	rec := e.do(http.MethodPost, "/v2.1/servers", "fz-demo", []byte(`{"server": {"name": "fz", "imageRef": "`+fzImage+`", "flavorRef": "1"}}`), nil)
	if rec.Code != http.StatusAccepted {
		tb.Fatalf("create server: %d %s", rec.Code, rec.Body)
	}
	var v struct{ Server struct{ ID string } }
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || v.Server.ID == "" {
		tb.Fatalf("create server: %v %s", err, rec.Body)
	}
	return v.Server.ID
}

// checkNova fails the test unless rec is below 500 (or Nova's 501) and, as
// an error, a Nova fault.
func checkNova(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	body := rec.Body.Bytes()
	if rec.Code >= 500 && rec.Code != http.StatusNotImplemented {
		t.Fatalf("%s: %d %s", what, rec.Code, body)
	}
	if bytes.Contains(body, []byte("goroutine ")) || bytes.Contains(body, []byte(".go:")) {
		t.Fatalf("%s: internals in the body: %s", what, body)
	}
	if !strings.HasPrefix(rec.Header().Get("X-Compute-Request-Id"), "req-") {
		t.Fatalf("%s: X-Compute-Request-Id %q", what, rec.Header().Get("X-Compute-Request-Id"))
	}
	if rec.Code < 400 {
		return
	}
	var m map[string]map[string]any
	if err := json.Unmarshal(body, &m); err != nil || len(m) != 1 {
		t.Fatalf("%s: %d with a body that is not a Nova fault: %s", what, rec.Code, body)
	}
	for name, f := range m {
		if want := novaName(rec.Code); name != want {
			t.Fatalf("%s: %d fault named %q, want %q: %s", what, rec.Code, name, want, body)
		}
		if c, _ := f["code"].(float64); int(c) != rec.Code {
			t.Fatalf("%s: fault code %v, status %d", what, f["code"], rec.Code)
		}
		if msg, _ := f["message"].(string); msg == "" {
			t.Fatalf("%s: fault without a message: %s", what, body)
		}
	}
}

func novaName(status int) string {
	names := map[int]string{400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
		405: "badMethod", 406: "notAcceptable", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
		429: "overLimit", 501: "notImplemented", 503: "serviceUnavailable"}
	if n, ok := names[status]; ok {
		return n
	}
	return "computeFault"
}

func cleanHeader(s string) string {
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return -1
		}
		return c
	}, s)
}

// FuzzServerCreate posts arbitrary bodies to POST /v2.1/servers.
func FuzzServerCreate(f *testing.F) {
	img := fzImage
	for _, s := range []string{
		`{"server": {"name": "a", "imageRef": "` + img + `", "flavorRef": "1"}}`,
		`{"server": {"name": "a", "imageRef": "` + img + `", "flavorRef": "1", "min_count": 2, "max_count": 3, "networks": "auto", "metadata": {"k": "v"}, "user_data": "aGk=", "availability_zone": "nova", "personality": [{"path": "/etc/motd", "contents": "aGk="}]}, "os:scheduler_hints": {"group": "x"}}`,
		`{"server": {"name": "a", "imageRef": "` + img + `", "flavorRef": "1", "networks": "none"}}`,
		`{"server": {"name": "a", "imageRef": "` + img + `", "flavorRef": "1", "networks": [{"uuid": "00000000-0000-0000-0000-000000000000", "fixed_ip": "10.88.0.9"}, {"port": "x"}]}}`,
		`{"server": {"name": "a", "imageRef": "` + img + `", "flavorRef": "1", "availability_zone": "nova:` + fzHost + `"}}`,
		`{"server": {"name": "a", "imageRef": "` + img + `", "flavorRef": "1", "block_device_mapping_v2": [{"boot_index": 0}]}}`,
		`{"server": {"name": "` + strings.Repeat("n", 300) + `", "imageRef": "` + img + `", "flavorRef": "1"}}`,
		`{"server": {"name": "a", "imageRef": "` + img + `", "flavorRef": "1", "min_count": 0, "max_count": 1000000}}`,
		`{"server": {"name": "a", "imageRef": "` + img + `", "flavorRef": "1", "user_data": "!!!"}}`,
		`{"server": {"name": "a", "imageRef": "` + img + `", "flavorRef": "1", "metadata": {"": "x"}}}`,
		`{"server": {"name": "a", "imageRef": 5, "flavorRef": ["1"]}}`,
		`{"server": {"name": "a", "imageRef": "` + img + `", "flavorRef": "1", "key_name": "nope"}}`,
		`{"server": {"name": "a", "imageRef": "` + img + `", "flavorRef": "1", "host": "` + fzHost + `"}}`,
		`{"server": null}`, `{}`, `[]`, `{"server": {"name": "a"`, ``,
		`{"server": {"name": "nul\u0000", "imageRef": "` + img + `", "flavorRef": "1", "metadata": {"k\u0000": "v"}}}`,
	} {
		f.Add([]byte(s), "application/json", "")
	}
	f.Add([]byte(`{"server": {"name": "a", "imageRef": "`+img+`", "flavorRef": "1"}}`), "text/plain", "")
	f.Add([]byte(`{"server": {"name": "a", "imageRef": "`+img+`", "flavorRef": "1"}}`), "application/json", "compute 2.99")
	f.Add([]byte(`{"server": {"name": "a", "imageRef": "`+img+`", "flavorRef": "1"}}`), "application/json", "compute latest")
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, body []byte, ct, mv string) {
		hdr := map[string]string{"Content-Type": cleanHeader(ct)}
		if mv != "" {
			hdr["OpenStack-API-Version"] = cleanHeader(mv)
		}
		rec := e.do(http.MethodPost, "/v2.1/servers", "fz-demo", body, hdr)
		checkNova(t, fmt.Sprintf("POST /servers %q (ct %q, mv %q)", body, ct, mv), rec)
		if rec.Code == http.StatusAccepted && !strings.Contains(rec.Header().Get("Location"), "/servers/") {
			t.Fatalf("202 without a Location: %v", rec.Header())
		}
	})
}

// FuzzServerAction posts arbitrary bodies to POST /v2.1/servers/{id}/action
// on a server an admin resets to ACTIVE before each input.
func FuzzServerAction(f *testing.F) {
	for _, s := range []string{
		`{"os-stop": null}`, `{"os-start": null}`, `{"pause": null}`, `{"unpause": null}`, `{"suspend": null}`, `{"resume": null}`,
		`{"reboot": {"type": "SOFT"}}`, `{"reboot": {"type": "sideways"}}`, `{"reboot": null}`,
		`{"lock": {"locked_reason": "x"}}`, `{"unlock": null}`,
		`{"rebuild": {"imageRef": "` + fzImage + `", "name": "b", "metadata": {"a": "b"}}}`, `{"rebuild": {"imageRef": 7}}`,
		`{"resize": {"flavorRef": "2"}}`, `{"resize": {"flavorRef": "nope"}}`, `{"confirmResize": null}`, `{"revertResize": null}`,
		`{"createImage": {"name": "snap", "metadata": {"k": "v"}}}`, `{"createImage": {}}`,
		`{"changePassword": {"adminPass": "x"}}`, `{"changePassword": {"adminPass": ""}}`,
		`{"os-getConsoleOutput": {"length": 10}}`, `{"os-getConsoleOutput": {"length": "x"}}`, `{"os-getConsoleOutput": {"length": -1}}`,
		`{"os-getSerialConsole": {"type": "serial"}}`, `{"os-getSerialConsole": {"type": "novnc"}}`,
		`{"os-resetState": {"state": "error"}}`, `{"berth-syncStatus": null}`,
		`{"berth-putFile": {"path": "/tmp/x", "contents": "aGk=", "mode": 420}}`, `{"berth-putFile": {"path": "../etc/x", "contents": "!!"}}`,
		`{"berth-getFile": {"path": "/etc/hostname"}}`, `{"berth-getFile": {"path": ""}}`,
		`{"addSecurityGroup": {"name": "default"}}`, `{"removeSecurityGroup": {"name": "nope"}}`,
		`{"migrate": null}`, `{"evacuate": {"host": "x"}}`, `{"shelve": null}`, `{"forceDelete": null}`,
		`{"nosuch": null}`, `{"os-stop": null, "os-start": null}`, `{}`, `null`, `[]`, ``,
	} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(`{"os-stop": null}`), "compute 2.99")
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, body []byte, mv string) {
		reset := e.do(http.MethodPost, "/v2.1/servers/"+e.server+"/action", "fz-admin", []byte(`{"os-resetState": {"state": "active"}}`), nil)
		if reset.Code == http.StatusNotFound { // deleted by a forceDelete: make another
			e.server = e.newServer(t)
		}
		e.do(http.MethodPost, "/v2.1/servers/"+e.server+"/action", "fz-admin", []byte(`{"unlock": null}`), nil)
		hdr := map[string]string{}
		if mv != "" {
			hdr["X-OpenStack-Nova-API-Version"] = cleanHeader(mv)
		}
		rec := e.do(http.MethodPost, "/v2.1/servers/"+e.server+"/action", "fz-demo", body, hdr)
		checkNova(t, fmt.Sprintf("POST /servers/{id}/action %q (mv %q)", body, mv), rec)
	})
}

// fzRoutes are the other compute endpoints that read a body.
var fzRoutes = []struct{ method, path string }{
	{http.MethodPut, "/v2.1/servers/{server}"},
	{http.MethodPut, "/v2.1/servers/{server}/metadata"},
	{http.MethodPost, "/v2.1/servers/{server}/metadata"},
	{http.MethodPut, "/v2.1/servers/{server}/metadata/k"},
	{http.MethodPost, "/v2.1/servers/{server}/remote-consoles"},
	{http.MethodPost, "/v2.1/os-keypairs"},
	{http.MethodPost, "/v2.1/os-server-groups"},
	{http.MethodPost, "/v2.1/flavors"},
	{http.MethodPost, "/v2.1/flavors/1/action"},
	{http.MethodPost, "/v2.1/flavors/1/os-extra_specs"},
	{http.MethodPut, "/v2.1/flavors/1/os-extra_specs/k"},
	{http.MethodPut, "/v2.1/os-quota-sets/fz-alt-project"},
	{http.MethodPut, "/v2.1/os-services/disable-log-reason"},
	{http.MethodPut, "/v2.1/os-services/force-down"},
	{http.MethodPost, "/v2.1/berth-sets"},
	{http.MethodPost, "/v2.1/os-security-groups"},
	{http.MethodPost, "/v2.1/os-security-group-rules"},
}

// FuzzComputeBodies sends arbitrary bodies, as any of four users, to every
// other compute endpoint that decodes one.
func FuzzComputeBodies(f *testing.F) {
	seeds := []string{
		`{"server": {"name": "x", "accessIPv4": "1.2.3.4", "accessIPv6": "::1"}}`,
		`{"metadata": {"a": "1"}}`, `{"metadata": {"a": "1"}}`, `{"meta": {"k": "v"}}`,
		`{"remote_console": {"protocol": "serial", "type": "serial"}}`,
		`{"keypair": {"name": "kp", "type": "ssh"}}`,
		`{"server_group": {"name": "g", "policies": ["anti-affinity"]}}`,
		`{"flavor": {"name": "fzf", "ram": 64, "vcpus": 1, "disk": 1, "id": "fzf", "os-flavor-access:is_public": false}}`,
		`{"addTenantAccess": {"tenant": "fz-alt-project"}}`,
		`{"extra_specs": {"quota:vif_inbound_average": "100", "berth:net_raw": "true"}}`,
		`{"k": "v"}`,
		`{"quota_set": {"instances": 5, "force": true}}`,
		`{"host": "` + fzHost + `", "binary": "nova-compute", "disabled_reason": "x"}`,
		`{"host": "` + fzHost + `", "binary": "nova-compute", "forced_down": false}`,
		`{"set": {"name": "s", "flavorRef": "1", "networks": "auto", "metadata": {"a": "b"}, "containers": [{"name": "app", "image": "` + fzImage + `", "role": "app", "command": ["httpd", "-f"], "env": {"A": "1"}, "volumes": [{"name": "v", "path": "/data"}], "limits": {"vcpus": 0.5, "memory_mb": 64}, "restart": "always", "health": {"tcp_port": 80, "interval_seconds": 5}}, {"name": "side", "image": "` + fzImage + `", "role": "sidecar", "volumes": [{"name": "v", "path": "/data", "read_only": true}]}]}}`,
	}
	for i, s := range seeds {
		for tok := range 4 {
			f.Add(uint8(i), []byte(s), "application/json", uint8(tok))
		}
	}
	f.Add(uint8(5), []byte(`{"keypair": {"name": "kp2", "public_key": "ssh-rsa AAAA x"}}`), "application/json", uint8(0))
	f.Add(uint8(5), []byte(`{"keypair": {"name": "`+strings.Repeat("k", 300)+`"}}`), "application/json", uint8(0))
	f.Add(uint8(6), []byte(`{"server_group": {"name": "g", "policy": "soft-affinity", "rules": {"max_server_per_host": 1}}}`), "application/json", uint8(0))
	f.Add(uint8(2), []byte(`{"metadata": {"`+strings.Repeat("k", 300)+`": "v"}}`), "application/json", uint8(0))
	f.Add(uint8(15), []byte(`{"security_group": {"name": "g", "description": "d"}}`), "application/json", uint8(0))
	f.Add(uint8(16), []byte(`{"security_group_rule": {"parent_group_id": "00000000-0000-0000-0000-000000000000", "ip_protocol": "tcp", "from_port": 22, "to_port": "23", "cidr": "10.0.0.0/8"}}`), "application/json", uint8(0))
	f.Add(uint8(16), []byte(`{"security_group_rule": {"parent_group_id": "x", "ip_protocol": "icmp", "from_port": -1, "to_port": 300, "cidr": "10.0.0.0/99"}}`), "application/json", uint8(0))
	for _, set := range []string{
		`{"set": {"name": "s", "flavorRef": "1", "containers": [{"name": "infra", "image": "` + fzImage + `"}]}}`,
		`{"set": {"name": "s", "flavorRef": "1", "containers": [{"name": "a", "image": "` + fzImage + `", "volumes": [{"name": "v", "path": "/proc/x"}]}]}}`,
		`{"set": {"name": "s", "flavorRef": "1", "containers": [{"name": "a", "image": "` + fzImage + `", "volumes": [{"name": "../v", "path": "/"}]}]}}`,
		`{"set": {"name": "s", "flavorRef": "1", "containers": [{"name": "a", "image": "` + fzImage + `", "role": "privileged"}]}}`,
		`{"set": {"name": "s", "flavorRef": "1", "containers": [{"name": "a", "image": "` + fzImage + `", "limits": {"vcpus": -1, "memory_mb": 1e12}}]}}`,
		`{"set": {"name": "s", "flavorRef": "1", "containers": [{"name": "a", "image": "` + fzImage + `", "privileged": true}]}}`,
		`{"set": {"name": "s", "flavorRef": "1", "containers": []}}`,
		`{"set": {"name": "s", "flavorRef": "1", "containers": [{"name": "a", "image": "nope"}]}}`,
	} {
		f.Add(uint8(14), []byte(set), "application/json", uint8(0))
	}
	// NUL is valid JSON text but not PostgreSQL text.
	f.Add(uint8(5), []byte(`{"keypair": {"name": "kp\u0000"}}`), "application/json", uint8(0))
	f.Add(uint8(0), []byte(`{"server": {"name": "x\u0000"}}`), "application/json", uint8(0))
	f.Add(uint8(6), []byte(`{"server_group": {"name": "g\u0000", "policies": ["affinity"]}}`), "application/json", uint8(0))
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, route uint8, body []byte, ct string, tok uint8) {
		rt := fzRoutes[int(route)%len(fzRoutes)]
		path := strings.ReplaceAll(rt.path, "{server}", e.server)
		who := fzTokenNames[int(tok)%len(fzTokenNames)]
		hdr := map[string]string{"Content-Type": cleanHeader(ct), "OpenStack-API-Version": "compute 2.15"}
		rec := e.do(rt.method, path, who, body, hdr)
		checkNova(t, fmt.Sprintf("%s %s as %s: %q (ct %q)", rt.method, rt.path, who, body, ct), rec)
		// Never let the fuzz lose its server or its host.
		if rt.path == "/v2.1/os-services/disable-log-reason" || rt.path == "/v2.1/os-services/force-down" {
			e.do(http.MethodPut, "/v2.1/os-services/enable", "fz-admin", []byte(`{"host": "`+fzHost+`", "binary": "nova-compute"}`), nil)
			e.do(http.MethodPut, "/v2.1/os-services/force-down", "fz-admin", []byte(`{"host": "`+fzHost+`", "binary": "nova-compute", "forced_down": false}`),
				map[string]string{"OpenStack-API-Version": "compute 2.11"})
		}
	})
}
