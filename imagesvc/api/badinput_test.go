package api_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"berth/imagesvc/api"
	"berth/internal/keystone"
)

const (
	jsonCT  = "application/json"
	patchCT = "application/openstack-images-v2.1-json-patch"
)

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	queued := e.create(tok, `{"name": "q", "container_format": "bare", "disk_format": "raw", "prop": "v"}`)["id"].(string)
	active := e.create(tok, `{"name": "a", "container_format": "bare", "disk_format": "raw", "protected": true}`)["id"].(string)
	if r := e.do("PUT", "/v2/images/"+active+"/file", tok, []byte("data"), "Content-Type", "application/octet-stream"); r.status != 204 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	noFormats := e.create(tok, `{"name": "nf"}`)["id"].(string)
	other := e.create(e.ks.Issue("p2", "member"), `{"name": "p2-private", "visibility": "private"}`)["id"].(string)
	unknown := "6c4a3b2d-0000-4000-8000-000000000000"

	for _, tc := range []struct {
		name, method, path, ct, body string
		status                       int
		header                       string // a response header that must be set
	}{
		{"create/malformed JSON", "POST", "/v2/images", jsonCT, `{"name": `, 400, ""},
		{"create/trailing garbage", "POST", "/v2/images", jsonCT, `{"name": "x"} {}`, 400, ""},
		{"create/not an object", "POST", "/v2/images", jsonCT, `["name"]`, 400, ""},
		{"create/null body", "POST", "/v2/images", jsonCT, `null`, 400, ""},
		{"create/empty body", "POST", "/v2/images", jsonCT, ``, 400, ""},
		{"create/name not a string", "POST", "/v2/images", jsonCT, `{"name": 7}`, 400, ""},
		{"create/name too long", "POST", "/v2/images", jsonCT, `{"name": "` + strings.Repeat("n", 256) + `"}`, 400, ""},
		{"create/min_disk not an integer", "POST", "/v2/images", jsonCT, `{"min_disk": "ten"}`, 400, ""},
		{"create/min_ram fractional", "POST", "/v2/images", jsonCT, `{"min_ram": 1.5}`, 400, ""},
		{"create/min_disk negative", "POST", "/v2/images", jsonCT, `{"min_disk": -1}`, 400, ""},
		{"create/protected not a boolean", "POST", "/v2/images", jsonCT, `{"protected": "yes"}`, 400, ""},
		{"create/tags not a list", "POST", "/v2/images", jsonCT, `{"tags": "a,b"}`, 400, ""},
		{"create/property not a string", "POST", "/v2/images", jsonCT, `{"hw_cpu_cores": 4}`, 400, ""},
		{"create/property null", "POST", "/v2/images", jsonCT, `{"hw_cpu_cores": null}`, 400, ""},
		{"create/bad visibility", "POST", "/v2/images", jsonCT, `{"visibility": "everyone"}`, 400, ""},
		{"create/bad container_format", "POST", "/v2/images", jsonCT, `{"container_format": "zip"}`, 400, ""},
		{"create/bad disk_format", "POST", "/v2/images", jsonCT, `{"disk_format": "exe"}`, 400, ""},
		{"create/bad id", "POST", "/v2/images", jsonCT, `{"id": "not-a-uuid"}`, 400, ""},
		{"create/duplicate id", "POST", "/v2/images", jsonCT, `{"id": "` + queued + `"}`, 409, ""},
		{"create/read-only status", "POST", "/v2/images", jsonCT, `{"status": "active"}`, 403, ""},
		{"create/read-only self", "POST", "/v2/images", jsonCT, `{"self": "/x"}`, 403, ""},
		{"create/read-only checksum", "POST", "/v2/images", jsonCT, `{"checksum": "abc"}`, 403, ""},
		{"create/reserved deleted", "POST", "/v2/images", jsonCT, `{"deleted": "true"}`, 403, ""},
		{"create/reserved namespace", "POST", "/v2/images", jsonCT, `{"os_glance_import_task": "x"}`, 403, ""},
		{"create/wrong content type", "POST", "/v2/images", "text/plain", `{"name": "x"}`, 415, ""},
		{"create/too many tags", "POST", "/v2/images", jsonCT, `{"tags": [` + manyTags(129) + `]}`, 413, ""},
		{"create/huge body", "POST", "/v2/images", jsonCT, `{"name": "` + strings.Repeat("x", 1<<20) + `"}`, 413, ""},

		{"show/unknown image", "GET", "/v2/images/" + unknown, "", "", 404, ""},
		{"show/not a uuid", "GET", "/v2/images/nope", "", "", 404, ""},
		{"show/other project's private image", "GET", "/v2/images/" + other, "", "", 404, ""},
		{"unknown path", "GET", "/v2/nothing", "", "", 404, ""},
		{"wrong method", "POST", "/v2/images/" + queued, jsonCT, `{}`, 405, ""},

		{"list/bad limit", "GET", "/v2/images?limit=many", "", "", 400, ""},
		{"list/negative limit", "GET", "/v2/images?limit=-1", "", "", 400, ""},
		{"list/bad sort key", "GET", "/v2/images?sort_key=owner", "", "", 400, ""},
		{"list/bad sort dir", "GET", "/v2/images?sort_dir=up", "", "", 400, ""},
		{"list/mixed sort syntax", "GET", "/v2/images?sort=name:asc&sort_key=name", "", "", 400, ""},
		{"list/unknown marker", "GET", "/v2/images?marker=" + unknown, "", "", 400, ""},
		{"list/other project's marker", "GET", "/v2/images?marker=" + other, "", "", 400, ""},
		{"list/bad visibility", "GET", "/v2/images?visibility=everyone", "", "", 400, ""},
		{"list/bad os_hidden", "GET", "/v2/images?os_hidden=maybe", "", "", 400, ""},
		{"list/changes-since", "GET", "/v2/images?changes-since=2020-01-01", "", "", 400, ""},

		{"patch/wrong content type", "PATCH", "/v2/images/" + queued, jsonCT, `[]`, 415, "Accept-Patch"},
		{"patch/malformed JSON", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": `, 400, ""},
		{"patch/not a list", "PATCH", "/v2/images/" + queued, patchCT, `{"op": "replace"}`, 400, ""},
		{"patch/op not an object", "PATCH", "/v2/images/" + queued, patchCT, `["replace"]`, 400, ""},
		{"patch/missing op", "PATCH", "/v2/images/" + queued, patchCT, `[{"path": "/name", "value": "x"}]`, 400, ""},
		{"patch/bad op", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": "move", "path": "/name", "value": "x"}]`, 400, ""},
		{"patch/missing value", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": "replace", "path": "/name"}]`, 400, ""},
		{"patch/bad pointer", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": "replace", "path": "name", "value": "x"}]`, 400, ""},
		{"patch/deep pointer", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": "add", "path": "/tags/-", "value": "x"}]`, 400, ""},
		{"patch/wrong type", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": "replace", "path": "/min_ram", "value": "lots"}]`, 400, ""},
		{"patch/read-only", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": "replace", "path": "/status", "value": "active"}]`, 403, ""},
		{"patch/id is read-only", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": "replace", "path": "/id", "value": "` + unknown + `"}]`, 403, ""},
		{"patch/remove base attribute", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": "remove", "path": "/name"}]`, 403, ""},
		{"patch/replace missing property", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": "replace", "path": "/nope", "value": "x"}]`, 409, ""},
		{"patch/remove missing property", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": "remove", "path": "/nope"}]`, 409, ""},
		{"patch/owner by non-admin", "PATCH", "/v2/images/" + queued, patchCT, `[{"op": "replace", "path": "/owner", "value": "p2"}]`, 403, ""},
		{"patch/disk_format of active image", "PATCH", "/v2/images/" + active, patchCT, `[{"op": "replace", "path": "/disk_format", "value": "qcow2"}]`, 403, ""},
		{"patch/unknown image", "PATCH", "/v2/images/" + unknown, patchCT, `[{"op": "replace", "path": "/name", "value": "x"}]`, 404, ""},

		{"upload/wrong content type", "PUT", "/v2/images/" + queued + "/file", jsonCT, `{}`, 415, ""},
		{"upload/no content type", "PUT", "/v2/images/" + queued + "/file", "", `data`, 415, ""},
		{"upload/to an active image", "PUT", "/v2/images/" + active + "/file", "application/octet-stream", `more`, 409, ""},
		{"upload/no formats set", "PUT", "/v2/images/" + noFormats + "/file", "application/octet-stream", `data`, 400, ""},
		{"upload/unknown image", "PUT", "/v2/images/" + unknown + "/file", "application/octet-stream", `data`, 404, ""},

		{"delete/protected", "DELETE", "/v2/images/" + active, "", "", 403, ""},
		{"delete/unknown", "DELETE", "/v2/images/" + unknown, "", "", 404, ""},
		{"tags/delete missing tag", "DELETE", "/v2/images/" + queued + "/tags/none", "", "", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := []string{}
			if tc.ct != "" {
				hdr = []string{"Content-Type", tc.ct}
			}
			var body []byte
			if tc.method != "GET" && tc.method != "DELETE" {
				body = []byte(tc.body)
			}
			r := e.do(tc.method, tc.path, tok, body, hdr...)
			glanceError(t, r, tc.status)
			if tc.header != "" && r.header.Get(tc.header) == "" {
				t.Errorf("response lacks %s", tc.header)
			}
		})
	}

	// Nothing above changed the images.
	q := e.do("GET", "/v2/images/"+queued, tok, nil).json(t)
	if q["name"] != "q" || q["status"] != "queued" || q["prop"] != "v" {
		t.Errorf("queued image changed: %v", q)
	}
	a := e.do("GET", "/v2/images/"+active, tok, nil).json(t)
	if a["status"] != "active" || a["disk_format"] != "raw" || a["size"] != float64(4) {
		t.Errorf("active image changed: %v", a)
	}
}

func manyTags(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"t` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `"`)
	}
	return b.String()
}

// TestPanicIsAGlance500 runs the API with no store, so handlers panic.
func TestPanicIsAGlance500(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewServer(api.New(api.Config{
		Validator: keystone.NewValidator(e.ks.URL(), 0, nil),
		Logger:    slog.New(slog.DiscardHandler),
	}).Handler())
	defer srv.Close()
	e2 := &env{t: t, srv: srv}
	r := e2.do("GET", "/v2/images/"+"6c4a3b2d-0000-4000-8000-000000000000", e.ks.Issue("p1", "member"), nil)
	glanceError(t, r, http.StatusInternalServerError)
	if strings.Contains(string(r.body), "nil pointer") {
		t.Errorf("500 body shows the panic: %s", r.body)
	}
}

func TestPatchDraft4AndTags(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	id := e.create(tok, `{"name": "d4", "tags": ["a"]}`)["id"].(string)
	r := e.do("PATCH", "/v2/images/"+id, tok, []byte(`[{"replace": "/name", "value": "renamed"}, {"add": "/os_distro", "value": "debian"}]`),
		"Content-Type", "application/openstack-images-v2.0-json-patch")
	if r.status != 200 || r.json(t)["name"] != "renamed" || r.json(t)["os_distro"] != "debian" {
		t.Fatalf("draft-4 patch: %d %s", r.status, r.body)
	}
	if r := e.do("PUT", "/v2/images/"+id+"/tags/b", tok, nil); r.status != 204 {
		t.Fatalf("add tag: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/v2/images/"+id+"/tags/a", tok, nil); r.status != 204 {
		t.Fatalf("delete tag: %d %s", r.status, r.body)
	}
	tags := e.do("GET", "/v2/images/"+id, tok, nil).json(t)["tags"].([]any)
	if len(tags) != 1 || tags[0] != "b" {
		t.Errorf("tags: got %v, want [b]", tags)
	}
}

func TestSchemas(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "reader")
	img := e.do("GET", "/v2/schemas/image", tok, nil).json(t)
	if img["name"] != "image" || img["additionalProperties"].(map[string]any)["type"] != "string" {
		t.Errorf("image schema: %v", img)
	}
	if _, ok := img["properties"].(map[string]any)["visibility"]; !ok {
		t.Errorf("image schema lacks visibility")
	}
	imgs := e.do("GET", "/v2/schemas/images", tok, nil).json(t)
	if imgs["name"] != "images" {
		t.Errorf("images schema: %v", imgs)
	}
}
