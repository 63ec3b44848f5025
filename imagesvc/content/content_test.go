package content_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"berth/imagesvc/blob"
	"berth/imagesvc/content"
	"berth/imagesvc/digest"
	"berth/imagesvc/dockerarchive"
	"berth/imagesvc/dockerarchive/archivetest"
	"berth/imagesvc/store"
	"berth/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type env struct {
	c   *content.Store
	st  *store.Store
	dir string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db, err := store.Open(t.Context(), pgtest.DSN(t), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	dir := t.TempDir()
	fs, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(db)
	c := content.New(fs, st, slog.New(slog.DiscardHandler))
	return &env{c: c, st: st, dir: dir}
}

func (e *env) files(t *testing.T) int {
	t.Helper()
	n := 0
	filepath.WalkDir(filepath.Join(e.dir, "blobs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

func TestBlobsAreStoredOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("layer"), 100000)
	for i := 0; i < 3; i++ {
		d, err := e.c.PutBytes(ctx, data, "")
		if err != nil {
			t.Fatal(err)
		}
		if d.Digest != digest.Of(data) || d.Size != int64(len(data)) {
			t.Errorf("PutBytes: got %+v", d)
		}
	}
	if n := e.files(t); n != 1 {
		t.Errorf("%d blob files for three puts of the same bytes, want 1", n)
	}
	if tmp, _ := os.ReadDir(filepath.Join(e.dir, "tmp")); len(tmp) != 0 {
		t.Errorf("%d temp files left", len(tmp))
	}
	r, err := e.c.Open(ctx, digest.Of(data))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("Open: %d bytes, %v", len(got), err)
	}
	// A writer whose digest is wrong for its size is refused.
	w, _ := e.c.NewWriter(ctx)
	w.Write([]byte("abc"))
	if err := w.Commit(ctx, content.Desc{Digest: digest.Of([]byte("abc")), Size: 4}); err == nil {
		t.Error("Commit with the wrong size succeeded")
	}
}

func TestCorruptBlobFailsTheRead(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("x"), 10000)
	d, err := e.c.PutBytes(ctx, data, "")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(e.dir, "blobs", content.Key(d.Digest))
	os.WriteFile(p, bytes.Repeat([]byte("y"), 10000), 0o600)
	r, err := e.c.Open(ctx, d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadAll(r); !errors.Is(err, content.ErrCorrupt) {
		t.Errorf("read of a corrupted blob: got %v, want ErrCorrupt", err)
	}
	os.WriteFile(p, data[:50], 0o600)
	if _, err := e.c.Open(ctx, d.Digest); !errors.Is(err, content.ErrCorrupt) {
		t.Errorf("open of a truncated blob: got %v, want ErrCorrupt", err)
	}
}

