package dockerarchive_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"berth/imagesvc/dockerarchive"
	"berth/imagesvc/dockerarchive/archivetest"
)

// FuzzRead feeds arbitrary bytes to the docker-archive importer (what an
// image upload or a snapshot goes through). It must never panic or hang;
// it either fails with a *FormatError or describes an image consistently:
// its pieces are the archive byte for byte (so a download plays back
// exactly what was uploaded), every file's digest is the sha256 of its
// content, and the layers chain as the config's diff_ids say.
//
// `go test` runs the seeds (valid archives in each layout, and broken
// ones); `make soak` runs it with -fuzz.
func FuzzRead(f *testing.F) {
	base := archivetest.LayerTar(map[string]string{"etc/os-release": "ID=berth\n"})
	app := archivetest.LayerTar(map[string]string{"app/run": "#!/bin/sh\necho hi\n"})
	for _, layout := range []archivetest.Layout{archivetest.Legacy, archivetest.OCI, archivetest.OCIGzip} {
		a := archivetest.Build(layout, "berth/fuzz:1", base, app).Data
		f.Add(a)
		f.Add(a[:len(a)/2])
		f.Add(a[:len(a)-1024])
		b := bytes.Clone(a)
		b[len(b)/3] ^= 0xff
		f.Add(b)
	}
	f.Add(archivetest.Build(archivetest.Legacy, "berth/fuzz:2", base, app, base).Data) // repeated layer: a link
	f.Add(archivetest.Build(archivetest.Legacy, "berth/empty:1").Data)
	f.Add([]byte{})
	f.Add(make([]byte, 1024)) // an empty tar
	f.Add([]byte("manifest.json"))

	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := dockerarchive.Read(bytes.NewReader(data), nil)
		if err != nil {
			var fe *dockerarchive.FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("Read failed with %T %v, want a *FormatError", err, err)
			}
			return
		}
		// The pieces are the archive, byte for byte.
		var got bytes.Buffer
		for i, p := range a.Pieces {
			switch {
			case p.File == nil:
				got.Write(p.Raw)
			case p.File.Data == nil:
				return // a large file nobody kept: nothing to compare
			case int64(len(p.File.Data)) != p.File.Size:
				t.Fatalf("piece %d (%s): %d bytes of data, size %d", i, p.File.Name, len(p.File.Data), p.File.Size)
			default:
				got.Write(p.File.Data)
			}
		}
		// Read consumes trailing bytes too; they are part of the archive.
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("pieces rebuild %d bytes, the archive has %d (first difference at %d)", got.Len(), len(data), firstDiff(got.Bytes(), data))
		}
		for _, fl := range a.Files {
			if fl.Data != nil && fl.Digest != digestOf(fl.Data) {
				t.Fatalf("%s: digest %s, content hashes to %s", fl.Name, fl.Digest, digestOf(fl.Data))
			}
		}
		if a.Config == nil || a.ImageID != a.Config.Digest {
			t.Fatalf("image id %s, config %+v", a.ImageID, a.Config)
		}
		diffIDs, err := dockerarchive.ConfigDiffIDs(a.Config.Data)
		if err != nil {
			t.Fatalf("accepted a config whose diff_ids do not parse: %v", err)
		}
		if len(diffIDs) != len(a.Layers) {
			t.Fatalf("%d layers, config lists %d diff_ids", len(a.Layers), len(diffIDs))
		}
		parent := ""
		for i, l := range a.Layers {
			if l.Digest != diffIDs[i] {
				t.Fatalf("layer %d digest %s, config says %s", i, l.Digest, diffIDs[i])
			}
			if want := dockerarchive.ChainID(parent, l.Digest); l.ChainID != want {
				t.Fatalf("layer %d chain id %s, want %s", i, l.ChainID, want)
			}
			if l.File == nil || (l.File.Digest != l.Digest && l.File.DiffID != l.Digest) {
				t.Fatalf("layer %d (%s): file %+v does not hash to %s", i, l.Path, l.File, l.Digest)
			}
			parent = l.ChainID
		}
		if a.TopChainID() != parent {
			t.Fatalf("top chain id %s, want %s", a.TopChainID(), parent)
		}
	})
}

// FuzzReadSpooled is FuzzRead with a spool, and a reader that fails
// midway: every spool writer Read created is closed, and a failing reader's
// error comes back as is.
func FuzzReadSpooled(f *testing.F) {
	big := archivetest.RandomLayer(2 << 20) // past keepMax: spooled
	a := archivetest.Build(archivetest.OCI, "berth/big:1", big).Data
	f.Add(a, uint32(len(a)))
	f.Add(a, uint32(len(a)/2))
	f.Add(a[:4096], uint32(100))
	f.Fuzz(func(t *testing.T, data []byte, failAt uint32) {
		sp := &spool{}
		boom := errors.New("reader failed")
		var r io.Reader = bytes.NewReader(data)
		failing := int(failAt) < len(data)
		if failing {
			r = io.MultiReader(bytes.NewReader(data[:failAt]), &errReader{boom})
		}
		_, err := dockerarchive.Read(r, sp)
		for i, w := range sp.ws {
			if !w.closed {
				t.Fatalf("spool writer %d was not closed", i)
			}
		}
		if failing && err != nil && !errors.Is(err, boom) {
			var fe *dockerarchive.FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("Read over a failing reader: %v, want the reader's error or a FormatError", err)
			}
		}
	})
}

type spool struct{ ws []*spoolWriter }

func (s *spool) Create() (io.WriteCloser, error) {
	w := &spoolWriter{}
	s.ws = append(s.ws, w)
	return w, nil
}

type spoolWriter struct {
	n      int
	closed bool
}

func (w *spoolWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *spoolWriter) Close() error                { w.closed = true; return nil }

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
