package api_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// glanceError checks r is a Glance error body with status.
func glanceError(t *testing.T, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("got %d %s, want %d", r.status, r.body, status)
	}
	m := r.json(t)
	wantCode := strconv.Itoa(status) + " " + http.StatusText(status)
	if m["code"] != wantCode || m["title"] != http.StatusText(status) || m["message"] == "" {
		t.Errorf("error body: got %s, want code %q title %q and a message", r.body, wantCode, http.StatusText(status))
	}
	if !strings.HasPrefix(r.header.Get("X-Openstack-Request-Id"), "req-") {
		t.Errorf("no request id on an error response: %v", r.header)
	}
	if strings.Contains(string(r.body), "goroutine") || strings.Contains(string(r.body), ".go:") {
		t.Errorf("error body leaks internals: %s", r.body)
	}
}

func TestVisibilityAndOwnership(t *testing.T) {
	e := newEnv(t)
	p1 := e.ks.Issue("p1", "member")
	p2 := e.ks.Issue("p2", "member")
	admin := e.ks.Issue("adminproject", "admin", "member")

	private := e.create(p1, `{"name": "p1-private", "visibility": "private"}`)["id"].(string)
	shared := e.create(p1, `{"name": "p1-shared"}`)["id"].(string)
	community := e.create(p1, `{"name": "p1-community", "visibility": "community"}`)["id"].(string)

	for _, id := range []string{private, shared} {
		glanceError(t, e.do("GET", "/v2/images/"+id, p2, nil), 404)
		glanceError(t, e.do("DELETE", "/v2/images/"+id, p2, nil), 404)
		glanceError(t, e.do("PATCH", "/v2/images/"+id, p2, []byte(`[{"op":"replace","path":"/name","value":"x"}]`),
			"Content-Type", "application/openstack-images-v2.1-json-patch"), 404)
		glanceError(t, e.do("PUT", "/v2/images/"+id+"/file", p2, []byte("x"), "Content-Type", "application/octet-stream"), 404)
		glanceError(t, e.do("GET", "/v2/images/"+id+"/file", p2, nil), 404)
	}
	if r := e.do("GET", "/v2/images/"+community, p2, nil); r.status != 200 {
		t.Errorf("community image for another project: got %d, want 200", r.status)
	}
	// Seen but not owned: 403 on change.
	glanceError(t, e.do("DELETE", "/v2/images/"+community, p2, nil), 403)

	list := e.do("GET", "/v2/images", p2, nil)
	if strings.Contains(string(list.body), "p1-") {
		t.Errorf("p2's default list shows p1's images: %s", list.body)
	}
	list = e.do("GET", "/v2/images?visibility=community", p2, nil)
	if !strings.Contains(string(list.body), "p1-community") {
		t.Errorf("p2's community list lacks p1's community image: %s", list.body)
	}

	// Public needs admin.
	glanceError(t, e.do("POST", "/v2/images", p1, []byte(`{"name": "pub", "visibility": "public"}`), "Content-Type", "application/json"), 403)
	glanceError(t, e.do("PATCH", "/v2/images/"+private, p1, []byte(`[{"op":"replace","path":"/visibility","value":"public"}]`),
		"Content-Type", "application/openstack-images-v2.1-json-patch"), 403)
	public := e.create(admin, `{"name": "admin-public", "visibility": "public"}`)["id"].(string)
	if r := e.do("GET", "/v2/images/"+public, p2, nil); r.status != 200 {
		t.Errorf("public image for p2: got %d", r.status)
	}
	glanceError(t, e.do("PATCH", "/v2/images/"+public, p2, []byte(`[{"op":"replace","path":"/name","value":"mine"}]`),
		"Content-Type", "application/openstack-images-v2.1-json-patch"), 403)

	// Admin sees and changes everything.
	if r := e.do("GET", "/v2/images/"+private, admin, nil); r.status != 200 {
		t.Errorf("admin GET of p1's private image: got %d", r.status)
	}
	if r := e.do("GET", "/v2/images", admin, nil); !strings.Contains(string(r.body), "p1-private") {
		t.Errorf("admin list lacks p1's private image")
	}
	// Owner: a member cannot create for another project.
	glanceError(t, e.do("POST", "/v2/images", p1, []byte(`{"name": "x", "owner": "p2"}`), "Content-Type", "application/json"), 403)
	if r := e.do("POST", "/v2/images", admin, []byte(`{"name": "for-p2", "owner": "p2", "visibility": "private"}`), "Content-Type", "application/json"); r.status != 201 {
		t.Errorf("admin creating for p2: got %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v2/images?visibility=private", p2, nil); !strings.Contains(string(r.body), "for-p2") {
		t.Errorf("p2 does not see the image admin made for it: %s", r.body)
	}
}

func TestReaderCannotWrite(t *testing.T) {
	e := newEnv(t)
	member := e.ks.Issue("p1", "member", "reader")
	reader := e.ks.Issue("p1", "reader")
	id := e.create(member, `{"name": "img", "container_format": "bare", "disk_format": "raw"}`)["id"].(string)

	glanceError(t, e.do("POST", "/v2/images", reader, []byte(`{"name": "r"}`), "Content-Type", "application/json"), 403)
	glanceError(t, e.do("PATCH", "/v2/images/"+id, reader, []byte(`[{"op":"replace","path":"/name","value":"x"}]`),
		"Content-Type", "application/openstack-images-v2.1-json-patch"), 403)
	glanceError(t, e.do("PUT", "/v2/images/"+id+"/file", reader, []byte("x"), "Content-Type", "application/octet-stream"), 403)
	glanceError(t, e.do("PUT", "/v2/images/"+id+"/tags/t", reader, nil), 403)
	glanceError(t, e.do("DELETE", "/v2/images/"+id, reader, nil), 403)
	if r := e.do("GET", "/v2/images/"+id, reader, nil); r.status != 200 {
		t.Errorf("reader GET: got %d", r.status)
	}
	if r := e.do("GET", "/v2/images", reader, nil); r.status != 200 || !strings.Contains(string(r.body), id) {
		t.Errorf("reader list: got %d %s", r.status, r.body)
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	for _, tc := range []struct{ name, token string }{{"missing", ""}, {"garbage", "not-a-token"}} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("GET", "/v2/images", tc.token, nil)
			glanceError(t, r, 401)
			if got, want := r.header.Get("WWW-Authenticate"), `Keystone uri="`+e.ks.URL()+`"`; got != want {
				t.Errorf("WWW-Authenticate: got %q, want %q", got, want)
			}
		})
	}
	t.Run("revoked", func(t *testing.T) {
		tok := e.ks.Issue("p1", "member")
		if r := e.do("GET", "/v2/images", tok, nil); r.status != 200 {
			t.Fatalf("got %d", r.status)
		}
		e.ks.Revoke(tok)
		glanceError(t, e.do("GET", "/v2/images", tok, nil), 401) // cache TTL is 0 in tests
	})
	t.Run("client identity headers are ignored", func(t *testing.T) {
		r := e.do("POST", "/v2/images", tok, []byte(`{"name": "x", "visibility": "public"}`),
			"Content-Type", "application/json", "X-Roles", "admin", "X-Project-Id", "p2", "X-Is-Admin-Project", "True")
		glanceError(t, r, 403)
	})
	t.Run("versions need no token", func(t *testing.T) {
		if r := e.do("GET", "/versions", "", nil); r.status != 200 {
			t.Errorf("GET /versions: got %d", r.status)
		}
	})
	t.Run("keystone unreachable", func(t *testing.T) {
		e.ks.Close()
		glanceError(t, e.do("GET", "/v2/images", e.ks.Issue("p1", "member"), nil), 503)
	})
}

