package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// SQLite settings:
//   - WAL (set once per file, it persists): readers never wait for the writer.
//   - synchronous=FULL: a commit is on disk before InTx returns. With NORMAL, a power cut
//     may lose the last commits, and a lost approval, audit entry or job state whose
//     message was already published is worse than the fsync per commit, which is small
//     next to the seconds a token takes.
//   - foreign_keys on, busy_timeout 5 s (another process holding the write lock, such as
//     an administrator's tool, makes writers wait rather than fail at once).
const sqlitePragmas = "_pragma=busy_timeout(5000)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)"

// sqliteWriterPragmas are the writer's own: temp_store=MEMORY keeps the sub-journal of a
// transaction's savepoints (one an event when events share a transaction) in memory.
// SQLite otherwise spills it past 64 KiB into a temporary file, created, unlinked and
// written anew for each transaction that spills: under the fleet simulator's job load,
// as many writes as to the WAL itself. The sub-journal only undoes a savepoint within a
// transaction and is never needed after a crash (the WAL is), so nothing durable moves
// to memory; it holds at most the original of each page one transaction changes. The
// readers keep the default (their sorts of large exports may spill to disk).
// wal_autocheckpoint: a backstop, see walCheckpointer.
var sqliteWriterPragmas = fmt.Sprintf("&_pragma=temp_store(MEMORY)&_pragma=wal_autocheckpoint(%d)&_txlock=immediate", walWriterCheckpointPages)

// sqliteReaders is the size of the read pool.
const sqliteReaders = 4

func openSQLite(ctx context.Context, cfg Config, log zerolog.Logger) (*sqlStore, error) {
	path := cfg.DSN
	switch {
	case path == "":
		return nil, fmt.Errorf("store: sqlite: empty DSN; give the path of the database file: %w", ErrInvalid)
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		return nil, fmt.Errorf("store: sqlite: DSN %q: give the path of a database file, not a URI or memory database: %w", path, ErrInvalid)
	case strings.ContainsAny(path, "?#"):
		return nil, fmt.Errorf("store: sqlite: database path %q must not contain '?' or '#': %w", path, ErrInvalid)
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("store: sqlite: data directory of %s: %w", path, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("store: sqlite: %s is not a directory: %w", dir, ErrInvalid)
	}
	// Create the file ourselves so that it is private from the first byte; SQLite gives
	// its -wal and -shm files the same mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: open database file %s: %w", path, err)
	}
	st, err := f.Stat()
	_ = f.Close()
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: %s: %w", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		log.Warn().Str("path", path).Str("mode", st.Mode().Perm().String()).
			Msg("database file is readable by others; chmod 600 it")
	}

	// One writer connection: SQLite allows one writer at a time anyway, and serialising
	// in the pool avoids busy errors and lets a transaction begin IMMEDIATE (take the
	// write lock first) instead of failing on a read-to-write upgrade.
	wdb, err := sql.Open("sqlite", path+"?"+sqlitePragmas+sqliteWriterPragmas)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)

	rdb, err := sql.Open("sqlite", path+"?"+sqlitePragmas+"&_query_only=1")
	if err != nil {
		_ = wdb.Close()
		return nil, fmt.Errorf("store: sqlite: %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(sqliteReaders)
	rdb.SetMaxIdleConns(sqliteReaders)

	// Switching to WAL needs the file to itself; two processes creating the file at once
	// can meet here, and SQLite then answers busy without waiting.
	var mode string
	err = retryRace(ctx, func() (bool, error) {
		err := wdb.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode)
		return isBusy(err), err
	})
	if err != nil {
		_ = rdb.Close()
		_ = wdb.Close()
		return nil, fmt.Errorf("store: sqlite: open %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		_ = rdb.Close()
		_ = wdb.Close()
		return nil, fmt.Errorf("store: sqlite: %s: journal mode is %q, not WAL (is the file on a file system without shared memory?): %w", path, mode, errors.ErrUnsupported)
	}
	cdb, err := sql.Open("sqlite", path+"?"+sqlitePragmas)
	if err != nil {
		_ = rdb.Close()
		_ = wdb.Close()
		return nil, fmt.Errorf("store: sqlite: %s: %w", path, err)
	}
	cdb.SetMaxOpenConns(1)
	cdb.SetMaxIdleConns(1)
	cdb.SetConnMaxLifetime(0)
	cdb.SetConnMaxIdleTime(0)
	log.Debug().Str("path", path).Msg("sqlite store open")
	s := newSQLStore(sqliteDialect, rdb, wdb, log)
	s.ckpt = newWALCheckpointer(cdb, walCheckpointEvery, log)
	return s, nil
}
