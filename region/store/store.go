// Package store is region's PostgreSQL store: flavors, hosts, networks and
// ports, servers and their instance actions. Every exported method runs in
// its own transaction; a state change and the action record describing it
// are written in the same one. Errors are apierr kinds: NotFound, Conflict,
// Invalid; anything else is internal.
package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/pgdb"
	"berth/internal/pgstmt"
	"berth/migrations"
)

// Store is region's database.
type Store struct {
	db  *sqlx.DB
	now func() time.Time
	// hostView is the scheduler's in-memory copy of the hosts table (hosts.go).
	hostView hostView
	// batcher commits concurrent creates together (batch.go).
	batcher *batcher
}

// Open connects to dsn and applies region's migrations.
func Open(ctx context.Context, dsn string) (*Store, error) {
	// Prepared statements cached per connection: the create transaction's
	// dozen statements cost ~5× less PostgreSQL time than re-parsed ones.
	db, err := pgdb.Open(ctx, dsn, migrations.Region, "region", "region_goose_version", 30*time.Second, pgstmt.Wrap)
	if err != nil {
		return nil, err
	}
	// Keep as many connections idle as may be open. With 10 idle of 20,
	// a burst of creates (32 clients: request reads plus the batches)
	// closed and reopened connections all the time, and each new backend
	// costs PostgreSQL a fork, its catalog caches and every statement
	// prepared again: 7.8 ms of PostgreSQL CPU per API placement against
	// 1.6 with the pool kept (region/compute, 2,000 POST /servers by 32
	// clients at 10,000 hosts). Idle ones still close after 5 minutes.
	db.SetMaxIdleConns(20)
	s := &Store{db: db, now: time.Now}
	s.batcher = newBatcher(s, DefaultPlacementBatch)
	return s, nil
}

// DB exposes the connection pool (for the dispatch listener's DSN-less
// needs and for tests).
func (s *Store) DB() *sqlx.DB { return s.db }

// Close waits for the creates being committed, fails those still queued,
// and closes the pool.
func (s *Store) Close() error {
	s.batcher.close()
	return s.db.Close()
}

func (s *Store) tx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
		if err := applyIfRevision(ctx, tx); err != nil {
			return err
		}
		return fn(tx)
	})
}

func (s *Store) readTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return pgdb.Tx(ctx, s.db, &sql.TxOptions{ReadOnly: true}, fn)
}

// notifyHost bumps host's desired index and wakes its agent's long poll
// (NOTIFY is delivered when the transaction commits).
func notifyHost(ctx context.Context, tx *sqlx.Tx, host string) error {
	if host == "" {
		return nil
	}
	if _, err := tx.ExecContext(ctx,
		`UPDATE hosts SET desired_index = desired_index + 1 WHERE name = $1`, host); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_notify('berth_desired', $1)`, host)
	return err
}
