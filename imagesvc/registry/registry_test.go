package registry_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth/imagesvc/digest"
	"berth/imagesvc/dockerarchive/archivetest"
	"berth/imagesvc/imagesvctest"
	"berth/imagesvc/registry"
)

// client talks to the registry as one user.
type client struct {
	t          *testing.T
	env        *imagesvctest.Env
	user, pass string
	token      string
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) code() string {
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	json.Unmarshal(r.body, &e)
	if len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

func (c *client) do(method, path string, body []byte, hdr ...string) resp {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	u := path
	if !strings.HasPrefix(u, "http") {
		u = c.env.URL + path
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	if c.token != "" {
		req.Header.Set("X-Auth-Token", c.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// expect fails unless r has status (and, when code is set, that OCI code).
func expect(t *testing.T, what string, r resp, status int, code string) {
	t.Helper()
	if r.status != status || (code != "" && r.code() != code) {
		t.Errorf("%s: got %d %s, want %d %s", what, r.status, r.body, status, code)
	}
}

// pushBlob uploads data in two chunks (POST, PATCH, PATCH, PUT).
func (c *client) pushBlob(name string, data []byte) string {
	c.t.Helper()
	d := digest.Of(data)
	r := c.do("POST", "/v2/"+name+"/blobs/uploads/", nil)
	if r.status != 202 || r.header.Get("Location") == "" || r.header.Get("Range") != "0-0" {
		c.t.Fatalf("start upload: %d %v %s", r.status, r.header, r.body)
	}
	loc := r.header.Get("Location")
	half := len(data) / 2
	r = c.do("PATCH", loc, data[:half], "Content-Type", "application/octet-stream",
		"Content-Range", fmt.Sprintf("0-%d", half-1))
	if r.status != 202 || r.header.Get("Range") != fmt.Sprintf("0-%d", half-1) {
		c.t.Fatalf("patch: %d %v %s", r.status, r.header, r.body)
	}
	loc = r.header.Get("Location")
	r = c.do("PATCH", loc, data[half:], "Content-Type", "application/octet-stream")
	if r.status != 202 {
		c.t.Fatalf("patch 2: %d %s", r.status, r.body)
	}
	r = c.do("PUT", r.header.Get("Location")+"?digest="+d, nil)
	if r.status != 201 || r.header.Get("Docker-Content-Digest") != d {
		c.t.Fatalf("finish upload: %d %v %s", r.status, r.header, r.body)
	}
	return d
}

// image is an image as blobs: config, layers (the first gzip-compressed)
// and a Docker schema 2 manifest.
type image struct {
	config   []byte
	layers   [][]byte
	diffIDs  []string
	manifest []byte
	digest   string // of the manifest
	configID string
}

func makeImage(t *testing.T, tars ...[]byte) image {
	t.Helper()
	var img image
	var descs []map[string]any
	for i, tr := range tars {
		img.diffIDs = append(img.diffIDs, digest.Of(tr))
		blob, mt := tr, "application/vnd.oci.image.layer.v1.tar"
		if i == 0 {
			var zb bytes.Buffer
			zw := gzip.NewWriter(&zb)
			zw.Write(tr)
			zw.Close()
			blob, mt = zb.Bytes(), "application/vnd.docker.image.rootfs.diff.tar.gzip"
		}
		img.layers = append(img.layers, blob)
		descs = append(descs, map[string]any{"mediaType": mt, "digest": digest.Of(blob), "size": len(blob)})
	}
	img.config, _ = json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": img.diffIDs}})
	img.configID = digest.Of(img.config)
	img.manifest, _ = json.Marshal(map[string]any{"schemaVersion": 2,
		"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
		"config":    map[string]any{"mediaType": "application/vnd.docker.container.image.v1+json", "digest": img.configID, "size": len(img.config)},
		"layers":    descs})
	img.digest = digest.Of(img.manifest)
	return img
}

const schema2 = "application/vnd.docker.distribution.manifest.v2+json"

func (c *client) push(name, tag string, img image) resp {
	c.t.Helper()
	c.pushBlob(name, img.config)
	for _, l := range img.layers {
		c.pushBlob(name, l)
	}
	return c.do("PUT", "/v2/"+name+"/manifests/"+tag, img.manifest, "Content-Type", schema2)
}

func start(t *testing.T) (*imagesvctest.Env, *client, *client) {
	env := imagesvctest.Start(t, imagesvctest.Options{})
	env.KS.AddProject("p-demo", "demo")
	env.KS.AddProject("p-alt", "alt")
	env.KS.AddProject("p-images", "images")
	env.KS.AddUser("alice", "alice-pw", "p-demo", map[string][]string{"p-demo": {"member"}, "p-images": {"member"}})
	env.KS.AddUser("bob", "bob-pw", "p-alt", map[string][]string{"p-alt": {"member"}})
	return env, &client{t: t, env: env, user: "alice", pass: "alice-pw"}, &client{t: t, env: env, user: "bob", pass: "bob-pw"}
}

func TestBaseAndAuthentication(t *testing.T) {
	env, alice, _ := start(t)
	anon := &client{t: t, env: env}
	r := anon.do("GET", "/v2/", nil)
	expect(t, "anonymous /v2/", r, 401, "UNAUTHORIZED")
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic realm=") {
		t.Errorf("401 without a Basic challenge: %v", r.header)
	}
	if r.header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("no Docker-Distribution-API-Version header: %v", r.header)
	}
	expect(t, "wrong password", (&client{t: t, env: env, user: "alice", pass: "nope"}).do("GET", "/v2/", nil), 401, "UNAUTHORIZED")
	expect(t, "good password", alice.do("GET", "/v2/", nil), 200, "")
	expect(t, "keystone token", (&client{t: t, env: env, token: env.KS.Issue("p-demo", "member")}).do("GET", "/v2/", nil), 200, "")
	expect(t, "agent", (&client{t: t, env: env, user: registry.AgentUser, pass: imagesvctest.AgentToken}).do("GET", "/v2/", nil), 200, "")
	expect(t, "agent with a wrong token", (&client{t: t, env: env, user: registry.AgentUser, pass: "x"}).do("GET", "/v2/", nil), 401, "")
	// Logins are cached: a burst of requests is one Keystone call.
	n := env.KS.Passwords()
	for i := 0; i < 5; i++ {
		alice.do("GET", "/v2/", nil)
	}
	if env.KS.Passwords() != n {
		t.Errorf("Keystone was asked %d more times for the same login", env.KS.Passwords()-n)
	}
	// Keystone unreachable: 503, not 401 (the password may be right).
	env.KS.Close()
	expect(t, "Keystone down", (&client{t: t, env: env, user: "bob", pass: "bob-pw"}).do("GET", "/v2/", nil), 503, "")
}

func TestPushPullAndTags(t *testing.T) {
	env, alice, bob := start(t)
	img := makeImage(t, archivetest.RandomLayer(100<<10), archivetest.LayerTar(map[string]string{"a": "b"}))
	r := alice.push("demo/web", "1.0", img)
	expect(t, "push manifest", r, 201, "")
	if r.header.Get("Docker-Content-Digest") != img.digest {
		t.Errorf("manifest digest: %v, want %s", r.header, img.digest)
	}
	// A Glance image of the project, made of the same blobs.
	tok := env.KS.Issue("p-demo", "member")
	glance := (&client{t: t, env: env, token: tok}).do("GET", "/v2/images?name=web:1.0", nil)
	var list struct{ Images []map[string]any }
	json.Unmarshal(glance.body, &list)
	if len(list.Images) != 1 || list.Images[0]["docker_image_id"] != img.configID ||
		list.Images[0]["docker_manifest_digest"] != img.digest || list.Images[0]["owner"] != "p-demo" {
		t.Fatalf("Glance image of the push: %s", glance.body)
	}
	imageID := list.Images[0]["id"].(string)

	for _, ref := range []string{"1.0", img.digest, imageID} {
		r := alice.do("GET", "/v2/demo/web/manifests/"+ref, nil, "Accept", schema2)
		if r.status != 200 || !bytes.Equal(r.body, img.manifest) || r.header.Get("Content-Type") != schema2 ||
			r.header.Get("Docker-Content-Digest") != img.digest {
			t.Errorf("pull manifest %s: %d %v", ref, r.status, r.header)
		}
	}
	expect(t, "HEAD manifest", alice.do("HEAD", "/v2/demo/web/manifests/1.0", nil), 200, "")
	expect(t, "unknown tag", alice.do("GET", "/v2/demo/web/manifests/2.0", nil), 404, "MANIFEST_UNKNOWN")
	expect(t, "unknown repository", alice.do("GET", "/v2/demo/nothing/manifests/1.0", nil), 404, "NAME_UNKNOWN")
	r = alice.do("GET", "/v2/demo/web/blobs/"+digest.Of(img.layers[0]), nil)
	if r.status != 200 || !bytes.Equal(r.body, img.layers[0]) {
		t.Errorf("pull blob: %d (%d bytes)", r.status, len(r.body))
	}
	r = alice.do("GET", "/v2/demo/web/blobs/"+digest.Of(img.layers[0]), nil, "Range", "bytes=10-19")
	if r.status != 206 || !bytes.Equal(r.body, img.layers[0][10:20]) {
		t.Errorf("ranged blob: %d %q", r.status, r.body)
	}
	// The chain was computed from the config: its layers are recorded.
	layers := (&client{t: t, env: env, token: tok}).do("GET", "/v2/images/"+imageID+"/layers", nil)
	var lb struct{ Layers []map[string]any }
	json.Unmarshal(layers.body, &lb)
	if len(lb.Layers) != 2 || lb.Layers[0]["digest"] != img.diffIDs[0] || lb.Layers[0]["blob_digest"] != digest.Of(img.layers[0]) {
		t.Errorf("layers of the pushed image: %s", layers.body)
	}

	// Pushing the same manifest again under another tag makes no new image.
	expect(t, "re-push", alice.push("demo/web", "latest", img), 201, "")
	r = alice.do("GET", "/v2/demo/web/tags/list", nil)
	if r.status != 200 || string(r.body) != `{"name":"demo/web","tags":["1.0","latest"]}`+"\n" {
		t.Errorf("tags: %d %s", r.status, r.body)
	}
	glance = (&client{t: t, env: env, token: tok}).do("GET", "/v2/images?container_format=docker", nil)
	json.Unmarshal(glance.body, &list)
	if len(list.Images) != 1 {
		t.Errorf("after a re-push: %d docker images, want 1", len(list.Images))
	}
	r = alice.do("GET", "/v2/demo/web/tags/list?n=1", nil)
	if !strings.Contains(string(r.body), `"tags":["1.0"]`) || !strings.Contains(r.header.Get("Link"), "last=1.0") {
		t.Errorf("paged tags: %s %v", r.body, r.header)
	}
	r = alice.do("GET", "/v2/_catalog", nil)
	if string(r.body) != `{"repositories":["demo/web"]}`+"\n" {
		t.Errorf("catalog: %s", r.body)
	}
	expect(t, "delete tag", alice.do("DELETE", "/v2/demo/web/manifests/latest", nil), 202, "")
	expect(t, "deleted tag", alice.do("GET", "/v2/demo/web/manifests/latest", nil), 404, "MANIFEST_UNKNOWN")
	expect(t, "delete by digest", alice.do("DELETE", "/v2/demo/web/manifests/"+img.digest, nil), 405, "UNSUPPORTED")

	// Another project sees nothing of demo's shared image...
	expect(t, "bob pulls a private manifest", bob.do("GET", "/v2/demo/web/manifests/1.0", nil), 404, "")
	expect(t, "bob pulls a private blob", bob.do("GET", "/v2/demo/web/blobs/"+digest.Of(img.layers[0]), nil), 404, "BLOB_UNKNOWN")
	expect(t, "bob HEADs a private blob", bob.do("HEAD", "/v2/alt/x/blobs/"+digest.Of(img.layers[0]), nil), 404, "")
	expect(t, "bob pushes into demo", bob.do("POST", "/v2/demo/web/blobs/uploads/", nil), 403, "DENIED")
	// ...nor can he reference demo's blobs by digest without having them.
	expect(t, "bob's manifest of demo's blobs", bob.do("PUT", "/v2/alt/stolen/manifests/1", img.manifest, "Content-Type", schema2),
		400, "MANIFEST_BLOB_UNKNOWN")
	// Uploading the same bytes proves he has them: stored once, his push works.
	files, _ := blobFiles(env)
	expect(t, "bob pushes the same image", bob.push("alt/web", "1", img), 201, "")
	if after, _ := blobFiles(env); after != files { // even the archive recipe is the same
		t.Errorf("bob's push of existing blobs added %d blob files, want none", after-files)
	}
	// Once demo's image is public, bob can pull it.
	admin := &client{t: t, env: env, token: env.KS.Issue("p-admin", "admin")}
	expect(t, "publicize", admin.do("PATCH", "/v2/images/"+imageID, []byte(`[{"op": "replace", "path": "/visibility", "value": "public"}]`),
		"Content-Type", "application/openstack-images-v2.1-json-patch"), 200, "")
	expect(t, "bob pulls a public manifest", bob.do("GET", "/v2/demo/web/manifests/1.0", nil), 200, "")
	expect(t, "bob pulls a public blob", bob.do("GET", "/v2/demo/web/blobs/"+digest.Of(img.layers[1]), nil), 200, "")
	// A deactivated image cannot be pulled except by admins.
	expect(t, "deactivate", admin.do("POST", "/v2/images/"+imageID+"/actions/deactivate", nil), 204, "")
	expect(t, "pull deactivated", alice.do("GET", "/v2/demo/web/manifests/1.0", nil), 403, "DENIED")
	expect(t, "agent pulls deactivated", (&client{t: t, env: env, user: registry.AgentUser, pass: imagesvctest.AgentToken}).
		do("GET", "/v2/demo/web/manifests/1.0", nil), 200, "")
	expect(t, "agent pulls by image id", (&client{t: t, env: env, user: registry.AgentUser, pass: imagesvctest.AgentToken}).
		do("GET", "/v2/berth/image/manifests/"+imageID, nil), 200, "")
	expect(t, "agent cannot push", (&client{t: t, env: env, user: registry.AgentUser, pass: imagesvctest.AgentToken}).
		do("POST", "/v2/demo/web/blobs/uploads/", nil), 403, "DENIED")
}

func blobFiles(env *imagesvctest.Env) (int, error) {
	n := 0
	err := walkFiles(env.DataDir+"/blobs/sha256", func() { n++ })
	return n, err
}

func TestUploadErrors(t *testing.T) {
	env, alice, _ := start(t)
	data := archivetest.RandomLayer(64 << 10)
	wrong := digest.Of([]byte("something else"))
	r := alice.do("POST", "/v2/demo/x/blobs/uploads/?digest="+wrong, data)
	expect(t, "monolithic upload with a wrong digest", r, 400, "DIGEST_INVALID")
	expect(t, "the mismatched blob is not stored", alice.do("HEAD", "/v2/demo/x/blobs/"+digest.Of(data), nil), 404, "")
	r = alice.do("POST", "/v2/demo/x/blobs/uploads/?digest="+digest.Of(data), data)
	expect(t, "monolithic upload", r, 201, "")
	expect(t, "HEAD the uploaded blob", alice.do("HEAD", "/v2/demo/x/blobs/"+digest.Of(data), nil), 200, "")

	loc := alice.do("POST", "/v2/demo/x/blobs/uploads/", nil).header.Get("Location")
	expect(t, "chunk out of order", alice.do("PATCH", loc, data[:100], "Content-Range", "50-149"), 416, "BLOB_UPLOAD_INVALID")
	expect(t, "first chunk", alice.do("PATCH", loc, data[:100], "Content-Range", "0-99"), 202, "")
	r = alice.do("GET", loc, nil)
	if r.status != 204 || r.header.Get("Range") != "0-99" {
		t.Errorf("upload status: %d %v", r.status, r.header)
	}
	expect(t, "finish with a wrong digest", alice.do("PUT", loc+"?digest="+wrong, data[100:]), 400, "DIGEST_INVALID")
	expect(t, "the failed upload is gone", alice.do("PATCH", loc, data), 404, "BLOB_UPLOAD_UNKNOWN")
	loc = alice.do("POST", "/v2/demo/x/blobs/uploads/", nil).header.Get("Location")
	expect(t, "cancel", alice.do("DELETE", loc, nil), 204, "")
	expect(t, "after cancel", alice.do("PUT", loc+"?digest="+digest.Of(data), data), 404, "BLOB_UPLOAD_UNKNOWN")
	expect(t, "someone else's upload", alice.do("PATCH", "/v2/demo/x/blobs/uploads/00000000-0000-0000-0000-000000000000", data), 404, "BLOB_UPLOAD_UNKNOWN")
	if tmp, _ := countTmp(env); tmp != 0 {
		t.Errorf("%d temp files left after failed and cancelled uploads", tmp)
	}
}

func TestManifestErrors(t *testing.T) {
	_, alice, _ := start(t)
	img := makeImage(t, archivetest.LayerTar(map[string]string{"x": "1"}), archivetest.LayerTar(map[string]string{"y": "2"}))
	alice.pushBlob("demo/m", img.config)
	alice.pushBlob("demo/m", img.layers[0])
	// The second layer was never uploaded.
	r := alice.do("PUT", "/v2/demo/m/manifests/1", img.manifest, "Content-Type", schema2)
	expect(t, "manifest with a missing layer", r, 400, "MANIFEST_BLOB_UNKNOWN")
	if !strings.Contains(string(r.body), digest.Of(img.layers[1])) {
		t.Errorf("the error does not name the missing blob: %s", r.body)
	}
	alice.pushBlob("demo/m", img.layers[1])
	// A layer that does not match the config's diff_ids.
	other := makeImage(t, archivetest.LayerTar(map[string]string{"z": "3"}), archivetest.LayerTar(map[string]string{"y": "2"}))
	alice.pushBlob("demo/m", other.layers[0])
	var m map[string]any
	json.Unmarshal(img.manifest, &m)
	m["layers"].([]any)[0].(map[string]any)["digest"] = digest.Of(other.layers[0])
	m["layers"].([]any)[0].(map[string]any)["size"] = len(other.layers[0])
	bad, _ := json.Marshal(m)
	expect(t, "layer not matching the config", alice.do("PUT", "/v2/demo/m/manifests/1", bad, "Content-Type", schema2), 400, "MANIFEST_INVALID")
	expect(t, "not JSON", alice.do("PUT", "/v2/demo/m/manifests/1", []byte("{"), "Content-Type", schema2), 400, "MANIFEST_INVALID")
	expect(t, "manifest list", alice.do("PUT", "/v2/demo/m/manifests/1", []byte(`{"schemaVersion":2,"manifests":[]}`),
		"Content-Type", "application/vnd.docker.distribution.manifest.list.v2+json"), 400, "MANIFEST_INVALID")
	expect(t, "digest reference that does not match", alice.do("PUT", "/v2/demo/m/manifests/"+digest.Of([]byte("x")), img.manifest,
		"Content-Type", schema2), 400, "DIGEST_INVALID")
	expect(t, "bad tag", alice.do("PUT", "/v2/demo/m/manifests/-bad", img.manifest, "Content-Type", schema2), 400, "TAG_INVALID")
	expect(t, "the good manifest", alice.do("PUT", "/v2/demo/m/manifests/1", img.manifest, "Content-Type", schema2), 201, "")
	expect(t, "by digest", alice.do("PUT", "/v2/demo/m/manifests/"+img.digest, img.manifest, "Content-Type", schema2), 201, "")
}

func TestNamesAndRouting(t *testing.T) {
	env, alice, _ := start(t)
	expect(t, "one-component name", alice.do("GET", "/v2/web/manifests/1", nil), 400, "NAME_INVALID")
	expect(t, "uppercase name", alice.do("GET", "/v2/demo/Web/manifests/1", nil), 400, "NAME_INVALID")
	expect(t, "unknown project", alice.do("GET", "/v2/nosuch/web/manifests/1", nil), 404, "NAME_UNKNOWN")
	// A project literally named "images" has repositories under images/,
	// and Glance keeps working beside them.
	img := makeImage(t, archivetest.LayerTar(map[string]string{"i": "1"}))
	expect(t, "push images/list", alice.push("images/list", "tags", img), 201, "")
	expect(t, "pull images/list", alice.do("GET", "/v2/images/list/manifests/tags", nil), 200, "")
	tok := env.KS.Issue("p-demo", "member")
	g := &client{t: t, env: env, token: tok}
	r := g.do("POST", "/v2/images", []byte(`{"name": "g", "container_format": "bare", "disk_format": "raw"}`), "Content-Type", "application/json")
	var created map[string]any
	json.Unmarshal(r.body, &created)
	id, _ := created["id"].(string)
	expect(t, "Glance tag named list", g.do("PUT", "/v2/images/"+id+"/tags/list", nil), 204, "")
	expect(t, "Glance show", g.do("GET", "/v2/images/"+id, nil), 200, "")
	if !strings.Contains(string(g.do("GET", "/v2/images/"+id, nil).body), `"list"`) {
		t.Errorf("the Glance tag named list is missing")
	}
	expect(t, "Glance untag list", g.do("DELETE", "/v2/images/"+id+"/tags/list", nil), 204, "")
	expect(t, "Glance list", g.do("GET", "/v2/images", nil), 200, "")
	expect(t, "Glance schema", g.do("GET", "/v2/schemas/image", nil), 200, "")
	for _, p := range []string{"/v2/images/" + id + "/file", "/v2/images/" + id + "/members", "/v2/info/import", "/v2/layers/x"} {
		if registry.IsRegistryPath("GET", p) {
			t.Errorf("%s is taken by the registry", p)
		}
	}
	for _, p := range []string{"/v2/", "/v2/_catalog", "/v2/images/x/manifests/1", "/v2/a/b/c/blobs/uploads/", "/v2/a/b/blobs/sha256:1", "/v2/images/x/tags/list"} {
		if !registry.IsRegistryPath("GET", p) {
			t.Errorf("%s is not a registry path", p)
		}
	}
	if registry.IsRegistryPath("PUT", "/v2/images/x/tags/list") {
		t.Errorf("Glance's PUT tag list is taken by the registry")
	}
}

func walkFiles(root string, fn func()) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			fn()
		}
		return nil
	})
}

func countTmp(env *imagesvctest.Env) (int, error) {
	entries, err := os.ReadDir(filepath.Join(env.DataDir, "tmp"))
	return len(entries), err
}
