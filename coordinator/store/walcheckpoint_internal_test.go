package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestSQLiteCheckpointsOffTheWriter: a commit that takes the WAL past SQLite's 1,000
// pages leaves the database file as it was (the writer does not checkpoint); the
// checkpointer then copies the WAL into it, on its own after a commit. Not parallel: it
// sets how long the checkpointer waits after a commit.
func TestSQLiteCheckpointsOffTheWriter(t *testing.T) {
	every := walCheckpointEvery
	defer func() { walCheckpointEvery = every }()
	const bigRows, rowSize = 1500, 4000 // about 1,500 pages of 4 KiB
	write := func(t *testing.T, s *sqlStore) {
		t.Helper()
		ctx := t.Context()
		if _, err := s.wdb.ExecContext(ctx, "CREATE TABLE big (id INTEGER PRIMARY KEY, v BLOB NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		if err := s.InTx(ctx, func(w Tx) error {
			for i := range bigRows {
				if _, err := w.(tx).db.ExecContext(ctx, "INSERT INTO big (id, v) VALUES (?, ?)", i, bytes.Repeat([]byte{byte(i)}, rowSize)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	open := func(t *testing.T) (*sqlStore, func() int64) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "coordinator.db")
		st, err := Open(testenv.Context(t), Config{Driver: DriverSQLite, DSN: path}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := st.Close(); err != nil {
				t.Error(err)
			}
		})
		return st.(*sqlStore), func() int64 {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			return fi.Size()
		}
	}
	const copied = bigRows * rowSize

	t.Run("not in the commit", func(t *testing.T) {
		walCheckpointEvery = time.Hour
		s, size := open(t)
		write(t, s)
		if n := size(); n >= copied {
			t.Fatalf("the database file has %d bytes right after the commit: the writer checkpointed", n)
		}
		if err := s.ckpt.checkpoint(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n := size(); n < copied {
			t.Fatalf("the database file has %d bytes after a checkpoint, want at least %d", n, copied)
		}
	})
	t.Run("after a commit", func(t *testing.T) {
		walCheckpointEvery = 10 * time.Millisecond
		s, size := open(t)
		write(t, s)
		deadline := time.Now().Add(time.Minute)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for size() < copied {
			if time.Now().After(deadline) {
				t.Fatalf("the database file has %d bytes a minute after the commit, want at least %d", size(), copied)
			}
			<-tick.C
		}
	})
}
