// Package journal is the agent's memory: an embedded SQLite file in the data directory
// (mode 0600) that records every job message before it is acked, the progress of each job
// attempt step by step, the secrets the agent must keep to resume a job, and an outbox of
// messages to send.
//
// What it guarantees, and why:
//
//   - A job message is journalled before the broker delivery is acked, deduplicated on its
//     message ID: a redelivered dispatch is recognised and never started twice. A dispatch
//     for a newer attempt of a job supersedes the older attempt (which stops); one for an
//     older attempt is stale and ignored. Attempt numbers are the coordinator's fencing
//     tokens.
//   - Every step of a job is journalled before it runs (started) and after (done). A step
//     found started after a restart was interrupted: the executor runs it again, so every
//     step is written to be safe to repeat.
//   - Messages caused by a change (progress, CSR, result) are appended to the outbox in
//     the same transaction as the change: either both happened or neither. The sender
//     lists unsent ones oldest first and marks them sent after the broker confirmed them,
//     so a message is sent at least once and, since it keeps its ID, deduplicated by the
//     coordinator.
//   - Commits are durable: the database runs in WAL mode with synchronous=FULL, so every
//     commit fsyncs the WAL before returning. With the default (NORMAL) a power cut may
//     roll back the last commits, and the agent would then forget a dispatch it already
//     acked (the broker deleted it, so the job would be lost) or forget that a key was
//     generated. An fsync per step costs about a millisecond; a token step costs hundreds.
//   - Secrets (PINs the agent generated and set before the result carrying them is sent)
//     are stored only sealed to the agent's own key (purpose agent_resume, bound to the
//     job and attempt, the secret's name sealed with it), never in clear, and are deleted
//     when the job succeeds or is cancelled. After a failure, the agent's own or one the
//     coordinator announced in a cancel, they are kept until the job is pruned: a retry of
//     the same job must know the PINs the earlier attempt set.
//
// The journal uses a single database connection: the agent's writes are few and small,
// and one connection keeps them in one order without lock contention inside the process.
package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	// SQLite in C through cgo, built into the executable: the agent needs cgo for PKCS#11
	// anyway, and the pure-Go translation of SQLite was a fifth of the executable, whose
	// pages are most of an idle agent's memory. Same file format, same guarantees.
	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// FileName is the journal's file name in the agent's data directory.
const FileName = "journal.db"

// pragmas: WAL for concurrent readers and cheap commits, FULL so each commit is on disk
// before it returns (see the package doc), a busy timeout for a second process (the
// agent's CLI reading the journal), and write transactions that take the lock at BEGIN so
// two writers never deadlock upgrading a read lock.
const pragmas = "_busy_timeout=10000&_journal_mode=WAL&_synchronous=FULL&_foreign_keys=1&_txlock=immediate"

// Sealer seals the journal's secrets to the agent's own key; *keys.Pair is one.
type Sealer interface {
	Seal(secret []byte, b seal.Binding) (*protocol.Sealed, error)
	Open(s *protocol.Sealed, b seal.Binding) ([]byte, error)
}

// Options tune Open.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	Log zerolog.Logger
}

// Journal is the agent's journal. It is safe for concurrent use.
type Journal struct {
	db     *sql.DB
	path   string
	sealer Sealer
	now    func() time.Time
	log    zerolog.Logger
	notify chan struct{}
	// commits counts committed write transactions (Commits).
	commits atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

// Errors of Update.
var (
	// ErrNotFound: no such job attempt in the journal.
	ErrNotFound = errors.New("journal: no such job attempt")
	// ErrFinished: the attempt is in a final state (done, failed, cancelled, superseded);
	// nothing may change it any more. An executor still working on it must stop.
	ErrFinished = errors.New("journal: the job attempt is finished")
)

// Open opens or creates the journal at path. The file is created with mode 0600, and an
// existing one with a wider mode is narrowed to it: the journal holds dispatches, public
// keys and certificates (never a PIN in clear), which are nobody else's business.
func Open(ctx context.Context, path string, sealer Sealer, opts Options) (*Journal, error) {
	if sealer == nil {
		return nil, errors.New("journal: a sealer (the agent's key pair) is required")
	}
	if err := ensurePrivateFile(path); err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector{dsn: path + "?" + pragmas, drv: &sqlite3.SQLiteDriver{}})
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	j := &Journal{db: db, path: path, sealer: sealer, now: now, log: opts.Log, notify: make(chan struct{}, 1)}
	if err := j.migrate(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := j.checkDurability(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return j, nil
}

func ensurePrivateFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			return fmt.Errorf("journal: narrowing the mode of %s: %w", path, err)
		}
	}
	return nil
}

