package pgdb

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/internal/apierr"
	"berth/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestClampErrorFields(t *testing.T) {
	long := strings.Repeat("é", 20000) // 40,000 bytes, 2 per rune
	for _, tc := range []struct {
		name string
		in   string
		want string // "" = not an error field list
	}{
		{"short fields unchanged", "SERROR\x00C22P02\x00Mbad\x00\x00", "SERROR\x00C22P02\x00Mbad\x00\x00"},
		{"long field cut on a rune boundary", "C22P02\x00M" + long + "\x00\x00",
			"C22P02\x00M" + strings.Repeat("é", maxErrField/2) + "…\x00\x00"},
		{"odd cut backs off to a rune start", "Mx" + long + "\x00\x00",
			"Mx" + strings.Repeat("é", maxErrField/2-1) + "…\x00\x00"},
		{"no terminator", "Mabc\x00", ""},
		{"unterminated field", "Mabc", ""},
		{"bytes after the terminator", "Ma\x00\x00junk", ""},
		{"pre-protocol text", "could not fork new process for connection", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := clampErrorFields([]byte(tc.in))
			if tc.want == "" {
				if ok {
					t.Fatalf("clampErrorFields(%.40q) = %.40q, want not ok", tc.in, got)
				}
				return
			}
			if !ok || !bytes.Equal(got, []byte(tc.want)) {
				t.Fatalf("clampErrorFields(%.40q) = %.80q, %v; want %.80q", tc.in, got, ok, tc.want)
			}
		})
	}
}

// TestLongErrorKeepsConnection runs, on one real PostgreSQL connection,
// statements whose errors echo a 40 KB value (past lib/pq's 30,000-byte
// misreading): each must come back as a *pq.Error that Classify maps,
// and the same connection must go on answering (lib/pq#1324 left it
// waiting forever). Every step has a hang detector; no speed is asserted.
func TestLongErrorKeepsConnection(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	fsys := fstest.MapFS{"m/00001_t.sql": {Data: []byte(
		"-- +goose Up\nCREATE TABLE t (k text PRIMARY KEY, u uuid, c cidr);\n-- +goose Down\nDROP TABLE t;\n")}}
	db, err := Open(ctx, dsn, fsys, "m", "goose_t", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // every statement on the same connection
	big := strings.Repeat("x", 40000)
	noHang := func(what string, fn func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- fn() }()
		select {
		case err := <-done:
			return err
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s: no answer after 2 minutes (the connection is out of step)", what)
			return nil
		}
	}
	wantPQ := func(what string, err error, code pq.ErrorCode, kind apierr.Kind) {
		t.Helper()
		var pe *pq.Error
		if !errors.As(err, &pe) || pe.Code != code {
			t.Fatalf("%s: error %.200v, want a *pq.Error %s", what, err, code)
		}
		if len(pe.Message)+len(pe.Detail) > 4*maxErrField {
			t.Errorf("%s: message of %d bytes and detail of %d reached the caller", what, len(pe.Message), len(pe.Detail))
		}
		if k := apierr.KindOf(Classify(err)); k != kind {
			t.Errorf("%s: Classify kind %d, want %d", what, k, kind)
		}
	}
	for _, c := range []struct {
		what, query string
		code        pq.ErrorCode
		kind        apierr.Kind
	}{
		{"uuid", `SELECT $1::uuid`, "22P02", apierr.Invalid},
		{"cidr", `SELECT $1::cidr`, "22P02", apierr.Invalid},
		{"timestamp", `SELECT $1::timestamptz`, "22007", apierr.Invalid},
		{"insert into a uuid column", `INSERT INTO t (k, u) VALUES ('a', $1)`, "22P02", apierr.Invalid},
	} {
		err := noHang(c.what, func() error { _, err := db.ExecContext(ctx, c.query, big); return err })
		wantPQ(c.what, err, c.code, c.kind)
	}
	// A duplicate key echoes the (compressed, so indexable) key in DETAIL.
	if _, err := db.ExecContext(ctx, `INSERT INTO t (k) VALUES ($1)`, big); err != nil {
		t.Fatal(err)
	}
	err = noHang("duplicate key in a transaction", func() error {
		return Tx(ctx, db, nil, func(tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO t (k) VALUES ($1)`, big)
			return err
		})
	})
	wantPQ("duplicate key", err, "23505", apierr.Internal)
	var one int
	if err := noHang("a query after the errors", func() error { return db.GetContext(ctx, &one, `SELECT 1`) }); err != nil || one != 1 {
		t.Fatalf("SELECT 1 after the errors: %d, %v", one, err)
	}
}
