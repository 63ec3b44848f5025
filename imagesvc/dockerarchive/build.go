package dockerarchive

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Image is what Build writes: an image whose config and layers are held
// elsewhere (Files with Digest and Size; Data is not needed).
type Image struct {
	Config *File
	// Layers, base first. A layer repeated in the chain is written once.
	Layers   []*File
	RepoTags []string
	// Manifest, when set, is the image's registry manifest (of media type
	// ManifestMediaType); it is written too, with an index.json naming it,
	// which makes the archive a complete OCI image layout.
	Manifest          *File
	ManifestMediaType string
}

// blobPath is where Build puts content with digest d.
func blobPath(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }

// Build lays out img as a docker save archive in the OCI layout Docker 25+
// writes (blobs/sha256/<hex>, oci-layout, index.json) plus manifest.json,
// which is what docker load reads in every version. The result is
// deterministic: the same image always gives the same bytes.
func Build(img Image) ([]Piece, error) {
	b := &builder{}
	b.dir("blobs/")
	b.dir("blobs/sha256/")
	written := map[string]bool{}
	add := func(f *File) {
		if !written[f.Digest] {
			written[f.Digest] = true
			b.file(blobPath(f.Digest), f)
		}
	}
	add(img.Config)
	var layerPaths []string
	for _, l := range img.Layers {
		add(l)
		layerPaths = append(layerPaths, blobPath(l.Digest))
	}
	if img.Manifest != nil {
		add(img.Manifest)
		index, err := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     "application/vnd.oci.image.index.v1+json",
			"manifests": []map[string]any{{
				"mediaType": img.ManifestMediaType, "digest": img.Manifest.Digest, "size": img.Manifest.Size,
			}},
		})
		if err != nil {
			return nil, err
		}
		b.data("index.json", index)
	}
	b.data("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	tags := img.RepoTags
	if tags == nil {
		tags = []string{}
	}
	manifest, err := json.Marshal([]map[string]any{{
		"Config": blobPath(img.Config.Digest), "RepoTags": tags, "Layers": layerPaths,
	}})
	if err != nil {
		return nil, err
	}
	b.data("manifest.json", manifest)
	b.raw.Write(make([]byte, 2*blockSize)) // end of archive
	if b.err != nil {
		return nil, b.err
	}
	return b.flush(), nil
}

const blockSize = 512

type builder struct {
	pieces []Piece
	raw    bytes.Buffer
	err    error
}

func (b *builder) flush() []Piece {
	if b.raw.Len() > 0 {
		b.pieces = append(b.pieces, Piece{Raw: bytes.Clone(b.raw.Bytes())})
		b.raw.Reset()
	}
	return b.pieces
}

// header appends the tar header blocks for h.
func (b *builder) header(h *tar.Header) {
	h.ModTime = time.Unix(0, 0)
	h.Format = tar.FormatUnknown
	// A tar.Writer writes the header blocks at once; only they are kept.
	tw := tar.NewWriter(&b.raw)
	if err := tw.WriteHeader(h); err != nil && b.err == nil {
		b.err = fmt.Errorf("tar header for %s: %w", h.Name, err)
	}
}

func (b *builder) pad(size int64) {
	if r := size % blockSize; r != 0 {
		b.raw.Write(make([]byte, blockSize-r))
	}
}

func (b *builder) dir(name string) {
	b.header(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755})
}

func (b *builder) data(name string, data []byte) {
	b.header(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
	b.raw.Write(data)
	b.pad(int64(len(data)))
}

func (b *builder) file(name string, f *File) {
	b.header(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: f.Size})
	b.flush()
	b.pieces = append(b.pieces, Piece{File: f})
	b.pad(f.Size)
}