// checkDurability verifies the pragmas took: a journal that silently ran with another
// mode would lose acked jobs on a power cut.
func (j *Journal) checkDurability(ctx context.Context) error {
	var mode string
	if err := j.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	var sync int
	if err := j.db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if mode != "wal" || sync != 2 {
		return fmt.Errorf("journal: %s runs with journal_mode=%s synchronous=%d, want wal and 2 (FULL)", j.path, mode, sync)
	}
	return nil
}

// Close closes the journal. Calling it twice is harmless.
func (j *Journal) Close() error {
	j.closeOnce.Do(func() { j.closeErr = j.db.Close() })
	return j.closeErr
}

// Path is the journal file's path.
func (j *Journal) Path() string { return j.path }

// Notify receives a value after a commit that added messages to the outbox: the sender
// waits on it instead of polling. One value stands for any number of commits.
func (j *Journal) Notify() <-chan struct{} { return j.notify }

func (j *Journal) signal() {
	select {
	case j.notify <- struct{}{}:
	default:
	}
}

// schemaVersion 2 added secrets.sent.
const schemaVersion = 2

// migrate creates the schema. Times are Unix nanoseconds (UTC); envelopes are stored in
// their encoded wire form, so what is replayed is exactly what was received or will be
// sent.
func (j *Journal) migrate(ctx context.Context) error {
	const ddl = `
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
-- Every job message received, by message ID: the dedupe table.
CREATE TABLE IF NOT EXISTS received (
	message_id  TEXT PRIMARY KEY,
	type        TEXT NOT NULL,
	job_id      TEXT NOT NULL,
	attempt     INTEGER NOT NULL,
	disposition TEXT NOT NULL,
	received_at INTEGER NOT NULL
);
-- One row per job attempt.
CREATE TABLE IF NOT EXISTS jobs (
	job_id       TEXT NOT NULL,
	attempt      INTEGER NOT NULL,
	kind         TEXT NOT NULL,
	dispatch     BLOB,
	state        TEXT NOT NULL,
	step         TEXT NOT NULL DEFAULT '',
	step_status  TEXT NOT NULL DEFAULT '',
	token_serial TEXT NOT NULL DEFAULT '',
	key_id       TEXT NOT NULL DEFAULT '',
	public_key   BLOB,
	old_key_id   TEXT NOT NULL DEFAULT '',
	certificate  BLOB,
	cancel       BLOB,
	result       BLOB,
	created_at   INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL,
	PRIMARY KEY (job_id, attempt)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
-- Secrets of a job, sealed to the agent's own key. Per job, not per attempt: a retry must
-- know the PINs an earlier attempt set on the token.
CREATE TABLE IF NOT EXISTS secrets (
	job_id     TEXT NOT NULL,
	name       TEXT NOT NULL,
	attempt    INTEGER NOT NULL,
	applied    INTEGER NOT NULL,
	sent       INTEGER NOT NULL DEFAULT 0,
	sealed     BLOB NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (job_id, name)
);
CREATE TABLE IF NOT EXISTS outbox (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	message_id TEXT NOT NULL UNIQUE,
	type       TEXT NOT NULL,
	job_id     TEXT NOT NULL DEFAULT '',
	attempt    INTEGER NOT NULL DEFAULT 0,
	data       BLOB NOT NULL,
	created_at INTEGER NOT NULL,
	sent_at    INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
`
	return j.tx(ctx, func(tx *sql.Tx) error {
		var v string
		err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v)
		switch {
		case err == nil && v == "1":
			// A secret journalled by an agent that did not mark what it sent may have
			// been sent: marked so, a resumed step checks the token for it as it did.
			if _, err := tx.ExecContext(ctx, `ALTER TABLE secrets ADD COLUMN sent INTEGER NOT NULL DEFAULT 1`); err != nil {
				return fmt.Errorf("migrate schema 1 to 2: %w", err)
			}
			_, err = tx.ExecContext(ctx, `UPDATE meta SET value = ? WHERE key = 'schema_version'`, fmt.Sprint(schemaVersion))
			return err
		case err == nil:
			if v != fmt.Sprint(schemaVersion) {
				return fmt.Errorf("journal: %s has schema version %s; this agent knows %d", j.path, v, schemaVersion)
			}
			return nil
		case !isNoTable(err) && !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if _, err := tx.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('schema_version', ?)`, fmt.Sprint(schemaVersion))
		return err
	})
}

func isNoTable(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "no such table")
}

// tx runs fn in a write transaction, committing when it returns nil.
func (j *Journal) tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("journal: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("journal: commit: %w", err)
	}
	j.commits.Add(1)
	return nil
}

// Commits is how many write transactions the journal committed since it was opened: each
// is a sync of the file, what a job's journal work costs most.
func (j *Journal) Commits() uint64 { return j.commits.Load() }

func (j *Journal) stamp() int64 { return j.now().UTC().UnixNano() }
