// Package blob stores image data as opaque blobs under string keys.
//
// Store is the seam for storage drivers: the filesystem driver here (FS)
// is the default; an object-store driver (S3, Swift) implements the same
// five calls. The contract every driver must meet is the suite in
// blob/blobtest. Keys are slash-separated paths of [A-Za-z0-9._-]
// segments, e.g. "images/<uuid>" or "sha256/ab/<hex>".
//
// An object-store driver maps the calls one to one: Put is a single or
// multipart PUT of the final key (an object store makes an object visible
// only when its upload completes, which is the atomicity Put promises);
// NewWriter is a multipart upload to a temporary key, and Commit a
// server-side copy to the final key followed by a delete of the temporary
// one (S3 CopyObject, Swift COPY), or a multipart upload straight to the
// final key when the driver can learn the key up front; Get is a GET
// (with Range for seeks), Stat a HEAD, Delete a DELETE. Leftover temporary
// keys are removed by a bucket lifecycle rule.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) for a key that holds no blob.
var ErrNotFound = errors.New("blob not found")

// ErrInvalidKey is returned (wrapped) for a malformed key.
var ErrInvalidKey = errors.New("invalid blob key")

// Info describes a stored blob.
type Info struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Store keeps blobs. Implementations must be safe for concurrent use.
type Store interface {
	// Put stores everything r yields under key, replacing any blob there.
	// It is atomic: readers see the old blob (or none) until the new one is
	// complete and durable, and if r returns an error, ctx ends or storing
	// fails, nothing is left under key and the error (wrapping r's error,
	// so errors.Is/As see it) is returned.
	Put(ctx context.Context, key string, r io.Reader) (Info, error)
	// Get opens the blob under key. The reader may also implement
	// io.Seeker (the filesystem driver's does). ErrNotFound if absent.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)
	// Stat describes the blob under key. ErrNotFound if absent.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes the blob under key; deleting an absent key is not an
	// error.
	Delete(ctx context.Context, key string) error
	// NewWriter starts a blob whose key is chosen when it is committed
	// (content-addressed data is named by its digest, known only at the
	// end). Nothing is visible under any key until Commit.
	NewWriter(ctx context.Context) (Writer, error)
}

// Writer is a blob being written. Write, then Close (optional: no more
// writes, resources released), then Commit or Discard. Discard after a
// Commit does nothing, so `defer w.Discard()` is always safe.
type Writer interface {
	io.Writer
	// Size is how many bytes were written.
	Size() int64
	// Close ends writing and makes the bytes durable; the writer holds no
	// open file or connection after it.
	Close() error
	// Commit atomically makes the written bytes the blob under key,
	// replacing any blob there (Close is implied).
	Commit(ctx context.Context, key string) (Info, error)
	// Discard drops what was written.
	Discard() error
}

// ValidKey reports whether key is a well-formed blob key.
func ValidKey(key string) error {
	if key == "" || len(key) > 512 {
		return fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q", ErrInvalidKey, key)
		}
		for _, c := range seg {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
				c == '.' || c == '_' || c == '-'
			if !ok {
				return fmt.Errorf("%w: %q", ErrInvalidKey, key)
			}
		}
	}
	return nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
