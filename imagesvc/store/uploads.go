package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// An image's data arrives in one of two ways, both guarded by a lease
// (LeaseExpiresAt) that the process doing the work keeps extending:
//
//	upload:  queued → saving → active            (PUT file)
//	import:  queued → uploading → importing → active   (PUT stage, POST import)
//
// A failure puts the image back where it came from. A process that dies
// leaves a lease that runs out; RecoverExpiredLeases then does the same.

// transition locks image id, lets check refuse, requires status from,
// and moves it to status to with a lease until leaseUntil (nil clears it).
func (s *Store) transition(ctx context.Context, id string, check func(img *Image) error, from []string,
	to string, leaseUntil *time.Time) (*Image, error) {
	return s.UpdateImage(ctx, id, func(img *Image) error {
		if check != nil {
			if err := check(img); err != nil {
				return err
			}
		}
		ok := false
		for _, f := range from {
			ok = ok || img.Status == f
		}
		if !ok {
			return apierr.Conflictf("Image status transition from %s to %s is not allowed", img.Status, to)
		}
		img.Status = to
		img.LeaseExpiresAt = leaseUntil
		return nil
	})
}

func (s *Store) leaseUntil(lease time.Duration) *time.Time {
	t := s.now().Add(lease)
	return &t
}

// StartUpload moves the image from queued to saving, with a lease, after
// check allows it. Any other status is Conflict: only one upload, ever,
// per image.
func (s *Store) StartUpload(ctx context.Context, id string, lease time.Duration, check func(img *Image) error) (*Image, error) {
	return s.transition(ctx, id, check, []string{StatusQueued}, StatusSaving, s.leaseUntil(lease))
}

// StartStage moves the image from queued to uploading (data being staged
// for import), with a lease.
func (s *Store) StartStage(ctx context.Context, id string, lease time.Duration, check func(img *Image) error) (*Image, error) {
	return s.transition(ctx, id, check, []string{StatusQueued}, StatusUploading, s.leaseUntil(lease))
}

// FinishStage records staged data: the image stays uploading, without a
// lease, until it is imported. NotFound or Conflict if the image was
// deleted or changed meanwhile (the caller removes the staged data).
func (s *Store) FinishStage(ctx context.Context, id, stagingKey string) (*Image, error) {
	return s.UpdateImage(ctx, id, func(img *Image) error {
		if img.Status != StatusUploading || img.LeaseExpiresAt == nil {
			return apierr.Conflictf("Image %s is no longer being staged", id)
		}
		img.StagingKey = &stagingKey
		img.LeaseExpiresAt = nil
		return nil
	})
}

// StartImport moves a staged image (uploading, data staged, no lease) to
// importing with a lease after check allows it.
func (s *Store) StartImport(ctx context.Context, id string, lease time.Duration, check func(img *Image) error) (*Image, error) {
	return s.UpdateImage(ctx, id, func(img *Image) error {
		if err := check(img); err != nil {
			return err
		}
		if img.Status != StatusUploading || img.LeaseExpiresAt != nil || img.StagingKey == nil {
			return apierr.Conflictf("Image %s has no staged data to import (status %s)", id, img.Status)
		}
		img.Status = StatusImporting
		img.LeaseExpiresAt = s.leaseUntil(lease)
		return nil
	})
}