func TestGarbageCollection(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	layer := archivetest.RandomLayer(300 << 10)
	arc := archivetest.Build(archivetest.Legacy, "x:1", layer)
	ing, err := e.c.IngestArchive(ctx, bytes.NewReader(arc.Data))
	if err != nil {
		t.Fatal(err)
	}
	// A lone blob nobody references, used just now.
	lone, err := e.c.PutBytes(ctx, []byte("lonely"), "")
	if err != nil {
		t.Fatal(err)
	}
	// Reference the ingested blobs from an image.
	owner, cf := "p1", "docker"
	img := &store.Image{ID: uuid.NewString(), Owner: &owner, Status: store.StatusQueued, Visibility: "private", ContainerFormat: &cf, DiskFormat: &cf}
	if err := e.st.CreateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.StartUpload(ctx, img.ID, time.Minute, func(*store.Image) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.FinishUpload(ctx, img.ID, store.Upload{Size: ing.Size, Docker: &ing.Data}); err != nil {
		t.Fatal(err)
	}

	// Within the grace period nothing goes.
	e.c.GCGrace = time.Hour
	if _, blobs, err := e.c.CollectGarbage(ctx, nil); err != nil || blobs != 0 {
		t.Fatalf("GC within the grace: %d blobs, %v", blobs, err)
	}
	e.c.GCGrace = 0
	time.Sleep(10 * time.Millisecond)
	_, blobs, err := e.c.CollectGarbage(ctx, nil)
	if err != nil || blobs != 1 {
		t.Fatalf("GC: removed %d blobs (%v), want the lone one", blobs, err)
	}
	if _, err := e.c.Stat(ctx, lone.Digest); err == nil {
		t.Error("the unreferenced blob is still recorded")
	}
	before := e.files(t)
	if _, err := e.st.DeleteImage(ctx, img.ID, func(*store.Image) error { return nil }); err != nil {
		t.Fatal(err)
	}
	layers, blobs, err := e.c.CollectGarbage(ctx, nil)
	if err != nil || layers != 1 || blobs != int64(before) {
		t.Errorf("GC after the image went: %d layers, %d blobs (%v), want 1 and %d", layers, blobs, err, before)
	}
	if n := e.files(t); n != 0 {
		t.Errorf("%d blob files left", n)
	}
	// A blob stored again after collection comes back with its data.
	if _, err := e.c.PutBytes(ctx, []byte("lonely"), ""); err != nil {
		t.Fatal(err)
	}
	if b, err := e.c.ReadAll(ctx, lone.Digest, 100); err != nil || string(b) != "lonely" {
		t.Errorf("blob stored again: %q %v", b, err)
	}
}

func TestIngestAndBuild(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	base := archivetest.RandomLayer(1<<20 + 4096)
	top := archivetest.LayerTar(map[string]string{"etc/hostname": "x\n"})
	arc := archivetest.Build(archivetest.OCIGzip, "x:1", base, top)
	ing, err := e.c.IngestArchive(ctx, bytes.NewReader(arc.Data))
	if err != nil {
		t.Fatal(err)
	}
	if ing.ImageID != arc.ImageID || len(ing.Data.Layers) != 2 || ing.Data.Layers[1].ChainID != arc.ChainIDs[1] {
		t.Fatalf("ingested: %+v", ing)
	}
	if ing.Data.Layers[0].MediaType != content.MediaTypeOCILayerGzip || ing.Data.Layers[0].DiffID != arc.DiffIDs[0] {
		t.Errorf("layer 0: %+v", ing.Data.Layers[0])
	}
	// The recipe plays the archive back byte for byte.
	rr, err := e.c.OpenRecipe(ctx, ing.Data.RecipeDigest)
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(rr)
	rr.Close()
	if err != nil || !bytes.Equal(back, arc.Data) {
		t.Fatalf("recipe playback: %d bytes (%v), want the %d of the archive", len(back), err, len(arc.Data))
	}
	// The generated manifest names the stored blobs.
	mb, err := e.c.ReadAll(ctx, ing.Data.ManifestDigest, content.MaxManifestSize)
	if err != nil {
		t.Fatal(err)
	}
	m, mt, err := content.ParseManifest(mb, ing.Data.ManifestMediaType)
	if err != nil || mt != content.MediaTypeOCIManifest || m.Config.Digest != arc.ImageID || len(m.Layers) != 2 {
		t.Fatalf("manifest: %s %v", mb, err)
	}
	// Laid out again from the blobs (as for a pushed image), it loads.
	var files []*dockerarchive.File
	for _, l := range m.Layers {
		files = append(files, &dockerarchive.File{Digest: l.Digest, Size: l.Size})
	}
	built, err := e.c.BuildArchive(ctx, dockerarchive.Image{Config: &dockerarchive.File{Digest: m.Config.Digest, Size: m.Config.Size},
		Layers: files, Manifest: &dockerarchive.File{Digest: ing.Data.ManifestDigest, Size: int64(len(mb))},
		ManifestMediaType: mt})
	if err != nil {
		t.Fatal(err)
	}
	rr, err = e.c.OpenRecipe(ctx, built.RecipeDigest)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(rr)
	rr.Close()
	if int64(len(out)) != built.Size {
		t.Errorf("built archive is %d bytes, BuildArchive said %d", len(out), built.Size)
	}
	a, err := dockerarchive.Inspect(bytes.NewReader(out))
	if err != nil || a.ImageID != arc.ImageID || a.TopChainID() != arc.ChainIDs[1] {
		t.Errorf("built archive: %+v %v", a, err)
	}
}