func TestVersions(t *testing.T) {
	e := newEnv(t)
	for path, status := range map[string]int{"/": 300, "/versions": 200} {
		r := e.do("GET", path, "", nil)
		if r.status != status {
			t.Errorf("GET %s: got %d, want %d", path, r.status, status)
			continue
		}
		vs := r.json(t)["versions"].([]any)
		first := vs[0].(map[string]any)
		last := vs[len(vs)-1].(map[string]any)
		link := first["links"].([]any)[0].(map[string]any)
		if first["id"] != "v2.16" || first["status"] != "CURRENT" || last["id"] != "v2.0" || last["status"] != "SUPPORTED" {
			t.Errorf("GET %s: versions from %v to %v", path, first, last)
		}
		if link["rel"] != "self" || link["href"] != e.srv.URL+"/v2/" {
			t.Errorf("GET %s: link %v, want self %s/v2/", path, link, e.srv.URL)
		}
	}
}

func TestInternalEndpoints(t *testing.T) {
	e := newEnv(t)
	p1 := e.ks.Issue("p1", "member")
	id := e.create(p1, `{"name": "private", "visibility": "private", "container_format": "bare", "disk_format": "raw"}`)["id"].(string)
	if r := e.do("PUT", "/v2/images/"+id+"/file", p1, []byte("payload"), "Content-Type", "application/octet-stream"); r.status != 204 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	for _, tc := range []struct {
		name, token string
		status      int
	}{{"no token", "", 401}, {"wrong token", "agent-secret-for-test", 401}, {"keystone token is not enough", p1, 401}} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := []string{}
			if tc.token != "" {
				hdr = []string{"X-Berth-Agent-Token", tc.token}
			}
			glanceError(t, e.do("GET", "/internal/v1/images/"+id, "", nil, hdr...), tc.status)
			glanceError(t, e.do("GET", "/internal/v1/images/"+id+"/file", "", nil, hdr...), tc.status)
		})
	}
	r := e.do("GET", "/internal/v1/images/"+id, "", nil, "X-Berth-Agent-Token", agentToken)
	if r.status != 200 || r.json(t)["id"] != id || r.json(t)["status"] != "active" {
		t.Errorf("internal show: %d %s", r.status, r.body)
	}
	r = e.do("GET", "/internal/v1/images/"+id+"/file", "", nil, "X-Berth-Agent-Token", agentToken)
	if r.status != 200 || string(r.body) != "payload" || r.header.Get("Content-Length") != "7" || r.header.Get("Content-MD5") == "" {
		t.Errorf("internal file: %d %q %v", r.status, r.body, r.header)
	}
	glanceError(t, e.do("GET", "/internal/v1/images/00000000-0000-0000-0000-000000000000", "", nil, "X-Berth-Agent-Token", agentToken), 404)
}
