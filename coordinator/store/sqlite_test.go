package store_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/store/storetest"
)

// freshSQLite gives each subtest a database file of its own in a temporary directory.
func freshSQLite(t *testing.T) store.Config {
	return store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(t.TempDir(), "coordinator.db")}
}

func TestSQLite(t *testing.T) {
	t.Parallel() // alongside TestPostgres: nothing shared
	var p parallelSubtests
	storetest.Run(t, func(t *testing.T) store.Config {
		p.start(t)
		return freshSQLite(t)
	})
}

func BenchmarkSQLite(b *testing.B) {
	storetest.Bench(b, store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(b.TempDir(), "bench.db")})
}

// TestSQLiteFile checks what Open leaves on disk: a private file in WAL mode.
func TestSQLiteFile(t *testing.T) {
	cfg := freshSQLite(t)
	s, err := store.Open(t.Context(), cfg, storetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	// A write makes SQLite create the WAL and shared-memory files.
	if err := s.InTx(t.Context(), func(tx store.Tx) error {
		_, err := tx.CreateOrganization(t.Context(), store.Organization{Name: "Acme"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{cfg.DSN, cfg.DSN + "-wal", cfg.DSN + "-shm"} {
		st, err := os.Stat(name)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(name), err)
		}
		if perm := st.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(name), perm)
		}
	}
}
