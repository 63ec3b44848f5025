package store

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/pgdb"
	"berth/migrations"
)

// MigrationsTable is where goose tracks imagesvc's schema version.
const MigrationsTable = "imagesvc_schema_version"

// Open connects to dsn (waiting up to wait for the server) and applies
// imagesvc's migrations.
func Open(ctx context.Context, dsn string, wait time.Duration) (*sqlx.DB, error) {
	return pgdb.Open(ctx, dsn, migrations.ImageSvc, "imagesvc", MigrationsTable, wait)
}