// ExtendLease pushes the lease of an image with work in flight (status
// one of statuses) to now + lease. It reports false when the image is
// gone or no longer in such a status.
func (s *Store) ExtendLease(ctx context.Context, id string, lease time.Duration, statuses ...string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE images SET lease_expires_at = $2
		WHERE id = $1 AND status = ANY($3) AND lease_expires_at IS NOT NULL`,
		id, s.leaseUntil(lease), pq.StringArray(statuses))
	if err != nil {
		return false, fmt.Errorf("extend lease: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// AbortUpload puts an image whose upload, stage or import failed back
// where it came from: saving → queued, uploading (mid-stage) → queued,
// importing → uploading (the staged data is kept for another try). An
// image that is gone or has no work in flight is left alone.
func (s *Store) AbortUpload(ctx context.Context, id string) error {
	if !validID(id) {
		return nil
	}
	_, err := s.db.ExecContext(ctx, `UPDATE images SET
			status = CASE status WHEN 'importing' THEN 'uploading' ELSE 'queued' END,
			lease_expires_at = NULL, updated_at = $2
		WHERE id = $1 AND lease_expires_at IS NOT NULL AND status IN ('saving', 'uploading', 'importing')`,
		id, s.now())
	if err != nil {
		return fmt.Errorf("abort upload: %w", err)
	}
	return nil
}

// DropStaged puts an image whose staged data turned out bad back to
// queued, forgetting the data (the caller removes it).
func (s *Store) DropStaged(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE images SET status = 'queued', staging_key = NULL,
			lease_expires_at = NULL, updated_at = $2
		WHERE id = $1 AND status IN ('uploading', 'importing')`, id, s.now())
	if err != nil {
		return fmt.Errorf("drop staged data: %w", err)
	}
	return nil
}

// RecoverExpiredLeases aborts (as AbortUpload does) every upload, stage
// or import whose lease ran out: its process died. It returns the ids.
func (s *Store) RecoverExpiredLeases(ctx context.Context) ([]string, error) {
	var ids []string
	err := s.db.SelectContext(ctx, &ids, `UPDATE images SET
			status = CASE status WHEN 'importing' THEN 'uploading' ELSE 'queued' END,
			lease_expires_at = NULL, updated_at = $1
		WHERE lease_expires_at < $1 AND status IN ('saving', 'uploading', 'importing')
		RETURNING id`, s.now())
	if err != nil {
		return nil, fmt.Errorf("recover uploads: %w", err)
	}
	return ids, nil
}

// Upload is what a finished upload (or import) found.
type Upload struct {
	// BlobKey is where plain image data was stored ("" for a docker image,
	// whose data is its layers).
	BlobKey     string
	Size        int64
	Checksum    string // md5 hex
	OSHashAlgo  string
	OSHashValue string
	// Properties are set on the image (e.g. docker_image_id).
	Properties map[string]string
	// Docker is set for a docker image.
	Docker *DockerData
}

// DockerData is what a docker image is made of.
type DockerData struct {
	ConfigDigest      string
	ManifestDigest    string
	ManifestMediaType string
	RecipeDigest      string
	// Layers, base first: recorded (shared layers once), and the image
	// points at the top one.
	Layers []ImageLayer
}

// blobs is every blob digest d references.
func (d *DockerData) blobs() []string {
	var out []string
	for _, b := range []string{d.ConfigDigest, d.ManifestDigest, d.RecipeDigest} {
		if b != "" {
			out = append(out, b)
		}
	}
	for _, l := range d.Layers {
		if l.BlobDigest != "" {
			out = append(out, l.BlobDigest)
		}
	}
	return out
}

// FinishUpload records a completed upload or import and makes the image
// active. It is NotFound if the image was deleted meanwhile and Conflict
// if it is no longer saving or importing, or if a blob it references is
// gone; either way the caller should drop what it stored.
func (s *Store) FinishUpload(ctx context.Context, id string, u Upload) (*Image, error) {
	return s.update(ctx, id, func(tx *sqlx.Tx, img *Image) error {
		if img.Status != StatusSaving && img.Status != StatusImporting {
			return apierr.Conflictf("Image status transition from %s to %s is not allowed", img.Status, StatusActive)
		}
		img.Status = StatusActive
		img.LeaseExpiresAt = nil
		img.StagingKey = nil
		if u.BlobKey != "" {
			img.BlobKey = &u.BlobKey
		}
		img.Size = &u.Size
		img.Checksum = &u.Checksum
		img.OSHashAlgo = &u.OSHashAlgo
		img.OSHashValue = &u.OSHashValue
		if img.Properties == nil {
			img.Properties = Properties{}
		}
		for k, v := range u.Properties {
			img.Properties[k] = v
		}
		if u.Docker != nil {
			return s.attachDockerData(ctx, tx, img, u.Docker)
		}
		return nil
	})
}

