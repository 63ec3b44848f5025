// Package archivetest builds small docker save archives for tests, so no
// test needs a Docker daemon.
package archivetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Layout is which of docker save's two layouts to write.
type Layout int

const (
	// Legacy is the pre-Docker-25 layout: <hex>.json, <id>/layer.tar.
	Legacy Layout = iota
	// OCI is the Docker 25+ layout: blobs/sha256/<hex>, oci-layout, index.json.
	OCI
	// OCIGzip is the OCI layout with gzip-compressed layer blobs, as
	// Docker's containerd image store saves them.
	OCIGzip
)

// Archive is a built archive and what it should be found to contain.
type Archive struct {
	Data     []byte
	ImageID  string   // sha256:<config digest>
	DiffIDs  []string // layer digests, base first
	ChainIDs []string
}

// LayerTar makes a layer: a tar holding the given files (path → content).
func LayerTar(files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)),
			Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
		_, _ = tw.Write([]byte(content))
	}
	_ = tw.Close()
	return buf.Bytes()
}

// RandomLayer makes a layer holding one file of size random bytes (so it
// compresses badly and no other test has the same one).
func RandomLayer(size int) []byte {
	data := make([]byte, size)
	_, _ = rand.Read(data)
	name := fmt.Sprintf("data/%x", data[:8])
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
	_, _ = tw.Write(data)
	_ = tw.Close()
	return buf.Bytes()
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Build writes a docker save archive of one image tagged repoTag with the
// given layers (base first). In the legacy layout a repeated layer is
// written once and linked, as docker save does.
func Build(layout Layout, repoTag string, layers ...[]byte) Archive {
	var a Archive
	for i, l := range layers {
		d := digest(l)
		a.DiffIDs = append(a.DiffIDs, d)
		if i == 0 {
			a.ChainIDs = append(a.ChainIDs, d)
		} else {
			a.ChainIDs = append(a.ChainIDs, digest([]byte(a.ChainIDs[i-1]+" "+d)))
		}
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": []string{"/bin/sh"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": a.DiffIDs},
	})
	cd := digest(config)
	a.ImageID = cd
	hexOf := func(d string) string { return d[len("sha256:"):] }

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)),
			Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
		_, _ = tw.Write(data)
	}
	var layerPaths []string
	switch layout {
	case Legacy:
		seen := map[string]string{}
		for i, l := range layers {
			dir := hexOf(digest([]byte(fmt.Sprintf("%s-%d", a.ChainIDs[i], i))))
			p := dir + "/layer.tar"
			_ = tw.WriteHeader(&tar.Header{Name: dir + "/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Unix(0, 0)})
			if prev, ok := seen[a.DiffIDs[i]]; ok {
				_ = tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeSymlink, Linkname: "../" + prev, ModTime: time.Unix(0, 0)})
			} else {
				add(p, l)
				seen[a.DiffIDs[i]] = p
			}
			add(dir+"/VERSION", []byte("1.0"))
			layerPaths = append(layerPaths, p)
		}
		add(hexOf(cd)+".json", config)
		m, _ := json.Marshal([]map[string]any{{"Config": hexOf(cd) + ".json", "RepoTags": []string{repoTag}, "Layers": layerPaths}})
		add("manifest.json", m)
		add("repositories", []byte("{}"))
	case OCI, OCIGzip:
		_ = tw.WriteHeader(&tar.Header{Name: "blobs/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Unix(0, 0)})
		_ = tw.WriteHeader(&tar.Header{Name: "blobs/sha256/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Unix(0, 0)})
		written := map[string]bool{}
		for _, l := range layers {
			if layout == OCIGzip {
				var zb bytes.Buffer
				zw := gzip.NewWriter(&zb)
				_, _ = zw.Write(l)
				_ = zw.Close()
				l = zb.Bytes()
			}
			p := "blobs/sha256/" + hexOf(digest(l))
			if !written[p] {
				add(p, l)
				written[p] = true
			}
			layerPaths = append(layerPaths, p)
		}
		add("blobs/sha256/"+hexOf(cd), config)
		add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
		add("index.json", []byte(`{"schemaVersion":2,"manifests":[]}`))
		m, _ := json.Marshal([]map[string]any{{"Config": "blobs/sha256/" + hexOf(cd), "RepoTags": []string{repoTag}, "Layers": layerPaths}})
		add("manifest.json", m)
	}
	_ = tw.Close()
	a.Data = buf.Bytes()
	return a
}
