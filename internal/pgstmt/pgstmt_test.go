package pgstmt_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/lib/pq"

	"berth/internal/pgstmt"
	"berth/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t *testing.T) (*sql.DB, *sql.DB) {
	t.Helper()
	dsn := pgtest.DSN(t)
	c, err := pq.NewConnector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(pgstmt.Wrap(c))
	db.SetMaxOpenConns(1) // one connection, so statements are reused
	raw, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(); raw.Close() })
	return db, raw
}

// preparedCount is how many statements the wrapped connection holds, as
// PostgreSQL sees them (pg_prepared_statements is per session, so it is
// asked through the same single connection).
func preparedCount(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pg_prepared_statements`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCachesAndAnswersLikeThePlainDriver(t *testing.T) {
	ctx := context.Background()
	db, _ := open(t)
	// No arguments: simple protocol, several statements in one string.
	if _, err := db.ExecContext(ctx, `CREATE TABLE kv (k text PRIMARY KEY, v int, tags text[]); CREATE INDEX kv_v ON kv (v)`); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := db.ExecContext(ctx, `INSERT INTO kv (k, v, tags) VALUES ($1, $2, $3)`, fmt.Sprint("k", i), i, pq.StringArray{"a", fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var sum int
	if err := db.QueryRowContext(ctx, `SELECT sum(v) FROM kv WHERE v >= $1`, 10).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if sum != 145 {
		t.Errorf("sum = %d, want 145", sum)
	}
	var tags pq.StringArray
	if err := db.QueryRowContext(ctx, `SELECT tags FROM kv WHERE k = $1`, "k7").Scan(&tags); err != nil || len(tags) != 2 || tags[1] != "7" {
		t.Errorf("tags = %v, %v; want [a 7]", tags, err)
	}
	// The INSERT and the two SELECTs with arguments are prepared once each.
	if n := preparedCount(t, db); n != 3 {
		t.Errorf("prepared statements = %d, want 3", n)
	}
	// Errors come back as lib/pq's, and the connection stays usable.
	_, err := db.ExecContext(ctx, `INSERT INTO kv (k, v) VALUES ($1, $2)`, "k1", 1)
	var pe *pq.Error
	if !errors.As(err, &pe) || pe.Code != "23505" {
		t.Errorf("duplicate insert: %v, want unique_violation", err)
	}
	// A transaction that rolls back leaves the statements usable.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO kv (k, v, tags) VALUES ($1, $2, $3)`, "rolled", 1, pq.StringArray{}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM kv WHERE k = $1`, "rolled").Scan(&n); err != nil || n != 0 {
		t.Errorf("after rollback: %d rows, %v; want 0", n, err)
	}
}

func TestStalePlanIsPreparedAgain(t *testing.T) {
	ctx := context.Background()
	db, raw := open(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (a int)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	q := `SELECT * FROM t WHERE a = $1`
	var a int
	if err := db.QueryRowContext(ctx, q, 1).Scan(&a); err != nil {
		t.Fatal(err)
	}
	// Another session changes the row type under the prepared SELECT *.
	if _, err := raw.ExecContext(ctx, `ALTER TABLE t ADD COLUMN b int DEFAULT 7`); err != nil {
		t.Fatal(err)
	}
	var b int
	if err := db.QueryRowContext(ctx, q, 1).Scan(&a, &b); err != nil || b != 7 {
		t.Errorf("after ALTER TABLE: b = %d, %v; want 7", b, err)
	}
}

func TestEvictsBeyondTheBound(t *testing.T) {
	ctx := context.Background()
	old := pgstmt.MaxPerConn
	pgstmt.MaxPerConn = 4
	t.Cleanup(func() { pgstmt.MaxPerConn = old })
	db, _ := open(t)
	for i := range 10 {
		var got int
		if err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT $1::int + %d`, i), 1).Scan(&got); err != nil || got != i+1 {
			t.Fatalf("query %d: %d, %v", i, got, err)
		}
	}
	if n := preparedCount(t, db); n > 4 {
		t.Errorf("prepared statements = %d, want at most 4", n)
	}
}
