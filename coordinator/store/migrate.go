package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// The schema, one directory per dialect. Never edit a released migration: add a new one.
//
//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrations embed.FS

func (s *sqlStore) Migrate(ctx context.Context) error {
	if s.d == pgDialect {
		// Several coordinators may start at once: goose holds a session advisory lock
		// while it migrates, and the others wait for it.
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return fmt.Errorf("store: migration lock: %w", err)
		}
		return s.migrate(ctx, goose.DialectPostgres, "migrations/postgres", goose.WithSessionLocker(locker))
	}
	// SQLite has no lock that spans goose's steps. Two processes opening a new file at once
	// (the coordinator and the command-line tool at first start) may both try to apply a
	// migration; the loser's migration transaction fails and rolls back whole. If the
	// schema moved on meanwhile, or the failure was a busy lock, that was a race: run again
	// and find the work done.
	return retryRace(ctx, func() (bool, error) {
		before := s.schemaVersion(ctx)
		err := s.migrate(ctx, goose.DialectSQLite3, "migrations/sqlite")
		if err == nil {
			return false, nil
		}
		return isBusy(err) || s.schemaVersion(ctx) > before, err
	})
}

func (s *sqlStore) migrate(ctx context.Context, d goose.Dialect, dir string, opts ...goose.ProviderOption) error {
	fsys, err := fs.Sub(migrations, dir)
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	// A provider per run: goose remembers a failed version-table check for the provider's
	// lifetime, which would spoil a retry.
	p, err := goose.NewProvider(d, s.wdb, fsys, append(opts, goose.WithDisableGlobalRegistry(true))...)
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	results, err := p.Up(ctx)
	for _, r := range results {
		if r.Error == nil {
			s.log.Info().Int64("version", r.Source.Version).Str("file", r.Source.Path).
				Dur("took_ms", r.Duration).Msg("schema migrated")
		}
	}
	if err != nil {
		return fmt.Errorf("store: migrate %s schema: %w", s.d.name, err)
	}
	return nil
}

// schemaVersion is the highest applied migration, or -1 when it cannot be read (no
// version table yet).
func (s *sqlStore) schemaVersion(ctx context.Context) int64 {
	var v int64
	if err := s.wdb.QueryRowContext(ctx, "SELECT COALESCE(MAX(version_id), -1) FROM goose_db_version WHERE is_applied").Scan(&v); err != nil {
		return -1
	}
	return v
}
