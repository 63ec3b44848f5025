package dockerarchive_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"berth/imagesvc/dockerarchive"
	"berth/imagesvc/dockerarchive/archivetest"
)

func TestInspect(t *testing.T) {
	base := archivetest.LayerTar(map[string]string{"etc/os-release": "ID=berth\n"})
	app := archivetest.LayerTar(map[string]string{"app/run": "#!/bin/sh\necho hi\n"})
	for _, tc := range []struct {
		name   string
		layout archivetest.Layout
		layers [][]byte
	}{
		{"legacy/two layers", archivetest.Legacy, [][]byte{base, app}},
		{"legacy/repeated layer is a symlink", archivetest.Legacy, [][]byte{base, app, base}},
		{"oci/two layers", archivetest.OCI, [][]byte{base, app}},
		{"oci/repeated layer", archivetest.OCI, [][]byte{base, app, base}},
		{"legacy/no layers", archivetest.Legacy, nil},
		{"oci/gzip layers", archivetest.OCIGzip, [][]byte{base, app}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := archivetest.Build(tc.layout, "berth/test:1", tc.layers...)
			// Read in odd-sized pieces and leave trailing padding, as a
			// network body would.
			r := iotest.HalfReader(io.MultiReader(bytes.NewReader(want.Data), bytes.NewReader(make([]byte, 1000))))
			got, err := dockerarchive.Inspect(r)
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if got.ImageID != want.ImageID {
				t.Errorf("ImageID: got %s, want %s", got.ImageID, want.ImageID)
			}
			if diff := cmp.Diff([]string{"berth/test:1"}, got.RepoTags); diff != "" {
				t.Errorf("RepoTags (-want +got):\n%s", diff)
			}
			var digests, chains []string
			for i, l := range got.Layers {
				digests = append(digests, l.Digest)
				chains = append(chains, l.ChainID)
				if tc.layout != archivetest.OCIGzip && l.Size != int64(len(tc.layers[i])) {
					t.Errorf("layer %d size: got %d, want %d", i, l.Size, len(tc.layers[i]))
				}
			}
			if diff := cmp.Diff(want.DiffIDs, digests); diff != "" {
				t.Errorf("layer digests (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want.ChainIDs, chains); diff != "" {
				t.Errorf("chain ids (-want +got):\n%s", diff)
			}
			if len(want.ChainIDs) > 0 && got.TopChainID() != want.ChainIDs[len(want.ChainIDs)-1] {
				t.Errorf("TopChainID: got %s", got.TopChainID())
			}
		})
	}
}

// rewrite copies a tar, letting edit change or drop (nil) each entry.
func rewrite(t *testing.T, data []byte, edit func(h *tar.Header, body []byte) []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		nb := edit(h, body)
		if nb == nil && h.Typeflag == tar.TypeReg {
			continue
		}
		h.Size = int64(len(nb))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(nb)
	}
	tw.Close()
	return out.Bytes()
}

func TestInspectRejects(t *testing.T) {
	layer := archivetest.LayerTar(map[string]string{"a": "b"})
	good := archivetest.Build(archivetest.Legacy, "x:1", layer)
	keep := func(h *tar.Header, b []byte) []byte { return b }
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"not a tar", []byte(strings.Repeat("this is not a tar archive ", 100))},
		{"empty", nil},
		{"truncated", good.Data[:len(good.Data)/2]},
		{"no manifest", rewrite(t, good.Data, func(h *tar.Header, b []byte) []byte {
			if h.Name == "manifest.json" {
				return nil
			}
			return b
		})},
		{"manifest not json", rewrite(t, good.Data, func(h *tar.Header, b []byte) []byte {
			if h.Name == "manifest.json" {
				return []byte("{nope")
			}
			return b
		})},
		{"two images", rewrite(t, good.Data, func(h *tar.Header, b []byte) []byte {
			if h.Name == "manifest.json" {
				return append(append([]byte("["), b[1:len(b)-1]...), append([]byte(","), b[1:]...)...)
			}
			return b
		})},
		{"layer corrupted", rewrite(t, good.Data, func(h *tar.Header, b []byte) []byte {
			if strings.HasSuffix(h.Name, "layer.tar") {
				b = append([]byte{}, b...)
				b[10] ^= 0xff
			}
			return b
		})},
		{"layer missing", rewrite(t, good.Data, func(h *tar.Header, b []byte) []byte {
			if strings.HasSuffix(h.Name, "layer.tar") {
				return nil
			}
			return b
		})},
		{"config tampered", rewrite(t, good.Data, func(h *tar.Header, b []byte) []byte {
			if strings.HasSuffix(h.Name, ".json") && h.Name != "manifest.json" {
				return bytes.Replace(b, []byte("amd64"), []byte("arm64"), 1)
			}
			return b
		})},
		{"unchanged copy is fine", rewrite(t, good.Data, keep)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dockerarchive.Inspect(bytes.NewReader(tc.data))
			if tc.name == "unchanged copy is fine" {
				if err != nil {
					t.Fatalf("Inspect: %v", err)
				}
				return
			}
			var fe *dockerarchive.FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("Inspect: got %v, want a *FormatError", err)
			}
		})
	}
}

