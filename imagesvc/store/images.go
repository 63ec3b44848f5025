package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// CreateImage inserts img, setting CreatedAt and UpdatedAt. An id already
// in use is Conflict.
func (s *Store) CreateImage(ctx context.Context, img *Image) error {
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
	if err := insertImage(ctx, s.db, &rec); err != nil {
		return err
	}
	*img = rec
	return nil
}

func insertImage(ctx context.Context, db sqlx.ExtContext, rec *Image) error {
	_, err := sqlx.NamedExecContext(ctx, db, `INSERT INTO images (`+imageColumns+`) VALUES (
		:id, :name, :owner, :status, :visibility, :protected, :os_hidden, :container_format,
		:disk_format, :min_disk, :min_ram, :size, :virtual_size, :checksum, :os_hash_algo, :os_hash_value,
		:tags, :properties, :blob_key, :top_layer, :config_digest, :manifest_digest, :manifest_media_type,
		:recipe_digest, :staging_key, :lease_expires_at, :created_at, :updated_at)`, rec)
	if pgdb.IsUniqueViolation(err) {
		return apierr.Conflictf("Image with identifier %s already exists!", rec.ID)
	}
	if err != nil {
		return fmt.Errorf("create image: %w", err)
	}
	return nil
}

// FindImageByID returns the image with id, or NotFound.
func (s *Store) FindImageByID(ctx context.Context, id string) (*Image, error) {
	if !validID(id) {
		return nil, notFound(id)
	}
	var img Image
	err := s.db.GetContext(ctx, &img, `SELECT `+imageColumns+` FROM images WHERE id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("find image: %w", err)
	}
	return &img, nil
}

func getForUpdate(ctx context.Context, tx *sqlx.Tx, id string) (*Image, error) {
	if !validID(id) {
		return nil, notFound(id)
	}
	var img Image
	err := tx.GetContext(ctx, &img, `SELECT `+imageColumns+` FROM images WHERE id = $1 FOR UPDATE`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("find image: %w", err)
	}
	return &img, nil
}

func save(ctx context.Context, tx *sqlx.Tx, img *Image) error {
	_, err := tx.NamedExecContext(ctx, `UPDATE images SET name = :name, owner = :owner,
		status = :status, visibility = :visibility, protected = :protected, os_hidden = :os_hidden,
		container_format = :container_format, disk_format = :disk_format, min_disk = :min_disk,
		min_ram = :min_ram, size = :size, virtual_size = :virtual_size, checksum = :checksum,
		os_hash_algo = :os_hash_algo, os_hash_value = :os_hash_value, tags = :tags,
		properties = :properties, blob_key = :blob_key, top_layer = :top_layer,
		config_digest = :config_digest, manifest_digest = :manifest_digest,
		manifest_media_type = :manifest_media_type, recipe_digest = :recipe_digest,
		staging_key = :staging_key, lease_expires_at = :lease_expires_at, updated_at = :updated_at
		WHERE id = :id`, img)
	if err != nil {
		return fmt.Errorf("save image: %w", err)
	}
	return nil
}

// UpdateImage locks the image with id, lets fn change it, and saves it
// (with a new UpdatedAt) unless fn returns an error, which is returned as
// is. NotFound if there is no such image.
func (s *Store) UpdateImage(ctx context.Context, id string, fn func(img *Image) error) (*Image, error) {
	return s.update(ctx, id, func(_ *sqlx.Tx, img *Image) error { return fn(img) })
}

func (s *Store) update(ctx context.Context, id string, fn func(tx *sqlx.Tx, img *Image) error) (*Image, error) {
	var out *Image
	err := pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
		img, err := getForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := fn(tx, img); err != nil {
			return err
		}
		img.UpdatedAt = s.now()
		if err := save(ctx, tx, img); err != nil {
			return err
		}
		out = img
		return nil
	})
	return out, err
}

// DeleteImage deletes the image with id after check (which sees it locked)
// allows it, and returns the deleted record so the caller can remove its
// data. NotFound if there is no such image.
func (s *Store) DeleteImage(ctx context.Context, id string, check func(img *Image) error) (*Image, error) {
	var out *Image
	err := pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
		img, err := getForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := check(img); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM images WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete image: %w", err)
		}
		out = img
		return nil
	})
	return out, err
}

// withImageLocked runs fn in a transaction holding image id's row lock.
// NotFound if there is no such image.
func (s *Store) withImageLocked(ctx context.Context, id string, fn func(tx *sqlx.Tx) error) error {
	return pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
		if _, err := getForUpdate(ctx, tx, id); err != nil {
			return err
		}
		return fn(tx)
	})
}
