package content

import (
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	"berth/imagesvc/digest"
	"berth/imagesvc/dockerarchive"
	"berth/imagesvc/store"
)

// Ingested is a docker save archive stored as blobs.
type Ingested struct {
	// ImageID is the Docker image id (the config's digest).
	ImageID  string
	RepoTags []string
	// Data is what the image record points at: config, generated manifest,
	// recipe and layers.
	Data store.DockerData
	// Size, MD5 and SHA512 (hex) describe the archive as it arrived (and as
	// the recipe plays it back).
	Size   int64
	MD5    string
	SHA512 string
}

// spool hands Read content writers and remembers them for cleanup.
type spool struct {
	ctx     context.Context
	c       *Store
	mu      sync.Mutex
	writers []*Writer
}

func (s *spool) Create() (io.WriteCloser, error) {
	w, err := s.c.NewWriter(s.ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.writers = append(s.writers, w)
	s.mu.Unlock()
	return w, nil
}

func (s *spool) discard() {
	for _, w := range s.writers {
		w.Discard()
	}
}

// IngestArchive reads a docker save archive from r (to its very end),
// storing each layer and the config as a blob once (blobs already stored
// are not stored again), a recipe that plays the archive back byte for
// byte, and an OCI manifest for the registry. A malformed archive is a
// *dockerarchive.FormatError; an error reading r is returned as is.
// Blobs stored before a failure are left for garbage collection.
func (c *Store) IngestArchive(ctx context.Context, r io.Reader) (*Ingested, error) {
	md5h, sha := md5.New(), sha512.New()
	hashes := digest.NewParallel(md5h, sha)
	hashed := false
	defer func() {
		if !hashed {
			hashes.Close()
		}
	}()
	counter := &countWriter{}
	src := io.TeeReader(r, io.MultiWriter(hashes, counter))
	sp := &spool{ctx: ctx, c: c}
	defer sp.discard() // no-ops for committed writers
	a, err := dockerarchive.Read(src, sp)
	hashes.Close()
	hashed = true
	if err != nil {
		return nil, err
	}
	// Store the config and the layers, and every file that was spooled.
	stored := map[*dockerarchive.File]bool{}
	keep := func(f *dockerarchive.File) error {
		if stored[f] {
			return nil
		}
		diffID := ""
		if f != a.Config {
			diffID = f.DiffID
		}
		if f.Spooled != nil {
			w := f.Spooled.(*Writer)
			if err := w.Commit(ctx, Desc{Digest: f.Digest, Size: f.Size, DiffID: diffID}); err != nil {
				return fmt.Errorf("store %s: %w", f.Name, err)
			}
		} else if _, err := c.PutBytes(ctx, f.Data, diffID); err != nil {
			return fmt.Errorf("store %s: %w", f.Name, err)
		}
		stored[f] = true
		return nil
	}
	if err := keep(a.Config); err != nil {
		return nil, err
	}
	for _, l := range a.Layers {
		if err := keep(l.File); err != nil {
			return nil, err
		}
	}
	for _, f := range a.Files {
		if f.Spooled != nil {
			if err := keep(f); err != nil {
				return nil, err
			}
		}
	}
	recipe, err := recipeFrom(a.Pieces, func(f *dockerarchive.File) bool { return stored[f] })
	if err != nil {
		return nil, err
	}
	if recipe.Size != counter.n {
		return nil, fmt.Errorf("archive recipe holds %d bytes but %d arrived", recipe.Size, counter.n)
	}
	rd, err := c.putRecipe(ctx, recipe)
	if err != nil {
		return nil, err
	}

	out := &Ingested{ImageID: a.ImageID, RepoTags: a.RepoTags, Size: counter.n,
		MD5: hex.EncodeToString(md5h.Sum(nil)), SHA512: hex.EncodeToString(sha.Sum(nil))}
	var descs []Descriptor
	for _, l := range a.Layers {
		compressed := l.File.Digest != l.Digest
		mt := LayerMediaType(compressed)
		descs = append(descs, Descriptor{MediaType: mt, Digest: l.File.Digest, Size: l.File.Size})
		out.Data.Layers = append(out.Data.Layers, store.ImageLayer{ChainID: l.ChainID, DiffID: l.Digest,
			Size: l.File.Size, BlobDigest: l.File.Digest, MediaType: mt})
	}
	manifest, mt, err := GenerateManifest(Desc{Digest: a.Config.Digest, Size: a.Config.Size}, descs)
	if err != nil {
		return nil, err
	}
	md, err := c.PutBytes(ctx, manifest, "")
	if err != nil {
		return nil, err
	}
	out.Data.ConfigDigest = a.Config.Digest
	out.Data.ManifestDigest = md.Digest
	out.Data.ManifestMediaType = mt
	out.Data.RecipeDigest = rd.Digest
	return out, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// Built is a pushed image laid out as a docker archive.
type Built struct {
	RecipeDigest string
	Size         int64
	MD5          string
	SHA512       string
}

// BuildArchive lays out an image held as blobs (a registry push) as a
// docker save archive, stores the recipe, and reads the archive once to
// compute its size and checksums (the image's Glance data).
func (c *Store) BuildArchive(ctx context.Context, img dockerarchive.Image) (*Built, error) {
	pieces, err := dockerarchive.Build(img)
	if err != nil {
		return nil, err
	}
	recipe, err := recipeFrom(pieces, func(f *dockerarchive.File) bool { return f.Data == nil })
	if err != nil {
		return nil, err
	}
	md5h, sha := md5.New(), sha512.New()
	rr := c.newRecipeReader(ctx, recipe)
	n, err := io.Copy(io.MultiWriter(md5h, sha), rr)
	rr.Close()
	if err != nil {
		return nil, fmt.Errorf("read the built archive: %w", err)
	}
	rd, err := c.putRecipe(ctx, recipe)
	if err != nil {
		return nil, err
	}
	return &Built{RecipeDigest: rd.Digest, Size: n, MD5: hex.EncodeToString(md5h.Sum(nil)),
		SHA512: hex.EncodeToString(sha.Sum(nil))}, nil
}
