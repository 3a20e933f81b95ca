package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/rs/zerolog"
)

// sqlStore implements Store over database/sql for both back ends.
type sqlStore struct {
	Reader // reads outside a transaction; only the Reader methods are promoted

	d   *dialect
	rdb *sql.DB // reads outside transactions
	wdb *sql.DB // transactions and migrations; the same pool as rdb on PostgreSQL
	log zerolog.Logger

	closeOnce sync.Once
	closeErr  error
}

// tx is a Tx: the full query set bound to a *sql.Tx.
type tx struct{ *q }

func newSQLStore(d *dialect, rdb, wdb *sql.DB, log zerolog.Logger) *sqlStore {
	return &sqlStore{Reader: &q{db: rdb, d: d}, d: d, rdb: rdb, wdb: wdb, log: log}
}

func (s *sqlStore) Driver() string { return s.d.name }

func (s *sqlStore) InTx(ctx context.Context, fn func(Tx) error) (err error) {
	sqlTx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin transaction: %w", err)
	}
	done := false
	defer func() {
		if !done {
			// fn panicked: leave nothing behind, then let the panic go on.
			_ = sqlTx.Rollback()
		}
	}()
	if err := fn(tx{&q{db: sqlTx, d: s.d}}); err != nil {
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
	return nil
}

func (s *sqlStore) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.rdb.Close()
		if s.wdb != s.rdb {
			if err := s.wdb.Close(); err != nil && s.closeErr == nil {
				s.closeErr = err
			}
		}
	})
	return s.closeErr
}
