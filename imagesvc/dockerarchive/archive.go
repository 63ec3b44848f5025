// Package dockerarchive reads and writes `docker save` archives as streams.
//
// Read reads an archive once, front to back, without buffering the
// layers: it hashes every file as it passes, keeps only small ones
// (manifest.json, the image config) in memory and hands the content of
// large ones to a Spool. It also records the archive's exact byte layout
// (Pieces: the tar headers and padding as raw bytes, and each file's
// content by reference), so the archive can be played back byte for byte
// from wherever the file contents were stored. Both layouts docker save
// writes are understood: the legacy one (<hex>.json config,
// <id>/layer.tar layers, symlinks for repeated layers) and the OCI one
// Docker 25+ writes (blobs/sha256/<hex>, plus the same manifest.json).
//
// Build writes an archive of an image (config and layers held elsewhere)
// as Pieces in the OCI layout with a manifest.json, which every Docker
// since 1.10 loads.
package dockerarchive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"

	"berth/imagesvc/digest"
)

// FormatError says the archive is not a usable docker save archive.
type FormatError struct {
	Reason string
	Err    error
}

func (e *FormatError) Error() string {
	if e.Err != nil {
		return e.Reason + ": " + e.Err.Error()
	}
	return e.Reason
}

func (e *FormatError) Unwrap() error { return e.Err }

func formatErr(err error, format string, args ...any) error {
	return &FormatError{Reason: fmt.Sprintf(format, args...), Err: err}
}

// Archive is what Read found in an archive holding one image.
type Archive struct {
	// ImageID is the Docker image ID: "sha256:" + the config's digest.
	ImageID string
	// RepoTags are the names the image was saved under, e.g. ["alpine:3.20"].
	RepoTags []string
	// Layers are the image's layers, base first.
	Layers []Layer
	// Config is the image config file.
	Config *File
	// Files are the archive's regular files, in archive order.
	Files []*File
	// Pieces are the archive, byte for byte.
	Pieces []Piece
}

// File is a regular file of an archive.
type File struct {
	// Name is the file's path in the archive.
	Name string
	// Digest is "sha256:<hex>" of the content.
	Digest string
	// DiffID is the digest of the decompressed content of a gzip file
	// ("" when it does not decompress), and Digest for other files.
	DiffID string
	Size   int64
	// Data is the content, for small files (nil for spooled ones).
	Data []byte
	// Spooled is the spool's writer the content went to (nil for small
	// files, and for every file when Read had no spool).
	Spooled io.WriteCloser
}

// Piece is a stretch of an archive: raw bytes (headers, padding, the
// end-of-archive marker) or the content of a file.
type Piece struct {
	Raw  []byte
	File *File
}

// Size is the piece's length in the archive.
func (p Piece) Size() int64 {
	if p.File != nil {
		return p.File.Size
	}
	return int64(len(p.Raw))
}

// Spool takes the content of files too large to keep in memory.
type Spool interface {
	// Create returns a writer for the content of one file. Read closes it
	// once the content is written, successfully or not; on a failed read
	// the caller discards whatever Create handed out.
	Create() (io.WriteCloser, error)
}

// Layer is one layer of the image.
type Layer struct {
	// Digest is "sha256:<hex>" of the uncompressed layer tar (the diff_id).
	Digest string
	// BlobDigest is the digest of the layer as stored in the archive: the
	// same as Digest unless the layer is gzip-compressed.
	BlobDigest string
	// ChainID identifies this layer on top of all the layers below it
	// (OCI image-spec ChainID); it equals Digest for the base layer.
	ChainID string
	// Size is the layer's size in the archive, in bytes.
	Size int64
	// Path is where the layer sits in the archive.
	Path string
	// File is the layer's file.
	File *File
}

// TopChainID is the chain id of the top layer ("" for an image with no layers).
func (a *Archive) TopChainID() string {
	if len(a.Layers) == 0 {
		return ""
	}
	return a.Layers[len(a.Layers)-1].ChainID
}

const (
	keepMax      = 1 << 20  // files up to this size are kept in memory (manifests, configs)
	keepTotalMax = 32 << 20 // and no more than this in all
	rawMax       = 32 << 20 // tar headers, padding and trailer, in all
	maxEntries   = 1 << 16
)

// entry is a name in the archive: a regular file or a link to another name.
type entry struct {
	file *File
	link string // symlink or hard link target (archive path)
}

