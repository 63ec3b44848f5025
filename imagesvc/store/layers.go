package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// Layer is one layer of a chain. Its identity is the OCI ChainID (the
// digest of the diff on top of all its parents), so the same diff on a
// different parent is a different record.
type Layer struct {
	ChainID string `db:"chain_id" json:"chain_id"`
	// Digest is the layer's diff_id: sha256 of the uncompressed tar.
	Digest        string  `db:"digest" json:"digest"`
	ParentChainID *string `db:"parent_chain_id" json:"parent_chain_id"`
	// Size is the size of the layer as first stored, in bytes.
	Size      int64     `db:"size" json:"size"`
	CreatedAt time.Time `db:"created_at" json:"created_at"`
}

// ImageLayer is one layer of an image as the image's data has it.
type ImageLayer struct {
	ChainID string
	DiffID  string
	// Size is the size of the blob (as stored: compressed or not).
	Size int64
	// BlobDigest is the blob holding the layer's bytes for this image.
	BlobDigest string
	MediaType  string
}

// putLayers records a chain, base first, linking each layer to the one
// below it. Layers already known are kept as they are, but locked, so a
// concurrent garbage collection cannot remove them under us.
func putLayers(ctx context.Context, tx *sqlx.Tx, layers []ImageLayer, now time.Time) error {
	var parent *string
	for i := range layers {
		l := layers[i]
		_, err := tx.ExecContext(ctx, `INSERT INTO layers (chain_id, digest, parent_chain_id, size, created_at)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (chain_id) DO UPDATE SET chain_id = EXCLUDED.chain_id`,
			l.ChainID, l.DiffID, parent, l.Size, now)
		if err != nil {
			return fmt.Errorf("record layer %s: %w", l.ChainID, err)
		}
		parent = &layers[i].ChainID
	}
	return nil
}

// LayerChain returns the chain ending in chainID, base first. NotFound if
// there is no such layer.
func (s *Store) LayerChain(ctx context.Context, chainID string) ([]Layer, error) {
	var out []Layer
	err := s.db.SelectContext(ctx, &out, `WITH RECURSIVE chain AS (
			SELECT chain_id, digest, parent_chain_id, size, created_at, 0 AS depth
			FROM layers WHERE chain_id = $1
			UNION ALL
			SELECT l.chain_id, l.digest, l.parent_chain_id, l.size, l.created_at, c.depth + 1
			FROM layers l JOIN chain c ON l.chain_id = c.parent_chain_id
		)
		SELECT chain_id, digest, parent_chain_id, size, created_at FROM chain ORDER BY depth DESC`, chainID)
	if err != nil {
		return nil, fmt.Errorf("layer chain: %w", err)
	}
	if len(out) == 0 {
		return nil, apierr.NotFoundf("No layer %s", chainID)
	}
	return out, nil
}

// ImageLayerInfo is one layer of an image with what it is stored as and
// which images use it.
type ImageLayerInfo struct {
	Layer
	BlobDigest *string `db:"blob_digest"`
	BlobSize   *int64  `db:"blob_size"`
	MediaType  *string `db:"media_type"`
	// Images are the ids of every image whose chain holds this layer.
	Images pq.StringArray `db:"images"`
}

// ImageLayers lists image id's layers, base first (none for an image
// without layers).
func (s *Store) ImageLayers(ctx context.Context, id string) ([]ImageLayerInfo, error) {
	if !validID(id) {
		return nil, notFound(id)
	}
	var out []ImageLayerInfo
	err := s.db.SelectContext(ctx, &out, `SELECT l.chain_id, l.digest, l.parent_chain_id, l.size, l.created_at,
			il.blob_digest, b.size AS blob_size, il.media_type,
			ARRAY(SELECT DISTINCT u.image_id::text FROM image_layers u WHERE u.chain_id = l.chain_id ORDER BY 1) AS images
		FROM image_layers il
		JOIN layers l ON l.chain_id = il.chain_id
		LEFT JOIN blobs b ON b.digest = il.blob_digest
		WHERE il.image_id = $1
		ORDER BY il.position`, id)
	if err != nil {
		return nil, fmt.Errorf("image layers: %w", err)
	}
	return out, nil
}

