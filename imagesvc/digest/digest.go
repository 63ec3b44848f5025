// Package digest computes the digests imagesvc records for blobs: the
// sha256 of the bytes as stored, and for a gzip-compressed layer also the
// sha256 of its uncompressed content (the layer's diff_id), in one pass.
package digest

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"regexp"
)

// Algorithm is the only digest algorithm imagesvc stores blobs under.
const Algorithm = "sha256"

var re = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

// Valid reports whether d is a well-formed "sha256:<64 hex>" digest.
func Valid(d string) bool { return re.MatchString(d) }

// Hex is the hex part of a valid digest.
func Hex(d string) string { return d[len(Algorithm)+1:] }

// Of is the digest of b.
func Of(b []byte) string {
	s := sha256.Sum256(b)
	return Algorithm + ":" + hex.EncodeToString(s[:])
}

// FromHash formats h's sum (a sha256) as a digest.
func FromHash(h hash.Hash) string { return Algorithm + ":" + hex.EncodeToString(h.Sum(nil)) }

// Digester is an io.Writer that digests what passes through it. Create
// one with New; call Close before reading DiffID.
type Digester struct {
	h    hash.Hash
	n    int64
	gz   *gunzip
	peek []byte // the first bytes, until we know whether it is gzip
	done bool
	// layer says whether to look for gzip and compute DiffID.
	layer bool
	// diffID is the uncompressed digest, set by Close.
	diffID string
}

// New returns a digester. With layer set it also computes the digest of
// the decompressed content when the bytes are gzip (a compressed layer).
func New(layer bool) *Digester {
	return &Digester{h: sha256.New(), layer: layer}
}

// Write implements io.Writer; it never fails.
func (d *Digester) Write(p []byte) (int, error) {
	d.h.Write(p)
	d.n += int64(len(p))
	if !d.layer {
		return len(p), nil
	}
	if !d.done {
		d.peek = append(d.peek, p...)
		if len(d.peek) < 2 {
			return len(p), nil
		}
		d.done = true
		if d.peek[0] == 0x1f && d.peek[1] == 0x8b {
			d.gz = newGunzip()
			d.gz.write(d.peek)
		}
		d.peek = nil
		return len(p), nil
	}
	if d.gz != nil {
		d.gz.write(p)
	}
	return len(p), nil
}

// Size is how many bytes were written.
func (d *Digester) Size() int64 { return d.n }

// Digest is the sha256 digest of the bytes written so far.
func (d *Digester) Digest() string { return FromHash(d.h) }

// Compressed reports whether the bytes are gzip (known after 2 bytes).
func (d *Digester) Compressed() bool { return d.gz != nil }

// Close finishes the decompression (if any) and returns the diff_id: the
// digest of the decompressed bytes for gzip, of the bytes themselves
// otherwise, and "" for gzip that does not decompress cleanly.
func (d *Digester) Close() string {
	if d.diffID != "" || (d.gz != nil && d.gz.finished) {
		return d.diffID
	}
	if d.gz == nil {
		d.diffID = d.Digest()
		return d.diffID
	}
	d.diffID = d.gz.finish()
	return d.diffID
}

// gunzip hashes the decompressed form of the gzip stream written to it (a
// goroutine decompresses). A write never fails: a stream that is not valid
// gzip just has no digest.
type gunzip struct {
	pw       *io.PipeWriter
	done     chan string
	finished bool
}

var errDone = errors.New("done")

func newGunzip() *gunzip {
	pr, pw := io.Pipe()
	g := &gunzip{pw: pw, done: make(chan string, 1)}
	go func() {
		digest := ""
		if zr, err := gzip.NewReader(pr); err == nil {
			h := sha256.New()
			// Multistream is the default: concatenated members are one stream.
			if _, err := io.Copy(h, zr); err == nil {
				digest = FromHash(h)
			}
		}
		pr.CloseWithError(errDone) // unblock the writer if we stopped early
		g.done <- digest
	}()
	return g
}

func (g *gunzip) write(p []byte) {
	_, _ = g.pw.Write(p) // errors only mean the decompressor gave up
}

func (g *gunzip) finish() string {
	g.pw.Close()
	g.finished = true
	return <-g.done
}