// attachDockerData records d's layers and points img at them and at d's
// blobs, which must all exist (they are locked until the transaction
// ends, so garbage collection cannot take them meanwhile).
func (s *Store) attachDockerData(ctx context.Context, tx *sqlx.Tx, img *Image, d *DockerData) error {
	if err := lockBlobs(ctx, tx, d.blobs()); err != nil {
		return err
	}
	if err := putLayers(ctx, tx, d.Layers, s.now()); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM image_layers WHERE image_id = $1`, img.ID); err != nil {
		return fmt.Errorf("image layers: %w", err)
	}
	for i, l := range d.Layers {
		_, err := tx.ExecContext(ctx, `INSERT INTO image_layers (image_id, position, chain_id, blob_digest, media_type)
			VALUES ($1, $2, $3, $4, $5)`, img.ID, i, l.ChainID, nullable(l.BlobDigest), nullable(l.MediaType))
		if err != nil {
			return fmt.Errorf("image layer %d: %w", i, err)
		}
	}
	img.TopLayer = nil
	if n := len(d.Layers); n > 0 {
		top := d.Layers[n-1].ChainID
		img.TopLayer = &top
	}
	img.ConfigDigest = nullable(d.ConfigDigest)
	img.ManifestDigest = nullable(d.ManifestDigest)
	img.ManifestMediaType = nullable(d.ManifestMediaType)
	img.RecipeDigest = nullable(d.RecipeDigest)
	return nil
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// CreateDockerImage inserts img (already active) with the docker data d,
// in one transaction, as a registry push does; then, when tag is not nil,
// points the tag at it.
func (s *Store) CreateDockerImage(ctx context.Context, img *Image, d *DockerData, tag *Tag) error {
	if !validID(img.ID) {
		return apierr.Invalidf("Invalid image id %q", img.ID)
	}
	rec := *img
	rec.CreatedAt = s.now()
	rec.UpdatedAt = rec.CreatedAt
	if rec.Tags == nil {
		rec.Tags = Tags{}
	}
	if rec.Properties == nil {
		rec.Properties = Properties{}
	}
	err := pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
		if err := insertImage(ctx, tx, &rec); err != nil {
			return err
		}
		if err := s.attachDockerData(ctx, tx, &rec, d); err != nil {
			return err
		}
		if err := save(ctx, tx, &rec); err != nil {
			return err
		}
		if tag != nil {
			tag.ImageID = rec.ID
			return s.putTag(ctx, tx, *tag)
		}
		return nil
	})
	if err != nil {
		return err
	}
	*img = rec
	return nil
}

// FindLegacyDockerImages returns up to limit docker images whose data is
// still one archive blob (stored before layers were blobs of their own).
func (s *Store) FindLegacyDockerImages(ctx context.Context, limit int) ([]*Image, error) {
	var out []*Image
	err := s.db.SelectContext(ctx, &out, `SELECT `+imageColumns+` FROM images
		WHERE container_format = 'docker' AND status IN ('active', 'deactivated')
		  AND recipe_digest IS NULL AND blob_key IS NOT NULL
		ORDER BY created_at LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("find legacy images: %w", err)
	}
	return out, nil
}

// ConvertToLayers points a legacy docker image at its layer blobs instead
// of its archive blob, which must still be oldKey (Conflict otherwise).
// The image's Glance attributes, updated_at included, do not change.
func (s *Store) ConvertToLayers(ctx context.Context, id, oldKey string, d *DockerData) error {
	return pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
		img, err := getForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		if img.BlobKey == nil || *img.BlobKey != oldKey || img.RecipeDigest != nil {
			return apierr.Conflictf("Image %s changed during its conversion", id)
		}
		if err := s.attachDockerData(ctx, tx, img, d); err != nil {
			return err
		}
		img.BlobKey = nil
		return save(ctx, tx, img)
	})
}
