package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// FS is a Store on a local filesystem: blobs live under <root>/blobs/<key>,
// and a Put writes <root>/tmp/<random>, fsyncs it, renames it into place and
// fsyncs the directory, so a crash leaves either the old blob or the new one.
type FS struct {
	root string
}

var _ Store = (*FS)(nil)

// staleTemp is how old a leftover temp file must be before NewFS removes it.
const staleTemp = 24 * time.Hour

// NewFS returns a filesystem store rooted at dir, creating it if needed and
// removing temp files that crashed Puts left behind.
func NewFS(dir string) (*FS, error) {
	f := &FS{root: dir}
	for _, d := range []string{f.blobDir(), f.tmpDir()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("blob store: %w", err)
		}
	}
	entries, err := os.ReadDir(f.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTemp {
			_ = os.Remove(filepath.Join(f.tmpDir(), e.Name()))
		}
	}
	return f, nil
}

func (f *FS) blobDir() string { return filepath.Join(f.root, "blobs") }
func (f *FS) tmpDir() string  { return filepath.Join(f.root, "tmp") }

func (f *FS) path(key string) (string, error) {
	if err := ValidKey(key); err != nil {
		return "", err
	}
	return filepath.Join(f.blobDir(), filepath.FromSlash(key)), nil
}

// Put implements Store.
func (f *FS) Put(ctx context.Context, key string, r io.Reader) (Info, error) {
	if err := ValidKey(key); err != nil {
		return Info{}, err
	}
	w, err := f.NewWriter(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("blob put %s: %w", key, err)
	}
	defer w.Discard()
	if _, err := io.Copy(w, ctxReader{ctx: ctx, r: r}); err != nil {
		return Info{}, fmt.Errorf("blob put %s: %w", key, err)
	}
	return w.Commit(ctx, key)
}

// NewWriter implements Store: the bytes go to a temp file that Commit
// renames into place.
func (f *FS) NewWriter(ctx context.Context) (Writer, error) {
	tmp, err := os.CreateTemp(f.tmpDir(), "put-*")
	if err != nil {
		return nil, fmt.Errorf("blob writer: %w", err)
	}
	return &fsWriter{fs: f, file: tmp, path: tmp.Name()}, nil
}

type fsWriter struct {
	fs     *FS
	file   *os.File // nil once closed
	path   string   // "" once committed or discarded
	n      int64
	err    error // sticky write or close error
	closed bool
}

func (w *fsWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.file == nil {
		return 0, errors.New("blob writer: write after close")
	}
	n, err := w.file.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

func (w *fsWriter) Size() int64 { return w.n }

func (w *fsWriter) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.file == nil {
		return w.err
	}
	if err := w.file.Sync(); err != nil && w.err == nil {
		w.err = fmt.Errorf("sync: %w", err)
	}
	if err := w.file.Close(); err != nil && w.err == nil {
		w.err = fmt.Errorf("close: %w", err)
	}
	w.file = nil
	return w.err
}

func (w *fsWriter) Commit(ctx context.Context, key string) (Info, error) {
	dst, err := w.fs.path(key)
	if err != nil {
		return Info{}, err
	}
	if w.path == "" {
		return Info{}, errors.New("blob writer: already committed or discarded")
	}
	if err := w.Close(); err != nil {
		return Info{}, fmt.Errorf("blob put %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("blob put %s: %w", key, err)
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return Info{}, fmt.Errorf("blob put %s: %w", key, err)
	}
	if err := os.Rename(w.path, dst); err != nil {
		return Info{}, fmt.Errorf("blob put %s: rename: %w", key, err)
	}
	w.path = ""
	if err := syncDir(dir); err != nil {
		return Info{}, fmt.Errorf("blob put %s: sync dir: %w", key, err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		return Info{}, fmt.Errorf("blob put %s: %w", key, err)
	}
	if fi.Size() != w.n {
		return Info{}, fmt.Errorf("blob put %s: wrote %d bytes but the file holds %d", key, w.n, fi.Size())
	}
	return Info{Key: key, Size: w.n, ModTime: fi.ModTime()}, nil
}

func (w *fsWriter) Discard() error {
	if w.file != nil {
		w.file.Close()
		w.file = nil
	}
	w.closed = true
	if w.path == "" {
		return nil
	}
	err := os.Remove(w.path)
	w.path = ""
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob discard: %w", err)
	}
	return nil
}

// Get implements Store; the reader is an *os.File (seekable).
func (f *FS) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	p, err := f.path(key)
	if err != nil {
		return nil, Info{}, err
	}
	file, err := os.Open(p)
	if err != nil {
		return nil, Info{}, f.mapErr(key, err)
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, Info{}, f.mapErr(key, err)
	}
	return file, Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Stat implements Store.
func (f *FS) Stat(ctx context.Context, key string) (Info, error) {
	p, err := f.path(key)
	if err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return Info{}, f.mapErr(key, err)
	}
	if !fi.Mode().IsRegular() {
		return Info{}, fmt.Errorf("blob %s: %w", key, ErrNotFound)
	}
	return Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete implements Store.
func (f *FS) Delete(ctx context.Context, key string) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob delete %s: %w", key, err)
	}
	return nil
}

func (f *FS) mapErr(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", key, ErrNotFound)
	}
	return fmt.Errorf("blob %s: %w", key, err)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
