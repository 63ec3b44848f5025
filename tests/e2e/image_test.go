package e2e

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth/internal/devstack"
)

// TestImageCLI drives imagesvc with the real openstack CLI: a `docker save`
// archive uploaded with `image create --container-format docker`, shown,
// changed, saved back byte for byte, booted, and deleted; another project
// cannot see it while it is private.
func TestImageCLI(t *testing.T) {
	s := startStack(t)
	o := &osc{stack: s}
	demo := devstack.CloudDemo
	dir := t.TempDir()
	archive := filepath.Join(dir, "app.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := devstack.BuildDemoImage(ctx, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() {
		_, _, _ = o.run(t, demo, "server", "delete", "--wait", "fromcli")
		_, _, _ = o.run(t, demo, "image", "delete", "app")
	})

	o.must(t, demo, "image", "create", "--container-format", "docker", "--disk-format", "raw",
		"--file", archive, "--private", "app")
	var img struct {
		ID              string `json:"id"`
		Status          string `json:"status"`
		ContainerFormat string `json:"container_format"`
		Checksum        string `json:"checksum"`
		Size            int64  `json:"size"`
		Properties      any    `json:"properties"`
	}
	o.json(t, demo, &img, "image", "show", "app")
	st, _ := os.Stat(archive)
	if img.Status != "active" || img.ContainerFormat != "docker" || img.Checksum == "" || img.Size != st.Size() {
		t.Fatalf("image show = %+v, want an active docker image of %d bytes with a checksum", img, st.Size())
	}
	o.must(t, demo, "image", "set", "--property", "team=web", "app")
	o.json(t, demo, &img, "image", "show", "app")
	if props, _ := json.Marshal(img.Properties); !strings.Contains(string(props), "team") {
		t.Errorf("properties after image set = %v, want team", img.Properties)
	}
	saved := filepath.Join(dir, "saved.tar")
	o.must(t, demo, "image", "save", "--file", saved, "app")
	a, _ := os.ReadFile(archive)
	b, _ := os.ReadFile(saved)
	if !bytes.Equal(a, b) {
		t.Errorf("image save returned %d bytes that differ from the %d uploaded", len(b), len(a))
	}
	if _, errOut, err := o.run(t, devstack.CloudAlt, "image", "show", img.ID); err == nil || !strings.Contains(errOut, "No Image found") {
		t.Errorf("alt sees demo's private image: err %v, stderr %q", err, errOut)
	}
	o.must(t, demo, "server", "create", "--image", "app", "--flavor", "m1.tiny", "--wait", "fromcli")
	// A snapshot (createImage) of a changed server is the source image's
	// chain plus one layer. (Docker adds no layer for a container that
	// changed nothing.)
	var srv server
	o.json(t, demo, &srv, "server", "show", "fromcli")
	dockerExec(t, appContainer(t, s, srv.ID), "sh", "-c", "echo snapshot-content > /www/snap.txt")
	t.Cleanup(func() { _, _, _ = o.run(t, demo, "image", "delete", "app-snap") })
	o.must(t, demo, "server", "image", "create", "--name", "app-snap", "--wait", "fromcli")
	var snap struct {
		ID string `json:"id"`
	}
	o.json(t, demo, &snap, "image", "show", "app-snap")
	token := strings.TrimSpace(o.must(t, demo, "token", "issue", "-f", "value", "-c", "id"))
	src, got := imageLayers(t, s, token, img.ID), imageLayers(t, s, token, snap.ID)
	if len(got) != len(src)+1 || got[len(got)-1].Parent != src[len(src)-1].ChainID {
		t.Errorf("snapshot layers %+v, want the source's %+v and one on top of its last", got, src)
	} else {
		for i := range src {
			if got[i].ChainID != src[i].ChainID {
				t.Errorf("snapshot layer %d is %s, want the source's %s", i, got[i].ChainID, src[i].ChainID)
			}
		}
	}
	o.must(t, demo, "server", "delete", "--wait", "fromcli")
	o.must(t, demo, "image", "delete", "app-snap")
	o.must(t, demo, "image", "delete", "app")
	if _, _, err := o.run(t, demo, "image", "show", img.ID); err == nil {
		t.Error("image still shown after delete")
	}
}

// layer is what GET /v2/images/{id}/layers says of one layer.
type layer struct {
	ChainID string `json:"chain_id"`
	Parent  string `json:"parent_chain_id"`
}

// imageLayers lists an image's layers, base first, through imagesvc's
// layers API (a Berth extension the openstack CLI does not know).
func imageLayers(t *testing.T, s *devstack.Stack, token, id string) []layer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.ImageURL()+"/v2/images/"+id+"/layers", nil)
	req.Header.Set("X-Auth-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Layers []layer `json:"layers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || len(body.Layers) == 0 {
		t.Fatalf("layers of %s: %s, %v, %+v", id, resp.Status, err, body)
	}
	return body.Layers
}

