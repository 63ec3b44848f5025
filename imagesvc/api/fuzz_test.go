package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"berth/imagesvc/dockerarchive/archivetest"
)

// The fuzz targets drive imagesvc's real Glance handler (real PostgreSQL
// via pgtest, a temp blob store, a test double of Keystone) with arbitrary
// bodies. Every answer is below 500 and every error Glance's fault
// {"message", "code": "NNN Reason", "title"} (A6, C1). `go test` runs the
// seeds; `make soak` runs them with -fuzz.

// fzGlanceFault fails unless r is below 500 and, as an error, a Glance fault.
func fzGlanceFault(t *testing.T, what string, r response) {
	t.Helper()
	if r.status >= 500 {
		t.Fatalf("%s: %d %s", what, r.status, r.body)
	}
	if r.status < 400 {
		return
	}
	var f struct {
		Message *string `json:"message"`
		Code    *string `json:"code"`
		Title   *string `json:"title"`
	}
	if err := json.Unmarshal(r.body, &f); err != nil || f.Message == nil || f.Code == nil || f.Title == nil ||
		!strings.HasPrefix(*f.Code, fmt.Sprint(r.status)+" ") {
		t.Fatalf("%s: %d with a body that is not a Glance fault: %s", what, r.status, r.body)
	}
}

var fzImageRoutes = []struct{ method, path, ct string }{
	{http.MethodPost, "/v2/images", "application/json"},
	{http.MethodPatch, "/v2/images/{image}", "application/openstack-images-v2.1-json-patch"},
	{http.MethodPatch, "/v2/images/{image}", "application/openstack-images-v2.0-json-patch"},
	{http.MethodPost, "/v2/images/{image}/members", "application/json"},
	{http.MethodPut, "/v2/images/{image}/members/alt-project", "application/json"},
	{http.MethodPost, "/v2/images/{image}/import", "application/json"},
}

// FuzzImageBodies sends arbitrary bodies to every Glance endpoint that
// decodes JSON, as the image's owner or as another project's member.
func FuzzImageBodies(f *testing.F) {
	seeds := []string{
		`{"name": "i", "container_format": "docker", "disk_format": "raw", "visibility": "shared", "min_ram": 1, "min_disk": 1, "protected": false, "tags": ["a", "b"], "os_hidden": false, "custom": "x", "id": "f0220000-0000-4000-8000-00000000000a"}`,
		`[{"op": "replace", "path": "/name", "value": "n"}, {"op": "add", "path": "/prop", "value": "v"}, {"op": "remove", "path": "/prop"}, {"op": "add", "path": "/tags/-", "value": "t"}]`,
		`[{"replace": "/name", "value": "n"}, {"add": "/p", "value": "v"}]`,
		`{"member": "alt-project"}`,
		`{"status": "accepted"}`,
		`{"method": {"name": "glance-direct"}, "stores": ["berth"], "all_stores_must_succeed": true}`,
	}
	for i, s := range seeds {
		for who := range 2 {
			f.Add(uint8(i), []byte(s), uint8(who))
		}
	}
	for i, s := range []string{
		`{"name": "` + strings.Repeat("n", 300) + `"}`, `{"visibility": "public"}`, `{"min_ram": -1}`, `{"min_ram": 1e400}`,
		`{"tags": ["` + strings.Repeat("t", 300) + `"]}`, `{"container_format": "nope"}`, `{"status": "active"}`, `{"checksum": "x"}`,
		`{"owner": "someone-else"}`, `{"locations": []}`, `{"os_hash_value": "x"}`, `{"size": 5}`,
	} {
		f.Add(uint8(0), []byte(s), uint8(i%2))
	}
	for _, s := range []string{
		`[{"op": "replace", "path": "/id", "value": "x"}]`, `[{"op": "replace", "path": "/status", "value": "active"}]`,
		`[{"op": "add", "path": "/~1bad~", "value": "x"}]`, `[{"op": "move", "path": "/name", "from": "/x"}]`,
		`[{"op": "replace", "path": "/visibility", "value": "public"}]`, `[{"op": "replace", "path": "/owner", "value": "x"}]`,
		`[{"op": "replace", "path": "/min_disk", "value": "x"}]`, `[{"op": "remove", "path": "/name"}]`,
		`[{"op": "replace", "path": "", "value": {}}]`, `[{"op": "replace", "path": "/tags", "value": "notalist"}]`,
		`[]`, `{}`, `[1]`, `[null]`,
	} {
		f.Add(uint8(1), []byte(s), uint8(0))
	}
	e := newEnv(f)
	owner := e.ks.Issue("demo-project", "member", "reader")
	other := e.ks.Issue("alt-project", "member", "reader")
	img := e.create(owner, `{"name": "fz", "container_format": "docker", "disk_format": "raw", "visibility": "shared"}`)["id"].(string)
	f.Fuzz(func(t *testing.T, route uint8, body []byte, who uint8) {
		rt := fzImageRoutes[int(route)%len(fzImageRoutes)]
		tok := []string{owner, other}[int(who)%2]
		r := fzDo(t, e, rt.method, strings.ReplaceAll(rt.path, "{image}", img), tok, body, rt.ct)
		fzGlanceFault(t, fmt.Sprintf("%s %s as %d: %q", rt.method, rt.path, who%2, body), r)
	})
}

// FuzzImageUpload uploads arbitrary bytes as the data of a docker image
// (PUT /v2/images/{id}/file): the answer is 204, or a client error (400 for
// a bad archive) after which the image is still queued with no data, as
// Glance leaves a failed upload.
func FuzzImageUpload(f *testing.F) {
	base := archivetest.LayerTar(map[string]string{"etc/os-release": "ID=fuzz\n"})
	for _, layout := range []archivetest.Layout{archivetest.Legacy, archivetest.OCI, archivetest.OCIGzip} {
		a := archivetest.Build(layout, "fz/up:1", base).Data
		f.Add(a)
		f.Add(a[:len(a)/2])
		b := bytes.Clone(a)
		b[len(b)/2] ^= 0x55
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte("not a tar"))
	e := newEnv(f)
	owner := e.ks.Issue("demo-project", "member", "reader")
	f.Fuzz(func(t *testing.T, data []byte) {
		cr := fzDo(t, e, http.MethodPost, "/v2/images", owner, []byte(`{"name": "up", "container_format": "docker", "disk_format": "raw"}`), "application/json")
		if cr.status != http.StatusCreated {
			t.Fatalf("create: %d %s", cr.status, cr.body)
		}
		img := cr.json(t)["id"].(string)
		r := fzDo(t, e, http.MethodPut, "/v2/images/"+img+"/file", owner, data, "application/octet-stream")
		fzGlanceFault(t, fmt.Sprintf("upload of %d bytes", len(data)), r)
		got := fzDo(t, e, http.MethodGet, "/v2/images/"+img, owner, nil, "").json(t)
		if r.status == http.StatusNoContent {
			if got["status"] != "active" {
				t.Fatalf("after a 204 upload the image is %v, want active", got["status"])
			}
		} else if got["status"] != "queued" || got["size"] != nil || got["checksum"] != nil {
			t.Fatalf("after a failed upload (%d %s) the image is %v size %v checksum %v, want queued with no data",
				r.status, r.body, got["status"], got["size"], got["checksum"])
		}
		fzDo(t, e, http.MethodDelete, "/v2/images/"+img, owner, nil, "")
	})
}

// fzDo is env.do for use inside a fuzz function (which must not call
// the *testing.F env holds).
func fzDo(t *testing.T, e *env, method, path, token string, body []byte, ct string) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", token)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}
