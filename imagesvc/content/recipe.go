package content

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"berth/imagesvc/dockerarchive"
)

// Recipe lays out a byte stream (a docker archive) as literal bytes and
// stretches of stored blobs. It is stored as a blob itself (JSON).
type Recipe struct {
	Size  int64  `json:"size"`
	Parts []Part `json:"parts"`
}

// Part is literal Data or a whole Blob.
type Part struct {
	Data []byte `json:"data,omitempty"`
	Blob string `json:"blob,omitempty"`
	Size int64  `json:"size"`
}

// maxRecipe bounds a recipe blob (an archive's headers and small files).
const maxRecipe = 96 << 20

// recipeFrom turns archive pieces into a recipe: files for which stored
// is true are blob references, the rest literal bytes.
func recipeFrom(pieces []dockerarchive.Piece, stored func(*dockerarchive.File) bool) (*Recipe, error) {
	r := &Recipe{}
	lit := func(b []byte) {
		if len(b) == 0 {
			return
		}
		if n := len(r.Parts); n > 0 && r.Parts[n-1].Blob == "" {
			r.Parts[n-1].Data = append(r.Parts[n-1].Data, b...)
			r.Parts[n-1].Size += int64(len(b))
		} else {
			r.Parts = append(r.Parts, Part{Data: append([]byte(nil), b...), Size: int64(len(b))})
		}
	}
	for _, p := range pieces {
		switch {
		case p.File == nil:
			lit(p.Raw)
		case p.File.Size == 0:
			// Nothing to play back (an empty layer is still stored as a blob).
		case stored(p.File):
			r.Parts = append(r.Parts, Part{Blob: p.File.Digest, Size: p.File.Size})
		case p.File.Data != nil:
			lit(p.File.Data)
		default:
			return nil, fmt.Errorf("archive file %s has neither data nor a blob", p.File.Name)
		}
		r.Size += p.Size()
	}
	return r, nil
}

// putRecipe stores r as a blob.
func (c *Store) putRecipe(ctx context.Context, r *Recipe) (Desc, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return Desc{}, err
	}
	return c.PutBytes(ctx, b, "")
}

// loadRecipe reads the recipe blob d.
func (c *Store) loadRecipe(ctx context.Context, d string) (*Recipe, error) {
	b, err := c.ReadAll(ctx, d, maxRecipe)
	if err != nil {
		return nil, err
	}
	var r Recipe
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("recipe %s: %w", d, err)
	}
	var sum int64
	for _, p := range r.Parts {
		if p.Size < 0 || (p.Blob == "" && int64(len(p.Data)) != p.Size) {
			return nil, fmt.Errorf("recipe %s: bad part", d)
		}
		sum += p.Size
	}
	if sum != r.Size {
		return nil, fmt.Errorf("recipe %s: parts add up to %d, not %d", d, sum, r.Size)
	}
	return &r, nil
}

// OpenRecipe opens the byte stream the recipe blob d lays out. The
// reader is seekable (for Range requests); blobs read whole are checked
// against their digests.
func (c *Store) OpenRecipe(ctx context.Context, d string) (*RecipeReader, error) {
	r, err := c.loadRecipe(ctx, d)
	if err != nil {
		return nil, err
	}
	return c.newRecipeReader(ctx, r), nil
}

func (c *Store) newRecipeReader(ctx context.Context, r *Recipe) *RecipeReader {
	offs := make([]int64, len(r.Parts))
	var off int64
	for i, p := range r.Parts {
		offs[i] = off
		off += p.Size
	}
	return &RecipeReader{c: c, ctx: ctx, r: r, offs: offs, cur: -1}
}

// RecipeReader plays a recipe back.
type RecipeReader struct {
	c    *Store
	ctx  context.Context
	r    *Recipe
	offs []int64
	pos  int64
	cur  int // part whose blob is open, -1 for none
	blob *BlobReader
}

// Size is the length of the stream.
func (rr *RecipeReader) Size() int64 { return rr.r.Size }

// Read implements io.Reader.
func (rr *RecipeReader) Read(p []byte) (int, error) {
	if rr.pos >= rr.r.Size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	i := sort.Search(len(rr.offs), func(i int) bool { return rr.offs[i] > rr.pos }) - 1
	part := rr.r.Parts[i]
	off := rr.pos - rr.offs[i]
	if part.Blob == "" {
		n := copy(p, part.Data[off:])
		rr.pos += int64(n)
		return n, nil
	}
	if rr.cur != i {
		rr.closeBlob()
		b, err := rr.c.Open(rr.ctx, part.Blob)
		if err != nil {
			return 0, err
		}
		rr.blob, rr.cur = b, i
	}
	if _, err := rr.blob.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	if rest := part.Size - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := rr.blob.Read(p)
	rr.pos += int64(n)
	if err == io.EOF {
		err = nil
		if rr.pos < rr.offs[i]+part.Size {
			err = io.ErrUnexpectedEOF
		}
		rr.closeBlob()
	} else if err == nil && rr.pos == rr.offs[i]+part.Size {
		// Read to the blob's end: let it check the digest.
		var one [1]byte
		if _, eerr := rr.blob.Read(one[:]); eerr != io.EOF {
			if eerr == nil {
				eerr = errors.New("blob is longer than recorded")
			}
			err = eerr
		}
		rr.closeBlob()
	}
	return n, err
}

func (rr *RecipeReader) closeBlob() {
	if rr.blob != nil {
		rr.blob.Close()
		rr.blob, rr.cur = nil, -1
	}
}

// Seek implements io.Seeker.
func (rr *RecipeReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = rr.pos + offset
	case io.SeekEnd:
		abs = rr.r.Size + offset
	default:
		return 0, errors.New("recipe seek: bad whence")
	}
	if abs < 0 {
		return 0, errors.New("recipe seek: negative position")
	}
	rr.pos = abs
	return abs, nil
}

// Close implements io.Closer.
func (rr *RecipeReader) Close() error {
	rr.closeBlob()
	return nil
}
