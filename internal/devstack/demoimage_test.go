package devstack

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"slices"
	"testing"
)

func TestBuildDemoImage(t *testing.T) {
	if _, err := os.Stat(busyboxPath); err != nil {
		if os.Getenv("BERTH_REQUIRE_REAL") == "1" {
			t.Fatalf("needs busybox-static at %s: %v", busyboxPath, err)
		}
		t.Skipf("needs busybox-static at %s", busyboxPath)
	}
	var a, b bytes.Buffer
	id, err := BuildDemoImage(context.Background(), &a)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := BuildDemoImage(context.Background(), &b)
	if err != nil {
		t.Fatal(err)
	}
	if id != id2 || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Errorf("two builds differ (%s, %s); want byte-identical archives", id, id2)
	}

	files := untar(t, a.Bytes())
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(manifest) != 1 || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest = %+v, want one image with one layer", manifest)
	}
	m := manifest[0]
	if !slices.Equal(m.RepoTags, []string{DemoImageTag}) {
		t.Errorf("RepoTags = %v, want [%s]", m.RepoTags, DemoImageTag)
	}
	if "sha256:"+m.Config[:len(m.Config)-len(".json")] != id {
		t.Errorf("config file %s does not match image ID %s", m.Config, id)
	}
	var config struct {
		Config struct{ Cmd []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(files[m.Config], &config); err != nil {
		t.Fatalf("%s: %v", m.Config, err)
	}
	if !slices.Equal(config.Config.Cmd, DemoImageCmd) {
		t.Errorf("Cmd = %v, want %v", config.Config.Cmd, DemoImageCmd)
	}
	if len(config.RootFS.DiffIDs) != 1 {
		t.Errorf("diff_ids = %v, want one", config.RootFS.DiffIDs)
	}

	layer := untar(t, files[m.Layers[0]])
	if string(layer["www/index.html"]) != DemoPage {
		t.Errorf("www/index.html = %q, want %q", layer["www/index.html"], DemoPage)
	}
	for _, want := range []string{"bin/busybox", "bin/sh", "bin/httpd", "bin/ping", "bin/wget", "etc/passwd", "etc/group", "tmp/"} {
		if _, ok := layer[want]; !ok {
			t.Errorf("layer lacks %s", want)
		}
	}
}

// untar maps each entry name to its content (nil for directories and links).
func untar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = data
	}
}