func TestInspectPassesReadErrors(t *testing.T) {
	boom := errors.New("connection reset")
	good := archivetest.Build(archivetest.OCI, "x:1", archivetest.LayerTar(map[string]string{"a": "b"}))
	r := io.MultiReader(bytes.NewReader(good.Data[:700]), iotest.ErrReader(boom))
	_, err := dockerarchive.Inspect(r)
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the reader's error", err)
	}
	var fe *dockerarchive.FormatError
	if errors.As(err, &fe) {
		t.Fatalf("a read error was reported as a format error: %v", err)
	}
}

// memSpool keeps spooled files in memory, to check what Read hands out.
type memSpool struct{ files []*memFile }

type memFile struct {
	bytes.Buffer
	closed bool
}

func (m *memFile) Close() error { m.closed = true; return nil }

func (s *memSpool) Create() (io.WriteCloser, error) {
	f := &memFile{}
	s.files = append(s.files, f)
	return f, nil
}

// play concatenates pieces, taking file contents from Data or the spool.
func play(t *testing.T, pieces []dockerarchive.Piece) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, p := range pieces {
		switch {
		case p.File == nil:
			out.Write(p.Raw)
		case p.File.Data != nil:
			out.Write(p.File.Data)
		case p.File.Spooled != nil:
			out.Write(p.File.Spooled.(*memFile).Bytes())
		default:
			t.Fatalf("piece for %s has no content", p.File.Name)
		}
	}
	return out.Bytes()
}

func TestReadRecordsTheArchiveByteForByte(t *testing.T) {
	big := archivetest.RandomLayer(1<<20 + 4096) // past what Read keeps in memory
	small := archivetest.LayerTar(map[string]string{"etc/hostname": "berth\n"})
	for _, tc := range []struct {
		name   string
		layout archivetest.Layout
	}{{"legacy", archivetest.Legacy}, {"oci", archivetest.OCI}, {"oci gzip", archivetest.OCIGzip}} {
		t.Run(tc.name, func(t *testing.T) {
			arc := archivetest.Build(tc.layout, "berth/big:1", big, small, big)
			data := append(append([]byte{}, arc.Data...), make([]byte, 3*512)...) // record padding
			spool := &memSpool{}
			got, err := dockerarchive.Read(iotest.HalfReader(bytes.NewReader(data)), spool)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if !bytes.Equal(play(t, got.Pieces), data) {
				t.Fatalf("the pieces do not add up to the archive")
			}
			if len(spool.files) == 0 {
				t.Fatalf("nothing was spooled")
			}
			for i, f := range spool.files {
				if !f.closed {
					t.Errorf("spool file %d was not closed", i)
				}
			}
			if got.Layers[0].File.Spooled == nil || got.Layers[1].File.Data == nil {
				t.Errorf("the big layer should be spooled and the small one kept")
			}
			if got.Layers[0].File != got.Layers[2].File && tc.layout != archivetest.Legacy {
				t.Errorf("a repeated layer should be one file")
			}
			if got.Config == nil || got.Config.Digest != arc.ImageID {
				t.Errorf("Config: got %+v, want digest %s", got.Config, arc.ImageID)
			}
		})
	}
}

func TestBuildLoadsBack(t *testing.T) {
	base := archivetest.RandomLayer(1<<20 + 4096)
	app := archivetest.LayerTar(map[string]string{"srv/app": "v2\n"})
	arc := archivetest.Build(archivetest.OCIGzip, "x:1", base, app, base)
	src, err := dockerarchive.Read(bytes.NewReader(arc.Data), &memSpool{})
	if err != nil {
		t.Fatal(err)
	}
	var layers []*dockerarchive.File
	for _, l := range src.Layers {
		layers = append(layers, l.File)
	}
	manifest := &dockerarchive.File{Digest: "sha256:" + strings.Repeat("ab", 32), Size: 3, Data: []byte("{ }")}
	pieces, err := dockerarchive.Build(dockerarchive.Image{Config: src.Config, Layers: layers, RepoTags: []string{"x:1"},
		Manifest: manifest, ManifestMediaType: "application/vnd.oci.image.manifest.v1+json"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	built := play(t, pieces)
	again, err := dockerarchive.Build(dockerarchive.Image{Config: src.Config, Layers: layers, RepoTags: []string{"x:1"},
		Manifest: manifest, ManifestMediaType: "application/vnd.oci.image.manifest.v1+json"})
	if err != nil || !bytes.Equal(play(t, again), built) {
		t.Errorf("Build is not deterministic (err %v)", err)
	}
	back, err := dockerarchive.Inspect(bytes.NewReader(built))
	if err != nil {
		t.Fatalf("Inspect of the built archive: %v", err)
	}
	if back.ImageID != arc.ImageID || back.TopChainID() != arc.ChainIDs[2] || len(back.Layers) != 3 {
		t.Errorf("built archive: got image %s top %s (%d layers), want %s %s",
			back.ImageID, back.TopChainID(), len(back.Layers), arc.ImageID, arc.ChainIDs[2])
	}
	if diff := cmp.Diff([]string{"x:1"}, back.RepoTags); diff != "" {
		t.Errorf("RepoTags (-want +got):\n%s", diff)
	}
	// Every file the built archive holds is a regular tar entry that
	// archive/tar reads.
	tr := tar.NewReader(bytes.NewReader(built))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		names = append(names, h.Name)
	}
	if len(names) != 9 { // 2 dirs, config, 2 distinct layers, manifest blob, index.json, oci-layout, manifest.json
		t.Errorf("entries: %v", names)
	}
}
