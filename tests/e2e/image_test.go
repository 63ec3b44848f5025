package e2e

import (
	"bytes"
	"context"
	"encoding/json"
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
	o.must(t, demo, "server", "delete", "--wait", "fromcli")
	o.must(t, demo, "image", "delete", "app")
	if _, _, err := o.run(t, demo, "image", "show", img.ID); err == nil {
		t.Error("image still shown after delete")
	}
}
