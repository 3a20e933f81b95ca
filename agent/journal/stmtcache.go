package journal

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// The journal's connection keeps each statement it prepares, by its text, for the life of
// the connection: a job's commits run the same dozen statements over and over, and SQLite
// spent as long compiling each as running it. Statements with arguments go through
// database/sql's prepared path (the connection offers no direct Exec or Query for them),
// so they reach the cache; an Exec without arguments (migrations, pragmas, several
// statements in one text) runs directly, as before.

// connector opens the journal's connections on the SQLite driver, with the cache.
type connector struct {
	dsn string
	drv *sqlite3.SQLiteDriver
}

func (c connector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	sc, ok := conn.(*sqlite3.SQLiteConn)
	if !ok {
		_ = conn.Close()
		return nil, fmt.Errorf("journal: the SQLite driver returned a %T", conn)
	}
	return &cachingConn{c: sc, stmts: map[string]*cachedStmt{}}, nil
}

func (c connector) Driver() driver.Driver { return c.drv }

// cachingConn is a SQLite connection that keeps its prepared statements. database/sql
// uses a connection from one goroutine at a time; mu guards the cache all the same.
type cachingConn struct {
	c *sqlite3.SQLiteConn

	mu    sync.Mutex // guards stmts
	stmts map[string]*cachedStmt
}

// cachedStmt is a kept statement. Close hands it back to the cache instead of finalizing
// it; while it is handed out (a query's rows still open), the same text prepared again gets
// a statement of its own, finalized on Close.
type cachedStmt struct {
	*sqlite3.SQLiteStmt
	conn  *cachingConn
	query string
	inUse bool // guarded by conn.mu
}

var (
	_ driver.Conn               = (*cachingConn)(nil)
	_ driver.ConnPrepareContext = (*cachingConn)(nil)
	_ driver.ConnBeginTx        = (*cachingConn)(nil)
	_ driver.ExecerContext      = (*cachingConn)(nil)
	_ driver.Pinger             = (*cachingConn)(nil)
	_ driver.StmtExecContext    = (*cachedStmt)(nil)
	_ driver.StmtQueryContext   = (*cachedStmt)(nil)
)

func (c *cachingConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *cachingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	c.mu.Lock()
	if s, ok := c.stmts[query]; ok {
		if !s.inUse {
			s.inUse = true
			c.mu.Unlock()
			return s, nil
		}
		c.mu.Unlock()
		return c.c.PrepareContext(ctx, query) // an uncached one, finalized on Close
	}
	c.mu.Unlock()
	st, err := c.c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	ss, ok := st.(*sqlite3.SQLiteStmt)
	if !ok {
		return st, nil
	}
	s := &cachedStmt{SQLiteStmt: ss, conn: c, query: query, inUse: true}
	c.mu.Lock()
	c.stmts[query] = s
	c.mu.Unlock()
	return s, nil
}

// Close hands the statement back; its rows, closed before, have reset it.
func (s *cachedStmt) Close() error {
	s.conn.mu.Lock()
	s.inUse = false
	s.conn.mu.Unlock()
	return nil
}

// ExecContext runs a text without arguments directly, so that several statements in one
// text all run; with arguments it defers to the prepared, cached path.
func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if len(args) > 0 {
		return nil, driver.ErrSkip
	}
	return c.c.ExecContext(ctx, query, nil)
}

func (c *cachingConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *cachingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.c.BeginTx(ctx, opts)
}

func (c *cachingConn) Ping(ctx context.Context) error { return c.c.Ping(ctx) }

// Close finalizes the kept statements, then closes the connection.
func (c *cachingConn) Close() error {
	c.mu.Lock()
	stmts := c.stmts
	c.stmts = nil
	c.mu.Unlock()
	var errs []error
	for _, s := range stmts {
		errs = append(errs, s.SQLiteStmt.Close())
	}
	return errors.Join(append(errs, c.c.Close())...)
}
