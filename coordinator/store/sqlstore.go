package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// sqlStore implements Store over database/sql for both back ends.
type sqlStore struct {
	Reader // reads outside a transaction; only the Reader methods are promoted

	d   *dialect
	rdb *sql.DB // reads outside transactions
	wdb *sql.DB // transactions and migrations; the same pool as rdb on PostgreSQL
	log zerolog.Logger
	// rstmts and wstmts are the prepared statements of rdb and wdb, on SQLite only.
	rstmts, wstmts *stmtCache
	// ckpt runs the WAL's checkpoints, on SQLite only.
	ckpt *walCheckpointer

	closeOnce sync.Once
	closeErr  error
}

// tx is a Tx: the full query set bound to a *sql.Tx, and the audit entries given to it,
// stored when its work is done (see tx.AppendAudit).
type tx struct {
	*q
	audits *auditQueue
}

func newSQLStore(d *dialect, rdb, wdb *sql.DB, log zerolog.Logger) *sqlStore {
	s := &sqlStore{d: d, rdb: rdb, wdb: wdb, log: log}
	if d == sqliteDialect {
		s.rstmts, s.wstmts = newStmtCache(rdb), newStmtCache(wdb)
	}
	s.Reader = &q{db: rdb, d: d, stmts: s.rstmts}
	return s
}

func (s *sqlStore) Driver() string { return s.d.name }

// begin starts a write transaction. SQLite's busy timeout bounds one wait for another
// process's write lock; on a loaded machine several coordinators or tools sharing the
// file can wait longer than that, and nothing has happened yet when BEGIN IMMEDIATE
// answers busy, so it is tried again while ctx allows.
func (s *sqlStore) begin(ctx context.Context) (*sql.Tx, error) {
	for attempt := 1; ; attempt++ {
		sqlTx, err := s.wdb.BeginTx(ctx, nil)
		if err == nil || !isBusy(err) {
			return sqlTx, err
		}
		s.log.Debug().Int("attempt", attempt).Msg("database locked by another process; waiting")
		wait := time.Duration(min(attempt, 10)) * time.Duration(10+mrand.IntN(40)) * time.Millisecond
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

func (s *sqlStore) InTx(ctx context.Context, fn func(Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.inTx(ctx, fn)
		if err == nil || !errors.Is(err, ErrAborted) || attempt == abortedAttempts {
			return err
		}
		s.log.Debug().Err(err).Int("attempt", attempt).Msg("transaction aborted by the database; running it again")
		// A short random wait, growing: the two transactions would otherwise meet again.
		wait := time.Duration(attempt) * time.Duration(5+mrand.IntN(45)) * time.Millisecond
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// abortedAttempts bounds how often InTx runs a transaction the database aborted.
const abortedAttempts = 5

func (s *sqlStore) inTx(ctx context.Context, fn func(Tx) error) (err error) {
	sqlTx, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("store: begin transaction: %w", err)
	}
	done := false
	defer func() {
		if !done {
			// fn panicked: leave nothing behind, then let the panic go on.
			_ = sqlTx.Rollback()
		}
		if s.wstmts != nil {
			// The writer's connection is free again: prepare what the transaction met.
			s.wstmts.preparePending(context.WithoutCancel(ctx))
		}
	}()
	t := tx{q: &q{db: sqlTx, d: s.d, stmts: s.wstmts, tx: sqlTx}, audits: &auditQueue{}}
	err = fn(t)
	if err == nil {
		err = t.flushAudits(ctx)
	}
	if err != nil {
		done = true
		if rbErr := sqlTx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			s.log.Warn().Err(rbErr).Msg("rollback failed")
		}
		return err
	}
	done = true
	if err := sqlTx.Commit(); err != nil {
		return s.d.wrap("commit", err)
	}
	if s.ckpt != nil {
		s.ckpt.committed()
	}
	return nil
}

func (s *sqlStore) Close() error {
	s.closeOnce.Do(func() {
		if s.ckpt != nil {
			s.closeErr = s.ckpt.stop()
		}
		if s.rstmts != nil {
			_ = s.rstmts.close()
			_ = s.wstmts.close()
		}
		if err := s.rdb.Close(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
		if s.wdb != s.rdb {
			if err := s.wdb.Close(); err != nil && s.closeErr == nil {
				s.closeErr = err
			}
		}
	})
	return s.closeErr
}

// Savepoints are named alike: both back ends act on the latest of a name, so they nest.
// They run unprepared: they are few and the statement cache is for queries.
func (x *q) Savepoint(ctx context.Context) error {
	_, err := x.db.ExecContext(ctx, "SAVEPOINT tf_sp")
	return x.d.wrap("savepoint", err)
}

func (x *q) RollbackToSavepoint(ctx context.Context) error {
	_, err := x.db.ExecContext(ctx, "ROLLBACK TO SAVEPOINT tf_sp")
	return x.d.wrap("rollback to savepoint", err)
}

func (x *q) ReleaseSavepoint(ctx context.Context) error {
	_, err := x.db.ExecContext(ctx, "RELEASE SAVEPOINT tf_sp")
	return x.d.wrap("release savepoint", err)
}
