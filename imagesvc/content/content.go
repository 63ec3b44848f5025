// Package content is imagesvc's content-addressed storage: every layer,
// image config, registry manifest and archive recipe is a blob stored once
// under its digest (blob store key sha256/<2 hex>/<hex>) and recorded in
// the database, shared by every image that uses it, and garbage-collected
// when no image does.
//
// On top of the blobs it builds what the two APIs need: IngestArchive
// turns a docker save archive into blobs plus a recipe that plays the
// archive back byte for byte (so Glance's checksum of the uploaded data
// stays true); BuildArchive lays out a pushed image as a docker archive;
// Manifest and friends are the registry's manifest formats.
package content

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"time"

	"berth/imagesvc/blob"
	"berth/imagesvc/digest"
	"berth/imagesvc/store"
	"berth/internal/apierr"
)

// DefaultGCGrace is how long an unreferenced blob is kept after its last
// use: an upload in flight uses blobs before it references them.
const DefaultGCGrace = time.Hour

// Store stores and serves blobs.
type Store struct {
	blobs blob.Store
	db    *store.Store
	log   *slog.Logger
	// GCGrace is how long unreferenced blobs are kept after their last use.
	GCGrace time.Duration
}

// New returns a content store over the blob store and the database.
func New(blobs blob.Store, db *store.Store, log *slog.Logger) *Store {
	if log == nil {
		log = slog.Default()
	}
	return &Store{blobs: blobs, db: db, log: log.With("component", "imagesvc-content"), GCGrace: DefaultGCGrace}
}

// Key is the blob store key of the blob with digest d.
func Key(d string) string {
	h := digest.Hex(d)
	return "sha256/" + h[:2] + "/" + h
}

// Desc describes a blob.
type Desc struct {
	Digest string
	Size   int64
	// DiffID is the digest of the uncompressed bytes of a layer blob ("" if
	// it is not a layer or does not decompress).
	DiffID string
}

// Writer is a blob being written; the caller computes its digest.
type Writer struct {
	c *Store
	w blob.Writer
}

// NewWriter starts a blob.
func (c *Store) NewWriter(ctx context.Context) (*Writer, error) {
	w, err := c.blobs.NewWriter(ctx)
	if err != nil {
		return nil, err
	}
	return &Writer{c: c, w: w}, nil
}

// Write implements io.Writer.
func (w *Writer) Write(p []byte) (int, error) { return w.w.Write(p) }

// Close ends writing (the data is kept for Commit).
func (w *Writer) Close() error { return w.w.Close() }

// Size is how many bytes were written.
func (w *Writer) Size() int64 { return w.w.Size() }

// Discard drops the data (after a Commit, nothing happens).
func (w *Writer) Discard() { _ = w.w.Discard() }

// Commit stores what was written as the blob d (whose digest the caller
// computed over exactly these bytes): recorded, and its data placed unless
// the blob was already stored, in which case the bytes are dropped.
func (w *Writer) Commit(ctx context.Context, d Desc) error {
	defer w.Discard()
	if !digest.Valid(d.Digest) {
		return fmt.Errorf("commit blob: invalid digest %q", d.Digest)
	}
	if d.Size != w.Size() {
		return fmt.Errorf("commit blob %s: %d bytes written, %d expected", d.Digest, w.Size(), d.Size)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("commit blob %s: %w", d.Digest, err)
	}
	var diffID *string
	if d.DiffID != "" {
		diffID = &d.DiffID
	}
	return w.c.db.CommitBlob(ctx, store.Blob{Digest: d.Digest, Size: d.Size, DiffID: diffID}, func(created bool) error {
		if !created {
			info, err := w.c.blobs.Stat(ctx, Key(d.Digest))
			if err == nil && info.Size == d.Size {
				return nil // stored once already
			}
			w.c.log.Warn("recorded blob had no data; storing it again", "digest", d.Digest, "err", err)
		}
		_, err := w.w.Commit(ctx, Key(d.Digest))
		return err
	})
}

// PutBytes stores data as a blob (diffID as given, "" for non-layers).
func (c *Store) PutBytes(ctx context.Context, data []byte, diffID string) (Desc, error) {
	d := Desc{Digest: digest.Of(data), Size: int64(len(data)), DiffID: diffID}
	w, err := c.NewWriter(ctx)
	if err != nil {
		return Desc{}, err
	}
	if _, err := w.Write(data); err != nil {
		w.Discard()
		return Desc{}, err
	}
	if err := w.Commit(ctx, d); err != nil {
		return Desc{}, err
	}
	return d, nil
}

// Stat returns the record of the blob with digest d (NotFound if none).
func (c *Store) Stat(ctx context.Context, d string) (*store.Blob, error) {
	return c.db.FindBlob(ctx, d)
}

