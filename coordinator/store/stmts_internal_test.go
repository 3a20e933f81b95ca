package store

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestSQLiteStatementsPrepared: on SQLite, a query is prepared once: on the readers' pool
// when first read, on the writer once the transaction that first ran it has ended (the
// writer's one connection is busy until then), and used prepared afterwards; the cache
// stops growing at its bound, and closing the store finalises what it holds.
func TestSQLiteStatementsPrepared(t *testing.T) {
	t.Parallel()
	ctx := testenv.Context(t)
	st, err := Open(ctx, Config{Driver: DriverSQLite, DSN: filepath.Join(t.TempDir(), "coordinator.db")}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	s := st.(*sqlStore)
	const query = "SELECT COUNT(*) FROM organisations"
	count := func(x *q) int {
		var n int
		if err := x.queryRow(ctx, query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(s.Reader.(*q)); n != 0 || s.rstmts.get(query) == nil {
		t.Fatalf("read %d organisations; prepared on the readers: %v", n, s.rstmts.get(query) != nil)
	}
	for i := range 2 {
		err := st.InTx(ctx, func(w Tx) error {
			if _, err := w.CreateOrganization(ctx, Organization{Name: fmt.Sprintf("Org %d", i)}); err != nil {
				return err
			}
			prepared := s.wstmts.get(query) != nil
			if n := count(w.(tx).q); n != i+1 || prepared != (i > 0) {
				return fmt.Errorf("transaction %d counts %d organisations, query prepared on the writer: %v", i, n, prepared)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if s.wstmts.get(query) == nil {
		t.Fatal("not prepared on the writer after its transaction")
	}

	c := s.wstmts
	for i := range maxCachedStmts + 10 {
		c.want(fmt.Sprintf("SELECT %d", i))
	}
	c.mu.Lock()
	size := len(c.stmts) + len(c.pending)
	c.mu.Unlock()
	if size != maxCachedStmts {
		t.Fatalf("the writer's cache holds %d statements, want its bound %d", size, maxCachedStmts)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if c.get(query) != nil || !c.closed {
		t.Fatal("statements kept after Close")
	}
}
