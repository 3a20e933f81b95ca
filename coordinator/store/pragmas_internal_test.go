package store

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestSQLitePragmas: the writer's connection syncs every commit (synchronous=FULL, 2) and
// keeps its savepoints' sub-journal in memory (temp_store=MEMORY, 2); the readers keep
// the default temp store (0) and are read-only.
func TestSQLitePragmas(t *testing.T) {
	t.Parallel()
	ctx := testenv.Context(t)
	st, err := Open(ctx, Config{Driver: DriverSQLite, DSN: filepath.Join(t.TempDir(), "coordinator.db")}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	s := st.(*sqlStore)
	pragma := func(t *testing.T, x *q, name string) int {
		t.Helper()
		var v int
		if err := x.db.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v); err != nil {
			t.Fatalf("PRAGMA %s: %v", name, err)
		}
		return v
	}
	if err := st.InTx(ctx, func(w Tx) error {
		x := w.(tx).q
		if got := pragma(t, x, "synchronous"); got != 2 {
			t.Errorf("writer: synchronous = %d, want 2 (FULL)", got)
		}
		if got := pragma(t, x, "temp_store"); got != 2 {
			t.Errorf("writer: temp_store = %d, want 2 (MEMORY)", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r := s.Reader.(*q)
	if got := pragma(t, r, "synchronous"); got != 2 {
		t.Errorf("reader: synchronous = %d, want 2 (FULL)", got)
	}
	if got := pragma(t, r, "temp_store"); got != 0 {
		t.Errorf("reader: temp_store = %d, want 0 (default)", got)
	}
	if got := pragma(t, r, "query_only"); got != 1 {
		t.Errorf("reader: query_only = %d, want 1", got)
	}
}

// BenchmarkSavepointTransactions: transactions shaped like a burst of events sharing one
// (five savepoints, each changing rows spread over a table and two indexes), on the
// writer with its sub-journal in memory against the same writer with SQLite's default
// temp store (a temporary file once a savepoint's originals pass 64 KiB), the two taking
// turns. Reports the time a transaction of each and their ratio (memory ÷ default).
func BenchmarkSavepointTransactions(b *testing.B) {
	ctx := testenv.Context(b)
	st, err := Open(ctx, Config{Driver: DriverSQLite, DSN: filepath.Join(b.TempDir(), "coordinator.db")}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	s := st.(*sqlStore)
	if _, err := s.wdb.ExecContext(ctx, `CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT NOT NULL);
		CREATE INDEX bench_rows_k ON bench_rows (k); CREATE INDEX bench_rows_v ON bench_rows (v)`); err != nil {
		b.Fatal(err)
	}
	const rows = 20000
	if err := st.InTx(ctx, func(w Tx) error {
		for i := range rows {
			if _, err := w.(tx).db.ExecContext(ctx, "INSERT INTO bench_rows (k, v) VALUES (?, ?)",
				fmt.Sprintf("%08x", i*2654435761%rows), fmt.Sprintf("value %d %0100d", i, i)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	n := 0
	burst := func() {
		err := st.InTx(ctx, func(w Tx) error {
			x := w.(tx).q
			for range 5 {
				if err := x.Savepoint(ctx); err != nil {
					return err
				}
				for range 6 { // rows far apart: a leaf page of the table and each index apiece
					n++
					id := 1 + n*7919%rows
					if _, err := x.db.ExecContext(ctx, "UPDATE bench_rows SET k = ?, v = ? WHERE id = ?",
						fmt.Sprintf("%08x", n*40503%rows), fmt.Sprintf("value %d %0100d", n, n), id); err != nil {
						return err
					}
				}
				if err := x.ReleaseSavepoint(ctx); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	setTempStore := func(v string) {
		if _, err := s.wdb.ExecContext(ctx, "PRAGMA temp_store = "+v); err != nil {
			b.Fatal(err)
		}
	}
	var mem, def time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for _, memory := range []bool{i%2 == 0, i%2 != 0} {
			setTempStore(map[bool]string{true: "MEMORY", false: "DEFAULT"}[memory])
			start := time.Now()
			burst()
			if memory {
				mem += time.Since(start)
			} else {
				def += time.Since(start)
			}
		}
	}
	b.StopTimer()
	setTempStore("MEMORY")
	perTx := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(perTx(mem), "us/tx-memory")
	b.ReportMetric(perTx(def), "us/tx-default")
	b.ReportMetric(float64(mem)/float64(def), "ratio")
}