// ErrCorrupt is returned (wrapped) by a read that found a blob whose
// bytes do not match its digest.
var ErrCorrupt = errors.New("stored blob does not match its digest")

// Open opens the blob with digest d. The reader is seekable; a read from
// start to end checks the bytes against the digest and fails with
// ErrCorrupt at the end if they differ. NotFound if the blob is unknown.
func (c *Store) Open(ctx context.Context, d string) (*BlobReader, error) {
	b, err := c.db.FindBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	rc, info, err := c.blobs.Get(ctx, Key(d))
	if errors.Is(err, blob.ErrNotFound) {
		c.log.Error("recorded blob has no data", "digest", d)
		return nil, apierr.Wrap(err, apierr.Unavailable, "The data of blob %s is missing.", d)
	}
	if err != nil {
		return nil, err
	}
	if info.Size != b.Size {
		rc.Close()
		c.log.Error("stored blob has the wrong size", "digest", d, "size", info.Size, "want", b.Size)
		return nil, fmt.Errorf("blob %s: %w (size %d, want %d)", d, ErrCorrupt, info.Size, b.Size)
	}
	return &BlobReader{c: c, ctx: ctx, rc: rc, digest: d, size: b.Size, h: sha256.New(), verify: true}, nil
}

// BlobReader reads a blob; see Open.
type BlobReader struct {
	c      *Store
	ctx    context.Context
	rc     io.ReadCloser
	digest string
	size   int64
	pos    int64
	h      hash.Hash
	verify bool // still reading sequentially from the start
}

// Size is the blob's size.
func (r *BlobReader) Size() int64 { return r.size }

// Read implements io.Reader.
func (r *BlobReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if r.verify && n > 0 {
		r.h.Write(p[:n])
	}
	r.pos += int64(n)
	if err == io.EOF {
		if r.pos != r.size {
			return n, fmt.Errorf("blob %s: %w (read %d of %d bytes)", r.digest, ErrCorrupt, r.pos, r.size)
		}
		if r.verify && digest.FromHash(r.h) != r.digest {
			r.c.log.Error("stored blob does not match its digest", "digest", r.digest)
			return n, fmt.Errorf("blob %s: %w", r.digest, ErrCorrupt)
		}
	}
	return n, err
}

// Seek implements io.Seeker; a seek away from where reading left off
// stops the digest check.
func (r *BlobReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.pos + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, errors.New("blob seek: bad whence")
	}
	if abs < 0 {
		return 0, errors.New("blob seek: negative position")
	}
	if abs == r.pos {
		return abs, nil
	}
	r.verify = false
	if s, ok := r.rc.(io.Seeker); ok {
		if _, err := s.Seek(abs, io.SeekStart); err != nil {
			return 0, err
		}
		r.pos = abs
		return abs, nil
	}
	// A store without seeks: reopen and skip.
	r.rc.Close()
	rc, _, err := r.c.blobs.Get(r.ctx, Key(r.digest))
	if err != nil {
		return 0, err
	}
	r.rc = rc
	if _, err := io.CopyN(io.Discard, rc, abs); err != nil && err != io.EOF {
		return 0, err
	}
	r.pos = abs
	return abs, nil
}

// Close implements io.Closer.
func (r *BlobReader) Close() error { return r.rc.Close() }

// ReadAll reads a small blob whole (at most max bytes).
func (c *Store) ReadAll(ctx context.Context, d string, max int64) ([]byte, error) {
	r, err := c.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if r.Size() > max {
		return nil, fmt.Errorf("blob %s is %d bytes, more than %d", d, r.Size(), max)
	}
	return io.ReadAll(r)
}

// CollectGarbage removes the layers no image uses and the blobs no image
// references that were not used for GCGrace (only among the digests in
// only, when it is not nil: the blobs an image deletion released). It
// returns how many of each it removed.
func (c *Store) CollectGarbage(ctx context.Context, only []string) (layers, blobs int64, err error) {
	const batch = 500
	if only != nil && len(only) == 0 {
		only = []string{}
	}
	for {
		res, err := c.db.CollectGarbage(ctx, c.db.Now().Add(-c.GCGrace), batch, only)
		if err != nil {
			return layers, blobs, err
		}
		layers += res.Layers
		for _, d := range res.Blobs {
			err := c.db.RemoveBlobData(ctx, d, func() error { return c.blobs.Delete(ctx, Key(d)) })
			if err != nil {
				// The record is gone; the data stays as an orphan.
				c.log.Error("cannot remove the data of a collected blob", "digest", d, "err", err)
				continue
			}
			blobs++
		}
		if len(res.Blobs) < batch {
			break
		}
	}
	if layers > 0 || blobs > 0 {
		c.log.Info("garbage collected", "layers", layers, "blobs", blobs)
	}
	return layers, blobs, nil
}
