package pgtest

import (
	"context"
	"database/sql"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

func TestDSNGivesFreshDatabases(t *testing.T) {
	a, b := DSN(t), DSN(t)
	if a == b {
		t.Fatalf("got the same DSN twice: %s", a)
	}
	ctx := context.Background()
	dbA, err := sql.Open("postgres", a)
	if err != nil {
		t.Fatal(err)
	}
	defer dbA.Close()
	if _, err := dbA.ExecContext(ctx, `CREATE TABLE x (id int)`); err != nil {
		t.Fatalf("create table in first database: %v", err)
	}
	dbB, err := sql.Open("postgres", b)
	if err != nil {
		t.Fatal(err)
	}
	defer dbB.Close()
	var n int
	if err := dbB.QueryRowContext(ctx, `SELECT count(*) FROM pg_tables WHERE tablename = 'x'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("second database sees %d tables named x, want 0", n)
	}
}

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "postgres://u:p@h:5432/t_1?sslmode=disable"},
		{"host=/tmp port=5 dbname=postgres sslmode=disable", "host=/tmp port=5 sslmode=disable dbname=t_1"},
		{"host=h user=u", "host=h user=u dbname=t_1"},
	} {
		got, err := withDatabase(tc.in, "t_1")
		if err != nil || got != tc.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
