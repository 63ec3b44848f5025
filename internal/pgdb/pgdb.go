// Package pgdb opens a PostgreSQL database, applies a component's embedded
// migrations with goose, and runs closures in transactions that retry on
// serialization failures and deadlocks.
package pgdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/pressly/goose/v3"

	"berth/internal/apierr"
)

// Open connects to dsn, waits up to wait for the server to answer, and
// applies the migrations found in dir of fsys, tracking them in table.
// wrap, if given, wraps the connector (region's statement cache, pgstmt).
func Open(ctx context.Context, dsn string, fsys fs.FS, dir, table string, wait time.Duration, wrap ...func(driver.Connector) driver.Connector) (*sqlx.DB, error) {
	connector, err := pq.NewConnector(dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	connector.Dialer(clampDialer{})
	var c driver.Connector = connector
	for _, w := range wrap {
		c = w(c)
	}
	db := sqlx.NewDb(sql.OpenDB(c), "postgres")
	// As many idle connections as open ones: a busy API's demand swings
	// around any lower number, and each connection closed there and opened
	// again costs PostgreSQL a backend start and its prepared statements
	// (with 32 clients listing servers: 14 new sessions/s at 10 idle).
	// Idle ones still close after ConnMaxIdleTime.
	db.SetMaxOpenConns(20)
	db.SetMaxIdleConns(20)
	db.SetConnMaxIdleTime(5 * time.Minute)
	deadline := time.Now().Add(wait)
	for {
		err = db.PingContext(ctx)
		if err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			db.Close()
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("ping database: %w", err)
	}
	if err := Migrate(ctx, db.DB, fsys, dir, table); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Migrate applies pending migrations. Several replicas may start at once,
// so it takes a PostgreSQL advisory lock for the duration.
func Migrate(ctx context.Context, db *sql.DB, fsys fs.FS, dir, table string) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close()
	const lockKey = 0x62657274 // "bert"
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return fmt.Errorf("migrate lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey)

	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// Out of order allowed: migrations are numbered as they are planned,
	// and one may land after a higher number a database already has.
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub, goose.WithTableName(table),
		goose.WithAllowOutofOrder(true))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// Tx runs fn in a transaction and commits it. A serialization failure or a
// deadlock rolls back and runs fn again (a few times, with backoff), so fn
// must be safe to repeat. So does a database that does not answer (being
// restarted: refused connections, "the database system is shutting down")
// before the commit was sent, for up to unavailableRetry: a restart takes
// a few seconds, and the request should outlast it rather than fail. A
// commit that fails that way is not repeated (it may have happened).
func Tx(ctx context.Context, db *sqlx.DB, opts *sql.TxOptions, fn func(tx *sqlx.Tx) error) error {
	var err error
	conflicts := 0
	start := time.Now()
	for attempt := 0; ; attempt++ {
		var committing bool
		committing, err = tx1(ctx, db, opts, fn)
		var wait time.Duration
		switch {
		case Retryable(err) && conflicts < 4:
			wait = time.Duration(10<<conflicts) * time.Millisecond
			conflicts++
		case !committing && Unavailable(err) && time.Since(start) < unavailableRetry:
			wait = min(time.Duration(50<<min(attempt, 5))*time.Millisecond, time.Second)
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// unavailableRetry is how long Tx waits out a database that does not answer.
const unavailableRetry = 15 * time.Second

func tx1(ctx context.Context, db *sqlx.DB, opts *sql.TxOptions, fn func(tx *sqlx.Tx) error) (committing bool, err error) {
	tx, err := db.BeginTxx(ctx, opts)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return true, fmt.Errorf("commit: %w", err)
	}
	return true, nil
}

// Retryable reports whether err is a serialization failure or a deadlock:
// the transaction lost a race and may be run again as it was.
func Retryable(err error) bool {
	var pe *pq.Error
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	return false
}

// Unavailable reports whether err says the database cannot be reached or
// is going away or coming up (SQLSTATE classes 08 and 57, a refused or
// broken connection), as opposed to an answer about the request.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var pe *pq.Error
	if errors.As(err, &pe) {
		// (57014 is a cancelled statement: an answer, not an outage.)
		c := string(pe.Code)
		return strings.HasPrefix(c, "08") || strings.HasPrefix(c, "57") && c != "57014"
	}
	var op *net.OpError
	return errors.Is(err, driver.ErrBadConn) || errors.As(err, &op) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// IsUniqueViolation reports whether err is a unique-constraint violation.
func IsUniqueViolation(err error) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && pe.Code == "23505"
}

// NotFound maps sql.ErrNoRows to an apierr NotFound with msg; other errors
// pass through.
func NotFound(err error, msg string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return apierr.NotFoundf("%s", msg)
	}
	return err
}

// Classify turns PostgreSQL's data exceptions (SQLSTATE class 22: a NUL or
// invalid UTF-8 in text, a number out of range, a malformed value) into
// Invalid errors: they are the client's bad input reaching the database,
// never a server fault. Other errors pass through unchanged.
//
// A database that cannot be reached (see Unavailable) is a 503: the
// request may be sent again once it is back. Errors that already carry an
// apierr kind keep it.
func Classify(err error) error {
	var ae *apierr.Error
	if err == nil || errors.As(err, &ae) {
		return err
	}
	if Unavailable(err) {
		return apierr.Wrap(err, apierr.Unavailable, "The service is temporarily unavailable (a backend it needs does not answer). Try again.")
	}
	var pe *pq.Error
	if !errors.As(err, &pe) || len(pe.Code) < 2 || pe.Code[:2] != "22" {
		return err
	}
	return apierr.Wrap(err, apierr.Invalid, "Invalid input: a value is not acceptable (%s).", pe.Code.Name())
}