// LayerUsers returns the ids of the images whose chains hold the layer.
// NotFound if there is no such layer.
func (s *Store) LayerUsers(ctx context.Context, chainID string) ([]string, error) {
	var exists bool
	if err := s.db.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM layers WHERE chain_id = $1)`, chainID); err != nil {
		return nil, fmt.Errorf("find layer: %w", err)
	}
	if !exists {
		return nil, apierr.NotFoundf("No layer %s", chainID)
	}
	var ids []string
	err := s.db.SelectContext(ctx, &ids, `SELECT DISTINCT image_id::text FROM image_layers WHERE chain_id = $1 ORDER BY 1`, chainID)
	if err != nil {
		return nil, fmt.Errorf("layer users: %w", err)
	}
	return ids, nil
}

// DeleteLayer deletes a layer no image uses (Conflict if one does) and
// every unused layer above it. NotFound if there is no such layer.
func (s *Store) DeleteLayer(ctx context.Context, chainID string) error {
	return pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
		var found string
		err := tx.GetContext(ctx, &found, `SELECT chain_id FROM layers WHERE chain_id = $1 FOR UPDATE`, chainID)
		if errors.Is(err, sql.ErrNoRows) {
			return apierr.NotFoundf("No layer %s", chainID)
		}
		if err != nil {
			return fmt.Errorf("find layer: %w", err)
		}
		// Every layer above it, and whether any image uses one of them.
		var used int
		err = tx.GetContext(ctx, &used, `WITH RECURSIVE up AS (
				SELECT chain_id FROM layers WHERE chain_id = $1
				UNION ALL
				SELECT l.chain_id FROM layers l JOIN up ON l.parent_chain_id = up.chain_id
			)
			SELECT count(DISTINCT image_id) FROM image_layers WHERE chain_id IN (SELECT chain_id FROM up)`, chainID)
		if err != nil {
			return fmt.Errorf("layer users: %w", err)
		}
		if used > 0 {
			return apierr.Conflictf("Layer %s is in use by %d image(s) and cannot be deleted.", chainID, used)
		}
		_, err = tx.ExecContext(ctx, `WITH RECURSIVE up AS (
				SELECT chain_id FROM layers WHERE chain_id = $1
				UNION ALL
				SELECT l.chain_id FROM layers l JOIN up ON l.parent_chain_id = up.chain_id
			)
			DELETE FROM layers WHERE chain_id IN (SELECT chain_id FROM up)`, chainID)
		if err != nil {
			return fmt.Errorf("delete layer: %w", err)
		}
		return nil
	})
}

// Blob is a content-addressed blob's record.
type Blob struct {
	Digest     string    `db:"digest"`
	Size       int64     `db:"size"`
	DiffID     *string   `db:"diff_id"`
	CreatedAt  time.Time `db:"created_at"`
	LastUsedAt time.Time `db:"last_used_at"`
}

// lockKey is the advisory lock that serializes placing and removing the
// data of one digest (CommitBlob, RemoveBlobData).
const lockKey = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`

// CommitBlob records the blob b (touching it if it exists) and, holding
// the digest's lock, calls place with whether the record is new; place
// puts the data in the blob store if it is not there yet. A blob is thus
// never recorded without its data, and garbage collection (which removes
// data only under the same lock, and only for digests without a record)
// cannot race with it.
func (s *Store) CommitBlob(ctx context.Context, b Blob, place func(created bool) error) error {
	return pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, lockKey, b.Digest); err != nil {
			return fmt.Errorf("lock blob: %w", err)
		}
		now := s.now()
		var created bool
		err := tx.GetContext(ctx, &created, `INSERT INTO blobs (digest, size, diff_id, created_at, last_used_at)
			VALUES ($1, $2, $3, $4, $4)
			ON CONFLICT (digest) DO UPDATE SET last_used_at = EXCLUDED.last_used_at
			RETURNING (xmax = 0)`, b.Digest, b.Size, b.DiffID, now)
		if err != nil {
			return fmt.Errorf("record blob %s: %w", b.Digest, err)
		}
		return place(created)
	})
}

// FindBlob returns the blob with digest, or NotFound.
func (s *Store) FindBlob(ctx context.Context, digest string) (*Blob, error) {
	var b Blob
	err := s.db.GetContext(ctx, &b, `SELECT digest, size, diff_id, created_at, last_used_at FROM blobs WHERE digest = $1`, digest)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apierr.NotFoundf("No blob %s", digest)
	}
	if err != nil {
		return nil, fmt.Errorf("find blob: %w", err)
	}
	return &b, nil
}

// FindBlobs returns the records of the digests that exist.
func (s *Store) FindBlobs(ctx context.Context, digests []string) (map[string]*Blob, error) {
	var bs []*Blob
	err := s.db.SelectContext(ctx, &bs, `SELECT digest, size, diff_id, created_at, last_used_at FROM blobs
		WHERE digest = ANY($1)`, pq.StringArray(digests))
	if err != nil {
		return nil, fmt.Errorf("find blobs: %w", err)
	}
	out := make(map[string]*Blob, len(bs))
	for _, b := range bs {
		out[b.Digest] = b
	}
	return out, nil
}