// Inspect reads a docker save archive from r to its very end (trailing
// bytes included, so a writer teeing into r is never left blocked) and
// describes the one image it holds, keeping no large file's content. A
// malformed or inconsistent archive gives a *FormatError; an error from r
// itself is returned as is.
func Inspect(r io.Reader) (*Archive, error) { return Read(r, nil) }

// Read is Inspect that also hands the content of every file larger than
// what it keeps in memory to spool (when not nil), and records Pieces.
func Read(r io.Reader, spool Spool) (*Archive, error) {
	c := &captureReader{r: r, capturing: true}
	a, err := read(c, spool)
	if c.err != nil {
		return nil, c.err
	}
	if err != nil {
		return nil, err
	}
	// Trailing bytes (zero padding to a record size) belong to the archive.
	if _, err := io.Copy(io.Discard, c); err != nil {
		return nil, err
	}
	if c.err != nil {
		return nil, c.err
	}
	if c.rawTotal > rawMax {
		return nil, formatErr(nil, "too much tar metadata (more than %d bytes)", rawMax)
	}
	a.Pieces = c.flush(a.Pieces)
	return a, nil
}

// captureReader passes r through, keeping a copy of the bytes read while
// capturing is on (tar headers and padding) and remembering r's own error.
type captureReader struct {
	r         io.Reader
	err       error
	capturing bool
	raw       []byte
	rawTotal  int64
}

func (c *captureReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.err = err
	}
	if n > 0 && c.capturing {
		c.rawTotal += int64(n)
		if c.rawTotal <= rawMax {
			c.raw = append(c.raw, p[:n]...)
		}
	}
	return n, err
}

// flush appends the raw bytes captured so far to pieces.
func (c *captureReader) flush(pieces []Piece) []Piece {
	if len(c.raw) > 0 {
		pieces = append(pieces, Piece{Raw: c.raw})
		c.raw = nil
	}
	return pieces
}

func read(c *captureReader, spool Spool) (*Archive, error) {
	a := &Archive{}
	entries, err := readEntries(tar.NewReader(c), c, spool, a)
	if err != nil {
		return nil, err
	}
	mf, ok := entries["manifest.json"]
	if !ok || mf.file == nil {
		return nil, formatErr(nil, "no manifest.json in the archive")
	}
	if mf.file.Data == nil {
		return nil, formatErr(nil, "manifest.json is too large")
	}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(mf.file.Data, &manifest); err != nil {
		return nil, formatErr(err, "manifest.json is not valid")
	}
	if len(manifest) != 1 {
		return nil, formatErr(nil, "manifest.json lists %d images, want exactly 1", len(manifest))
	}
	m := manifest[0]
	cfg, err := resolve(entries, m.Config)
	if err != nil {
		return nil, formatErr(err, "image config")
	}
	if cfg.Data == nil {
		return nil, formatErr(nil, "image config %s is too large", m.Config)
	}
	if want := nameDigest(m.Config); want != "" && want != cfg.Digest {
		return nil, formatErr(nil, "image config %s has digest %s", m.Config, cfg.Digest)
	}
	diffIDs, err := ConfigDiffIDs(cfg.Data)
	if err != nil {
		return nil, formatErr(err, "image config %s", m.Config)
	}
	if len(diffIDs) != len(m.Layers) {
		return nil, formatErr(nil, "manifest lists %d layers but the config has %d diff_ids",
			len(m.Layers), len(diffIDs))
	}
	a.ImageID, a.RepoTags, a.Config = cfg.Digest, m.RepoTags, cfg
	for i, p := range m.Layers {
		f, err := resolve(entries, p)
		if err != nil {
			return nil, formatErr(err, "layer %d", i)
		}
		diffID := diffIDs[i]
		if f.Digest != diffID && f.DiffID != diffID {
			return nil, formatErr(nil, "layer %d (%s) has digest %s but the config says %s", i, p, f.Digest, diffID)
		}
		parent := ""
		if i > 0 {
			parent = a.Layers[i-1].ChainID
		}
		a.Layers = append(a.Layers, Layer{Digest: diffID, BlobDigest: f.Digest, ChainID: ChainID(parent, diffID),
			Size: f.Size, Path: clean(p), File: f})
	}
	return a, nil
}

