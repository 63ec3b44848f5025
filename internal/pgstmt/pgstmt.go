// Package pgstmt keeps a cache of prepared statements on each PostgreSQL
// connection, below database/sql, so that callers writing plain
// tx.ExecContext(ctx, query, args...) get prepared-statement speed.
//
// lib/pq runs a query with arguments as an unnamed statement: Parse and
// Describe, a round trip, then Bind and Execute, another one, and the
// server parses, analyzes and plans the text every time. A named statement
// prepared once per connection skips all of that: on region's create
// transaction that is ~5× less PostgreSQL time per statement (measured by
// make bench's scheduler scenario). Queries without arguments keep lib/pq's
// simple protocol (they may hold several statements, as migrations do).
package pgstmt

import (
	"container/list"
	"context"
	"database/sql/driver"
	"errors"

	"github.com/lib/pq"
)

// MaxPerConn bounds the statements kept on one connection; the least
// recently used is closed beyond it. Region's queries are a few hundred
// distinct texts at most (dynamic filters combine into a bounded set).
var MaxPerConn = 512

// Wrap returns a connector whose connections cache prepared statements.
// c must be lib/pq's connector (or one whose connections are lib/pq's).
func Wrap(c driver.Connector) driver.Connector { return connector{c} }

type connector struct{ driver.Connector }

func (c connector) Connect(ctx context.Context) (driver.Conn, error) {
	cn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return newConn(cn)
}

func (c connector) Driver() driver.Driver { return c.Connector.Driver() }

// inner is what lib/pq's connection implements and conn relies on.
type inner interface {
	driver.Conn
	driver.ConnPrepareContext
	driver.ConnBeginTx
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
	driver.NamedValueChecker
}

type entry struct {
	query string
	stmt  driver.Stmt
}

// conn is one connection. database/sql uses a driver.Conn from one
// goroutine at a time, so the cache needs no lock.
type conn struct {
	inner
	byQuery map[string]*list.Element
	lru     *list.List // of *entry, most recent first
}

func newConn(cn driver.Conn) (driver.Conn, error) {
	in, ok := cn.(inner)
	if !ok {
		cn.Close()
		return nil, errors.New("pgstmt: the driver's connection lacks context and prepare methods")
	}
	return &conn{inner: in, byQuery: map[string]*list.Element{}, lru: list.New()}, nil
}

func (c *conn) Close() error {
	for e := c.lru.Front(); e != nil; e = e.Next() {
		_ = e.Value.(*entry).stmt.Close()
	}
	c.byQuery, c.lru = nil, list.New()
	return c.inner.Close()
}

// stmt returns the connection's prepared statement for query.
func (c *conn) stmt(ctx context.Context, query string) (driver.Stmt, error) {
	if el, ok := c.byQuery[query]; ok {
		c.lru.MoveToFront(el)
		return el.Value.(*entry).stmt, nil
	}
	for c.lru.Len() >= MaxPerConn {
		old := c.lru.Back()
		e := old.Value.(*entry)
		c.lru.Remove(old)
		delete(c.byQuery, e.query)
		if err := e.stmt.Close(); err != nil {
			return nil, err
		}
	}
	st, err := c.inner.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.byQuery[query] = c.lru.PushFront(&entry{query: query, stmt: st})
	return st, nil
}

// forget drops query's statement, for an error that says the cached plan
// no longer fits (the table changed under it).
func (c *conn) forget(query string) {
	if el, ok := c.byQuery[query]; ok {
		c.lru.Remove(el)
		delete(c.byQuery, query)
		_ = el.Value.(*entry).stmt.Close()
	}
}

// stale is PostgreSQL's "cached plan must not change result type" (a
// prepared SELECT * or RETURNING * after ALTER TABLE): the statement is
// re-prepared and the query run once more.
func stale(err error) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && pe.Code == "0A000" && pe.Message == "cached plan must not change result type"
}

func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if len(args) == 0 {
		return c.inner.ExecContext(ctx, query, args)
	}
	for try := 0; ; try++ {
		st, err := c.stmt(ctx, query)
		if err != nil {
			return nil, err
		}
		res, err := st.(driver.StmtExecContext).ExecContext(ctx, args)
		if try == 0 && stale(err) {
			c.forget(query)
			continue
		}
		return res, err
	}
}

func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if len(args) == 0 {
		return c.inner.QueryContext(ctx, query, args)
	}
	for try := 0; ; try++ {
		st, err := c.stmt(ctx, query)
		if err != nil {
			return nil, err
		}
		rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, args)
		if try == 0 && stale(err) {
			c.forget(query)
			continue
		}
		return rows, err
	}
}
