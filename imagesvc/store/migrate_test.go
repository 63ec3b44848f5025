package store_test

import (
	"context"
	"database/sql"
	"io/fs"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"berth/imagesvc/store"
	"berth/internal/pgtest"
	"berth/migrations"
)

// TestMigrationKeepsExistingLayerChains: images recorded by the first
// schema (a top layer only) get their whole chain listed by 00002.
func TestMigrationKeepsExistingLayerChains(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	raw, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	sub, _ := fs.Sub(migrations.ImageSvc, "imagesvc")
	p, err := goose.NewProvider(goose.DialectPostgres, raw, sub, goose.WithTableName(store.MigrationsTable))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO layers (chain_id, digest, parent_chain_id, size) VALUES ('c1', 'd1', NULL, 1), ('c2', 'd2', 'c1', 2), ('c3', 'd3', 'c2', 3)`,
		`INSERT INTO images (id, status, visibility, top_layer, created_at, updated_at, container_format, disk_format, blob_key)
			VALUES ('11111111-1111-4111-8111-111111111111', 'active', 'private', 'c3', now(), now(), 'docker', 'raw', 'images/x'),
			       ('22222222-2222-4222-8222-222222222222', 'active', 'private', 'c1', now(), now(), 'docker', 'raw', 'images/y'),
			       ('33333333-3333-4333-8333-333333333333', 'queued', 'private', NULL, now(), now(), NULL, NULL, NULL)`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db, err := store.Open(ctx, dsn, 10*time.Second) // applies 00002
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := store.New(db)
	for id, want := range map[string][]string{
		"11111111-1111-4111-8111-111111111111": {"c1", "c2", "c3"},
		"22222222-2222-4222-8222-222222222222": {"c1"},
		"33333333-3333-4333-8333-333333333333": nil,
	} {
		ls, err := s.ImageLayers(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range ls {
			got = append(got, l.ChainID)
		}
		if len(got) != len(want) || (len(want) > 0 && got[len(got)-1] != want[len(want)-1]) || (len(want) > 0 && got[0] != want[0]) {
			t.Errorf("%s: layers %v, want %v", id, got, want)
		}
	}
	// The old images are the ones the background conversion will move.
	legacy, err := s.FindLegacyDockerImages(ctx, 10)
	if err != nil || len(legacy) != 2 {
		t.Errorf("legacy docker images: %d %v, want 2", len(legacy), err)
	}
	// No layer is lost to garbage collection: all are in use.
	res, err := s.CollectGarbage(ctx, time.Now(), 10, nil)
	if err != nil || res.Layers != 0 {
		t.Errorf("GC after migration: %+v %v", res, err)
	}
	// Down works too.
	if _, err := p.DownTo(ctx, 1); err != nil {
		t.Errorf("migrate down to 1: %v", err)
	}
}
