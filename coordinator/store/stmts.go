package store

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// stmtCache keeps prepared statements of one SQLite pool by query text. SQLite parses a
// statement every time one is prepared, and database/sql prepares every query it is given
// as a string: parsing the same few dozen queries again on every call was about a quarter
// of the coordinator's CPU on each agent event. PostgreSQL needs none of this (pgx caches
// its statements itself).
//
// A pool of one connection (the writer) cannot prepare while its transaction holds that
// connection, so a query first met inside a transaction runs unprepared that time and is
// prepared once the transaction has ended.
type stmtCache struct {
	db *sql.DB

	mu      sync.Mutex           // guards what follows
	stmts   map[string]*sql.Stmt // by query text
	pending map[string]bool      // met inside a transaction, to prepare after it
	closed  bool
}

// maxCachedStmts bounds the cache: queries with a list of placeholders as long as their
// arguments make a statement of each length, and those beyond the bound run unprepared.
const maxCachedStmts = 512

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}, pending: map[string]bool{}}
}

// get returns query's prepared statement, or nil when it has none yet.
func (c *stmtCache) get(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stmts[query]
}

// full reports whether the cache takes no more statements; c.mu held.
func (c *stmtCache) full() bool { return c.closed || len(c.stmts)+len(c.pending) >= maxCachedStmts }

// want notes a query met inside a transaction, for preparePending.
func (c *stmtCache) want(query string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.stmts[query]; !ok && !c.full() {
		c.pending[query] = true
	}
}

// prepare returns query's statement, preparing it on the pool when it has none and the
// cache has room; nil when it runs unprepared.
func (c *stmtCache) prepare(ctx context.Context, query string) *sql.Stmt {
	if st := c.get(query); st != nil {
		return st
	}
	c.mu.Lock()
	full := c.full()
	c.mu.Unlock()
	if full {
		return nil
	}
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		// The query runs unprepared and reports its own error.
		return nil
	}
	return c.add(query, st)
}

// add keeps st for query, unless another caller kept one first or the cache closed.
func (c *stmtCache) add(query string, st *sql.Stmt) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, query)
	if old, ok := c.stmts[query]; ok || c.closed {
		_ = st.Close()
		return old
	}
	c.stmts[query] = st
	return st
}

// preparePending prepares the queries met inside a transaction that has ended. A query
// that does not prepare is dropped: it keeps running unprepared, and reports its own
// error there.
func (c *stmtCache) preparePending(ctx context.Context) {
	c.mu.Lock()
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return
	}
	todo := make([]string, 0, len(c.pending))
	for q := range c.pending {
		todo = append(todo, q)
	}
	clear(c.pending)
	c.mu.Unlock()
	for _, q := range todo {
		if st, err := c.db.PrepareContext(ctx, q); err == nil {
			c.add(q, st)
		}
	}
}

// close finalises every statement; the pool can then close.
func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, st := range c.stmts {
		errs = append(errs, st.Close())
	}
	clear(c.stmts)
	clear(c.pending)
	return errors.Join(errs...)
}
