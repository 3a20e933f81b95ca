package store

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// mustAffect turns "no row changed" into sql.ErrNoRows, which wrap reports as ErrNotFound.
func mustAffect(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return sql.ErrNoRows
	}
	return nil
}

// exists returns nil when the query finds a row and an ErrNotFound error naming what
// otherwise.
func (x *q) exists(ctx context.Context, what, query string, args ...any) error {
	var one int
	return x.d.wrap(what, x.queryRow(ctx, query, args...).Scan(&one))
}

// collect scans every row and closes rows.
func collect[T any](rows *sql.Rows, d *dialect, op string, scan func(scanner) (T, error)) ([]T, error) {
	defer func() { _ = rows.Close() }()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, d.wrap(op, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, d.wrap(op, err)
	}
	return out, nil
}

func sha256Sum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// constantTimeEqual compares two hashes without leaking where they differ.
func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// cursorTime and parseCursorTime put a time into a page cursor exactly.
func cursorTime(t time.Time) string { return normTime(t).Format(time.RFC3339Nano) }

func parseCursorTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("malformed page cursor: %w", ErrInvalid)
	}
	return normTime(t), nil
}

// isBusy reports SQLite's "another connection holds the lock" errors.
func isBusy(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff { // primary code, whatever the extended one
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return true
	}
	return false
}

// raceAttempts bounds retryRace.
const raceAttempts = 6

// retryRace runs fn again, after a short random wait, while it fails and says the failure
// came from racing another process (two processes setting up one new SQLite file). Other
// errors are returned at once.
func retryRace(ctx context.Context, fn func() (raced bool, err error)) error {
	for attempt := 1; ; attempt++ {
		raced, err := fn()
		if err == nil || !raced || attempt == raceAttempts {
			return err
		}
		wait := time.Duration(attempt) * time.Duration(20+mrand.IntN(80)) * time.Millisecond
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}
