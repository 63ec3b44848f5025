// Package store keeps imagesvc's records in PostgreSQL: images, their
// members, the layer chains, the content-addressed blobs images are made
// of (and their garbage collection), and the registry's tags. Methods
// return apierr kinds (NotFound, Conflict, Invalid) for the caller to
// render; driver errors never leak as kinds.
package store

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/internal/apierr"
)

// Image statuses (Glance's).
const (
	StatusQueued      = "queued"
	StatusSaving      = "saving"
	StatusActive      = "active"
	StatusKilled      = "killed"
	StatusDeactivated = "deactivated"
	StatusUploading   = "uploading" // data staged (or being staged) for import
	StatusImporting   = "importing"
)

// Visibilities (Glance's).
const (
	VisibilityPrivate   = "private"
	VisibilityPublic    = "public"
	VisibilityShared    = "shared"
	VisibilityCommunity = "community"
)

// Store is the image store.
type Store struct {
	db *sqlx.DB
	// Now is the clock (tests replace it).
	Now   func() time.Time
	notes projectNotes
}

// New returns a store over db (already migrated).
func New(db *sqlx.DB) *Store {
	return &Store{db: db, Now: time.Now}
}

func (s *Store) now() time.Time { return s.Now().UTC().Truncate(time.Microsecond) }

// Image is an image record.
type Image struct {
	ID              string     `db:"id"`
	Name            *string    `db:"name"`
	Owner           *string    `db:"owner"`
	Status          string     `db:"status"`
	Visibility      string     `db:"visibility"`
	Protected       bool       `db:"protected"`
	Hidden          bool       `db:"os_hidden"`
	ContainerFormat *string    `db:"container_format"`
	DiskFormat      *string    `db:"disk_format"`
	MinDisk         int        `db:"min_disk"`
	MinRAM          int        `db:"min_ram"`
	Size            *int64     `db:"size"`
	VirtualSize     *int64     `db:"virtual_size"`
	Checksum        *string    `db:"checksum"`
	OSHashAlgo      *string    `db:"os_hash_algo"`
	OSHashValue     *string    `db:"os_hash_value"`
	Tags            Tags       `db:"tags"`
	Properties      Properties `db:"properties"`
	// BlobKey is where plain (non-docker) image data is in the blob store.
	BlobKey *string `db:"blob_key"`
	// TopLayer is the chain id of a docker image's top layer.
	TopLayer *string `db:"top_layer"`
	// ConfigDigest, ManifestDigest and RecipeDigest are the blobs of a
	// docker image: its config, its registry manifest (of media type
	// ManifestMediaType) and the recipe of its docker archive.
	ConfigDigest      *string `db:"config_digest"`
	ManifestDigest    *string `db:"manifest_digest"`
	ManifestMediaType *string `db:"manifest_media_type"`
	RecipeDigest      *string `db:"recipe_digest"`
	// StagingKey is where data staged for import is in the blob store.
	StagingKey *string `db:"staging_key"`
	// LeaseExpiresAt is set while an upload, stage or import is in
	// flight; a lease that runs out means its process died.
	LeaseExpiresAt *time.Time `db:"lease_expires_at"`
	CreatedAt      time.Time  `db:"created_at"`
	UpdatedAt      time.Time  `db:"updated_at"`
}

// OwnerID is the owner, "" when none.
func (img *Image) OwnerID() string {
	if img.Owner == nil {
		return ""
	}
	return *img.Owner
}

// Tags is a list of tags stored as a text[].
type Tags []string

// Scan implements sql.Scanner.
func (t *Tags) Scan(src any) error {
	var a pq.StringArray
	if err := a.Scan(src); err != nil {
		return err
	}
	*t = Tags(a)
	if *t == nil {
		*t = Tags{}
	}
	return nil
}

// Value implements driver.Valuer.
func (t Tags) Value() (driver.Value, error) {
	if t == nil {
		return "{}", nil
	}
	return pq.StringArray(t).Value()
}

// Properties are an image's extra string properties, stored as jsonb.
type Properties map[string]string

// Scan implements sql.Scanner.
func (p *Properties) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	case nil:
		*p = Properties{}
		return nil
	default:
		return fmt.Errorf("properties: cannot scan %T", src)
	}
	m := Properties{}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("properties: %w", err)
	}
	*p = m
	return nil
}

// Value implements driver.Valuer.
func (p Properties) Value() (driver.Value, error) {
	if p == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]string(p))
}

const imageColumns = `id, name, owner, status, visibility, protected, os_hidden, container_format,
	disk_format, min_disk, min_ram, size, virtual_size, checksum, os_hash_algo, os_hash_value,
	tags, properties, blob_key, top_layer, config_digest, manifest_digest, manifest_media_type,
	recipe_digest, staging_key, lease_expires_at, created_at, updated_at`

// notFound is the error for an image that does not exist (or that the
// caller may not see: the API makes the two indistinguishable).
func notFound(id string) error {
	return apierr.NotFoundf("No image found with ID %s", id)
}

// validID reports whether id can be an image id at all.
func validID(id string) bool {
	_, err := uuid.Parse(id)
	return err == nil && len(id) == 36
}
