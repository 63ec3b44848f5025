package blob_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth/imagesvc/blob"
	"berth/imagesvc/blob/blobtest"
)

func TestFS(t *testing.T) {
	blobtest.RunStoreSuite(t, func(t *testing.T) blob.Store {
		s, err := blob.NewFS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestFSFailedPutLeavesNoTempFile(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := &failAfter{r: strings.NewReader("some bytes")}
	if _, err := s.Put(t.Context(), "images/x", r); err == nil {
		t.Fatal("Put succeeded, want an error")
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(entries) != 0 {
		t.Errorf("tmp holds %d files after a failed Put, want 0", len(entries))
	}
}

type failAfter struct {
	r    *strings.Reader
	done bool
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.done {
		return 0, os.ErrClosed
	}
	f.done = true
	return f.r.Read(p)
}
