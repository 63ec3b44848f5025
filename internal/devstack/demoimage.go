package devstack

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The demo image is built here, without Docker: one layer holding a static
// busybox, its applets as symlinks, and a page for its httpd to serve.

const (
	// DemoImageName is the Glance name of the seeded image.
	DemoImageName = "demo"
	// DemoImageTag is the Docker repo tag inside the archive.
	DemoImageTag = "berth/demo:latest"
	// DemoPage is what the demo server's web page says.
	DemoPage = "hello from berth\n"

	busyboxPath = "/bin/busybox"
)

// demoEpoch is every timestamp in the image, so rebuilding gives the same
// layer digest and the same Docker image ID.
var demoEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// DemoImageCmd is the demo image's command: busybox httpd under a shell
// that exits on SIGTERM. httpd as PID 1 would ignore TERM (PID 1 has no
// default signal handlers), so every stop would wait out the full grace
// period before the KILL; a VM's init shuts down when asked, and so does
// this one.
var DemoImageCmd = []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; /bin/busybox httpd -f -p 80 -h /www & wait"}

// BuildDemoImage writes a `docker save` archive of the demo image to w and
// returns its Docker image ID ("sha256:…").
func BuildDemoImage(ctx context.Context, w io.Writer) (string, error) {
	layer, err := demoLayer(ctx)
	if err != nil {
		return "", err
	}
	diffID := sha256.Sum256(layer)
	diffIDHex := hex.EncodeToString(diffID[:])

	type history struct {
		Created   time.Time `json:"created"`
		CreatedBy string    `json:"created_by"`
	}
	config := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      demoEpoch,
		"config": map[string]any{
			"Env":          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"Cmd":          DemoImageCmd,
			"WorkingDir":   "/",
			"ExposedPorts": map[string]any{"80/tcp": map[string]any{}},
			"Labels":       map[string]string{"org.opencontainers.image.title": "berth demo"},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + diffIDHex}},
		"history": []history{{Created: demoEpoch, CreatedBy: "berth-stack: busybox httpd demo"}},
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return "", err
	}
	configSum := sha256.Sum256(configJSON)
	imageID := hex.EncodeToString(configSum[:])

	// The legacy per-layer directory (json, VERSION) and "repositories"
	// are what pre-manifest tools read; Docker itself reads manifest.json.
	layerDir := diffIDHex
	legacyJSON, err := json.Marshal(map[string]any{
		"id":      layerDir,
		"created": demoEpoch,
		"config":  config["config"],
		"os":      "linux",
	})
	if err != nil {
		return "", err
	}
	repo, tag, _ := strings.Cut(DemoImageTag, ":")
	repositories, err := json.Marshal(map[string]map[string]string{repo: {tag: layerDir}})
	if err != nil {
		return "", err
	}
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   imageID + ".json",
		"RepoTags": []string{DemoImageTag},
		"Layers":   []string{layerDir + "/layer.tar"},
	}})
	if err != nil {
		return "", err
	}

	tw := tar.NewWriter(w)
	files := []struct {
		name string
		data []byte
	}{
		{imageID + ".json", configJSON},
		{layerDir + "/VERSION", []byte("1.0")},
		{layerDir + "/json", legacyJSON},
		{layerDir + "/layer.tar", layer},
		{"manifest.json", manifest},
		{"repositories", repositories},
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: layerDir + "/", Mode: 0o755, ModTime: demoEpoch}); err != nil {
		return "", err
	}
	for _, f := range files {
		if err := writeTarFile(tw, f.name, 0o644, f.data); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return "sha256:" + imageID, nil
}

// demoLayer is the uncompressed layer tar.
func demoLayer(ctx context.Context) ([]byte, error) {
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("demo image: %w (install busybox-static)", err)
	}
	if err := checkStatic(busyboxPath); err != nil {
		return nil, err
	}
	out, err := runCmd(ctx, nil, nil, busyboxPath, "--list")
	if err != nil {
		return nil, fmt.Errorf("demo image: %w", err)
	}
	var applets []string
	for _, a := range strings.Fields(out) {
		if a != "busybox" && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin/", 0o755}, {"etc/", 0o755}, {"root/", 0o700}, {"tmp/", 0o1777}, {"www/", 0o755}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: demoEpoch}); err != nil {
			return nil, err
		}
	}
	if err := writeTarFile(tw, "bin/busybox", 0o755, bb); err != nil {
		return nil, err
	}
	for _, a := range applets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: demoEpoch}); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		name string
		mode int64
		data string
	}{
		{"etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		{"etc/group", 0o644, "root:x:0:\nnobody:x:65534:\n"},
		{"www/index.html", 0o644, DemoPage},
	} {
		if err := writeTarFile(tw, f.name, f.mode, []byte(f.data)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeTarFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: demoEpoch}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// checkStatic makes sure the busybox we copy runs without a libc in the image.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("demo image: %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("demo image: %s is dynamically linked; install busybox-static", path)
		}
	}
	return nil
}

// demoImageFile builds the archive into the run dir once.
func (s *Stack) demoImageFile(ctx context.Context) (string, error) {
	path := filepath.Join(s.cfg.RunDir, "demo-image.tar")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	var buf bytes.Buffer
	id, err := BuildDemoImage(ctx, &buf)
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(path, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	s.log.Info("built demo image", "path", path, "docker_image_id", id, "bytes", buf.Len())
	return path, nil
}
