package api_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestListFilters: each of Glance's list filters, as the query string
// clients send, selects what Glance would (status, visibility, name,
// tag, container_format, disk_format with in:, owner, protected).
func TestListFilters(t *testing.T) {
	e := newEnv(t)
	p1, p2 := e.ks.Issue("p1", "member"), e.ks.Issue("p2", "member")
	mk := func(tok, body string) string { return e.create(tok, body)["id"].(string) }
	mk(p1, `{"name": "f-bare-raw", "container_format": "bare", "disk_format": "raw", "visibility": "private", "tags": ["t1"]}`)
	active := mk(p1, `{"name": "f-bare-qcow2", "container_format": "bare", "disk_format": "qcow2", "visibility": "private", "protected": true}`)
	if r := e.do("PUT", "/v2/images/"+active+"/file", p1, []byte("data"), "Content-Type", "application/octet-stream"); r.status != 204 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	mk(p1, `{"name": "f-docker", "container_format": "docker", "disk_format": "raw", "visibility": "community", "tags": ["t1", "t2"]}`)
	mk(p2, `{"name": "f-other", "container_format": "bare", "disk_format": "raw", "visibility": "community"}`)

	for _, c := range []struct{ query, want string }{
		{"", "f-bare-qcow2 f-bare-raw f-docker"},
		{"status=active", "f-bare-qcow2"},
		{"status=queued", "f-bare-raw f-docker"},
		{"visibility=private", "f-bare-qcow2 f-bare-raw"},
		{"visibility=community", "f-docker f-other"},
		{"visibility=all", "f-bare-qcow2 f-bare-raw f-docker f-other"},
		{"name=f-docker", "f-docker"},
		{"name=in:f-docker,f-bare-raw", "f-bare-raw f-docker"},
		{"tag=t1", "f-bare-raw f-docker"},
		{"tag=t1&tag=t2", "f-docker"},
		{"container_format=docker", "f-docker"},
		{"container_format=bare", "f-bare-qcow2 f-bare-raw"},
		{"disk_format=qcow2", "f-bare-qcow2"},
		{"disk_format=in:qcow2,raw", "f-bare-qcow2 f-bare-raw f-docker"},
		{"owner=p2&visibility=all", "f-other"},
		{"owner=p1", "f-bare-qcow2 f-bare-raw f-docker"},
		{"protected=true", "f-bare-qcow2"},
		{"protected=false", "f-bare-raw f-docker"},
	} {
		t.Run(c.query, func(t *testing.T) {
			r := e.do("GET", "/v2/images?sort=name:asc&"+c.query, p1, nil)
			if r.status != http.StatusOK {
				t.Fatalf("%d %s", r.status, r.body)
			}
			var names []string
			for _, img := range r.json(t)["images"].([]any) {
				names = append(names, img.(map[string]any)["name"].(string))
			}
			if got := joinSorted(names); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func joinSorted(s []string) string {
	slices.Sort(s)
	return strings.Join(s, " ")
}