// TestImageCLIImportListShare drives the rest of what `openstack image`
// does against imagesvc: `create --import` (interoperable import,
// glance-direct) with Glance's checksums, `list` with filters and sort,
// protected images, visibility (public is admin-only, community is
// visible to all), and sharing with another project that accepts.
func TestImageCLIImportListShare(t *testing.T) {
	s := startStack(t)
	o := &osc{stack: s}
	demo, alt := devstack.CloudDemo, devstack.CloudAlt
	dir := t.TempDir()
	data := make([]byte, 300_000)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "small.raw")
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _, _ = o.run(t, demo, "image", "set", "--unprotected", "cli-a")
		_, _, _ = o.run(t, demo, "image", "delete", "cli-a", "cli-b")
	})

	// Import: the CLI creates, stages and imports; the import finishes in
	// the background.
	o.must(t, demo, "image", "create", "--import", "--disk-format", "raw", "--container-format", "bare",
		"--file", raw, "--private", "cli-a")
	var img struct {
		ID         string `json:"id"`
		Status     string `json:"status"`
		Checksum   string `json:"checksum"`
		Size       int64  `json:"size"`
		Visibility string `json:"visibility"`
		// The CLI shows os_hash_algo and os_hash_value among the
		// properties.
		Properties map[string]any `json:"properties"`
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		o.json(t, demo, &img, "image", "show", "cli-a")
		if img.Status == "active" || time.Now().After(deadline) {
			break
		}
	}
	m, sha := md5.Sum(data), sha512.Sum512(data)
	if img.Status != "active" || img.Size != int64(len(data)) || img.Checksum != hex.EncodeToString(m[:]) ||
		img.Properties["os_hash_algo"] != "sha512" || img.Properties["os_hash_value"] != hex.EncodeToString(sha[:]) {
		t.Fatalf("imported image = %+v, want active, %d bytes, md5 and sha512 of the data", img, len(data))
	}
	saved := filepath.Join(dir, "saved.raw")
	o.must(t, demo, "image", "save", "--file", saved, "cli-a")
	if got, _ := os.ReadFile(saved); !bytes.Equal(got, data) {
		t.Errorf("image save after import returned %d bytes that differ from the %d imported", len(got), len(data))
	}
	idA := img.ID

	// A plain upload with a tag, then list with filters and sort.
	o.must(t, demo, "image", "create", "--disk-format", "raw", "--container-format", "bare", "--file", raw,
		"--private", "--tag", "web", "cli-b")
	names := func(args ...string) []string {
		t.Helper()
		var rows []struct {
			Name string `json:"Name"`
		}
		o.json(t, demo, &rows, append([]string{"image", "list"}, args...)...)
		var out []string
		for _, r := range rows {
			if strings.HasPrefix(r.Name, "cli-") {
				out = append(out, r.Name)
			}
		}
		return out
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--sort", "name:desc"}, "cli-b cli-a"},
		{[]string{"--sort", "name:asc"}, "cli-a cli-b"},
		{[]string{"--tag", "web"}, "cli-b"},
		{[]string{"--name", "cli-a"}, "cli-a"},
		{[]string{"--private", "--sort", "name:asc"}, "cli-a cli-b"},
		{[]string{"--status", "active", "--sort", "name:asc"}, "cli-a cli-b"},
		{[]string{"--public"}, ""},
	} {
		if got := strings.Join(names(c.args...), " "); got != c.want {
			t.Errorf("image list %s: %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}

	// Protected images are not deleted.
	o.must(t, demo, "image", "set", "--protected", "cli-a")
	if _, errOut, err := o.run(t, demo, "image", "delete", "cli-a"); err == nil || !strings.Contains(errOut, "protected") {
		t.Errorf("delete of a protected image: err %v, stderr %q", err, errOut)
	}
	o.must(t, demo, "image", "set", "--unprotected", "cli-a")

	// Visibility: public is for admins; community is visible to all.
	if _, errOut, err := o.run(t, demo, "image", "set", "--public", "cli-a"); err == nil || !strings.Contains(errOut, "403") {
		t.Errorf("demo made an image public: err %v, stderr %q", err, errOut)
	}
	if _, _, err := o.run(t, alt, "image", "show", idA); err == nil {
		t.Error("alt sees demo's private image")
	}
	o.must(t, demo, "image", "set", "--community", "cli-a")
	o.json(t, alt, &img, "image", "show", idA)
	if img.Visibility != "community" {
		t.Errorf("alt's view of the community image: %+v", img)
	}

	// Sharing: a member project sees the image once it accepts.
	var b struct {
		ID string `json:"id"`
	}
	o.json(t, demo, &b, "image", "show", "cli-b")
	o.must(t, demo, "image", "set", "--shared", "cli-b")
	// By project id: demo may not look projects up by name, and the CLI
	// then passes the name through as if it were an id.
	altProject := strings.TrimSpace(o.must(t, alt, "token", "issue", "-f", "value", "-c", "project_id"))
	o.must(t, demo, "image", "add", "project", "cli-b", altProject)
	altShared := func() bool {
		var rows []struct {
			ID string `json:"ID"`
		}
		o.json(t, alt, &rows, "image", "list", "--shared")
		for _, r := range rows {
			if r.ID == b.ID {
				return true
			}
		}
		return false
	}
	if altShared() {
		t.Error("alt lists a shared image it has not accepted")
	}
	o.must(t, alt, "image", "set", "--accept", b.ID)
	if !altShared() {
		t.Error("alt does not list the shared image it accepted")
	}
}