// ChainID is the OCI ChainID of the layer diffID on top of the layer with
// chain id parent ("" for a base layer).
func ChainID(parent, diffID string) string {
	if parent == "" {
		return diffID
	}
	sum := sha256.Sum256([]byte(parent + " " + diffID))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ConfigDiffIDs reads rootfs.diff_ids from an image config.
func ConfigDiffIDs(config []byte) ([]string, error) {
	var c struct {
		RootFS *struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(config, &c); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if c.RootFS == nil || c.RootFS.Type != "layers" {
		return nil, errors.New("no rootfs of type layers")
	}
	for _, d := range c.RootFS.DiffIDs {
		if !digestRE.MatchString(d) {
			return nil, fmt.Errorf("diff_id %q is not a sha256 digest", d)
		}
	}
	return c.RootFS.DiffIDs, nil
}

var digestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

// readEntries reads every entry of the tar, hashing regular files, keeping
// small ones, spooling large ones and recording the pieces into a.
func readEntries(tr *tar.Reader, c *captureReader, spool Spool, a *Archive) (map[string]entry, error) {
	entries := map[string]entry{}
	var kept int64
	for {
		c.capturing = true
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, formatErr(err, "not a tar archive")
		}
		if len(entries) >= maxEntries {
			return nil, formatErr(nil, "too many entries in the archive")
		}
		name := clean(h.Name)
		switch h.Typeflag {
		case tar.TypeReg:
			if isSparse(h) {
				return nil, formatErr(nil, "%s is a sparse file", name)
			}
			f := &File{Name: name, Size: h.Size}
			a.Pieces = c.flush(a.Pieces)
			c.capturing = false
			err := readFile(tr, f, spool, h.Size <= keepMax && kept+h.Size <= keepTotalMax)
			c.capturing = true
			if err != nil {
				return nil, err
			}
			if f.Data != nil {
				kept += h.Size
			}
			a.Pieces = append(a.Pieces, Piece{File: f})
			a.Files = append(a.Files, f)
			entries[name] = entry{file: f}
		case tar.TypeSymlink:
			target := h.Linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(name), target)
			}
			entries[name] = entry{link: clean(target)}
		case tar.TypeLink:
			entries[name] = entry{link: clean(h.Linkname)}
		case tar.TypeGNUSparse:
			return nil, formatErr(nil, "%s is a sparse file", name)
		}
	}
	return entries, nil
}

func isSparse(h *tar.Header) bool {
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// readFile reads the current entry's content into f: kept in memory when
// keep is set, else to a spool writer (or nowhere without a spool).
func readFile(tr *tar.Reader, f *File, spool Spool, keep bool) error {
	d := digest.New(true)
	ws := []io.Writer{d}
	var buf *bytes.Buffer
	if keep {
		buf = bytes.NewBuffer(make([]byte, 0, f.Size))
		ws = append(ws, buf)
	} else if spool != nil {
		w, err := spool.Create()
		if err != nil {
			return fmt.Errorf("spool %s: %w", f.Name, err)
		}
		f.Spooled = w
		ws = append(ws, w)
	}
	n, err := io.Copy(io.MultiWriter(ws...), tr)
	f.DiffID = d.Close()
	if f.Spooled != nil {
		if cerr := f.Spooled.Close(); cerr != nil && err == nil {
			return fmt.Errorf("spool %s: %w", f.Name, cerr)
		}
	}
	if err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			return err
		}
		return formatErr(err, "reading %s", f.Name)
	}
	if n != f.Size {
		return formatErr(nil, "%s is truncated", f.Name)
	}
	f.Digest = d.Digest()
	if buf != nil {
		f.Data = buf.Bytes()
	}
	return nil
}

// resolve finds the regular file at p, following links.
func resolve(entries map[string]entry, p string) (*File, error) {
	name := clean(p)
	for hops := 0; hops < 8; hops++ {
		e, ok := entries[name]
		if !ok {
			return nil, fmt.Errorf("%s is not in the archive", p)
		}
		if e.file != nil {
			return e.file, nil
		}
		name = e.link
	}
	return nil, errors.New(p + " is a link loop")
}

// nameDigest is the digest a content-addressed path promises:
// "<hex>.json" or "blobs/sha256/<hex>" give "sha256:<hex>"; others "".
func nameDigest(p string) string {
	p = clean(p)
	base := strings.TrimSuffix(path.Base(p), ".json")
	if len(base) != 64 {
		return ""
	}
	if _, err := hex.DecodeString(base); err != nil {
		return ""
	}
	return "sha256:" + base
}

func clean(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}