// TouchBlob marks the blob as used now (garbage collection spares blobs
// used within its grace period) and reports whether it exists.
func (s *Store) TouchBlob(ctx context.Context, digest string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE blobs SET last_used_at = $2 WHERE digest = $1`, digest, s.now())
	if err != nil {
		return false, fmt.Errorf("touch blob: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// lockBlobs locks the blobs (shared) for the rest of tx, so garbage
// collection skips them, and fails with Conflict if one is gone.
func lockBlobs(ctx context.Context, tx *sqlx.Tx, digests []string) error {
	if len(digests) == 0 {
		return nil
	}
	uniq := map[string]bool{}
	for _, d := range digests {
		uniq[d] = true
	}
	var found []string
	err := tx.SelectContext(ctx, &found, `SELECT digest FROM blobs WHERE digest = ANY($1) FOR SHARE`, pq.StringArray(digests))
	if err != nil {
		return fmt.Errorf("lock blobs: %w", err)
	}
	if len(found) != len(uniq) {
		for _, f := range found {
			delete(uniq, f)
		}
		for d := range uniq {
			return apierr.Conflictf("Blob %s is no longer stored (it was garbage-collected during the upload); retry the upload.", d)
		}
	}
	return nil
}

// GCResult is what a garbage collection removed.
type GCResult struct {
	Layers int64
	// Blobs are the digests whose records were deleted; their data must go
	// too (RemoveBlobData).
	Blobs []string
}

// CollectGarbage deletes the layers no image uses, and the records of at
// most limit blobs that no image references and that were not used since
// cutoff (only among the digests in only, when it is not nil). Blobs
// locked by a transaction in flight (an upload referencing them) are
// skipped. The caller then removes the data of the returned blobs with
// RemoveBlobData.
func (s *Store) CollectGarbage(ctx context.Context, cutoff time.Time, limit int, only []string) (GCResult, error) {
	var res GCResult
	err := pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
		r, err := tx.ExecContext(ctx, `DELETE FROM layers l
			WHERE NOT EXISTS (SELECT 1 FROM image_layers il WHERE il.chain_id = l.chain_id)
			  AND NOT EXISTS (SELECT 1 FROM images i WHERE i.top_layer = l.chain_id)`)
		if err != nil {
			return fmt.Errorf("collect layers: %w", err)
		}
		res.Layers, _ = r.RowsAffected()
		var digests []string
		err = tx.SelectContext(ctx, &digests, `SELECT b.digest FROM blobs b
			WHERE b.last_used_at < $1 AND ($3::text[] IS NULL OR b.digest = ANY($3))
			  AND NOT EXISTS (SELECT 1 FROM image_layers il WHERE il.blob_digest = b.digest)
			  AND NOT EXISTS (SELECT 1 FROM images i WHERE i.config_digest = b.digest)
			  AND NOT EXISTS (SELECT 1 FROM images i WHERE i.manifest_digest = b.digest)
			  AND NOT EXISTS (SELECT 1 FROM images i WHERE i.recipe_digest = b.digest)
			ORDER BY b.last_used_at
			LIMIT $2
			FOR UPDATE OF b SKIP LOCKED`, cutoff.UTC(), limit, onlyArg(only))
		if err != nil {
			return fmt.Errorf("collect blobs: %w", err)
		}
		if len(digests) == 0 {
			return nil
		}
		// A reference made meanwhile makes this fail (foreign keys): no
		// harm, the next collection tries again.
		err = tx.SelectContext(ctx, &res.Blobs, `DELETE FROM blobs WHERE digest = ANY($1) RETURNING digest`,
			pq.StringArray(digests))
		if err != nil {
			return fmt.Errorf("delete blobs: %w", err)
		}
		return nil
	})
	if err != nil {
		return GCResult{}, err
	}
	return res, nil
}

func onlyArg(only []string) any {
	if only == nil {
		return nil
	}
	return pq.StringArray(only)
}

// ImageBlobs lists the blobs image id references (its layers' blobs,
// config, manifest and recipe).
func (s *Store) ImageBlobs(ctx context.Context, id string) ([]string, error) {
	if !validID(id) {
		return nil, nil
	}
	var out []string
	err := s.db.SelectContext(ctx, &out, `SELECT blob_digest FROM image_layers WHERE image_id = $1 AND blob_digest IS NOT NULL
		UNION SELECT d FROM images, unnest(ARRAY[config_digest, manifest_digest, recipe_digest]) AS d
		WHERE id = $1 AND d IS NOT NULL`, id)
	if err != nil {
		return nil, fmt.Errorf("image blobs: %w", err)
	}
	return out, nil
}

// RemoveBlobData calls remove for digest, holding the digest's lock,
// unless the blob has been recorded again meanwhile (then its data stays).
func (s *Store) RemoveBlobData(ctx context.Context, digest string, remove func() error) error {
	return pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, lockKey, digest); err != nil {
			return fmt.Errorf("lock blob: %w", err)
		}
		var exists bool
		if err := tx.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = $1)`, digest); err != nil {
			return fmt.Errorf("find blob: %w", err)
		}
		if exists {
			return nil
		}
		return remove()
	})
}

// BlobUsage counts the blobs and their bytes, for reports and tests.
func (s *Store) BlobUsage(ctx context.Context) (count int64, bytes int64, err error) {
	var u struct {
		Count int64 `db:"count"`
		Bytes int64 `db:"bytes"`
	}
	if err := s.db.GetContext(ctx, &u, `SELECT count(*) AS count, COALESCE(sum(size), 0) AS bytes FROM blobs`); err != nil {
		return 0, 0, fmt.Errorf("blob usage: %w", err)
	}
	return u.Count, u.Bytes, nil
}
