package journal

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"testing"
)

// TestStatementsAreKept: a statement the journal runs again is compiled once, and kept by
// the connection.
func TestStatementsAreKept(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for range 3 {
		if _, err := f.j.Unsent(ctx, 10); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := f.j.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*cachingConn)
		if !ok {
			return errors.New("the journal's connection does not keep its statements")
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.stmts) == 0 {
			return errors.New("no statement kept")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSameStatementWhileItsRowsAreOpen: in one transaction, a statement run again while
// the rows of its first run are still being read gets a statement of its own; both read
// what they should.
func TestSameStatementWhileItsRowsAreOpen(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const q = `WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM c WHERE x < ? + 4) SELECT x FROM c`
	err := f.j.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, 10, 10)
		if err != nil {
			return err
		}
		defer func() { _ = rows.Close() }()
		var got []int
		for rows.Next() {
			var x int
			if err := rows.Scan(&x); err != nil {
				return err
			}
			got = append(got, x)
			if len(got) == 2 {
				var y int
				if err := tx.QueryRowContext(ctx, q, 100, 100).Scan(&y); err != nil {
					return err
				}
				if y != 100 {
					t.Errorf("the second run read %d, want 100", y)
				}
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if want := []int{10, 11, 12, 13, 14}; !slices.Equal(got, want) {
			t.Errorf("the first run read %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Both statements are done with: the kept one serves the next run.
	var z int
	if err := f.j.db.QueryRowContext(ctx, q, 7, 7).Scan(&z); err != nil || z != 7 {
		t.Fatalf("a third run read %d, %v; want 7", z, err)
	}
}
