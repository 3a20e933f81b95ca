package store_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/store/storetest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestPostgres runs the suite on PostgreSQL, each subtest in an empty database of its own,
// dropped at its end, so subtests run in parallel: schemas of one database would not, as
// migrations take a database-wide advisory lock. Without a reachable PostgreSQL it fails,
// saying how to start one.
func TestPostgres(t *testing.T) {
	t.Parallel() // alongside TestSQLite: nothing shared
	var p parallelSubtests
	storetest.Run(t, func(t *testing.T) store.Config {
		p.start(t)
		return store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)}
	})
}

func BenchmarkPostgres(b *testing.B) {
	db := testenv.PostgresDatabase(b)
	storetest.Bench(b, store.Config{Driver: store.DriverPostgres, DSN: db})
}

// parallelSubtests lets the suite's subtests run in parallel: each starts from a database
// of its own (storetest.Fresh), and most of their time is spent waiting for the database.
// storetest.Run asks for that database first thing in every subtest, so that is where a
// subtest is marked parallel, once, and only at the suite's top level (a subtest's own
// subtests may depend on their order).
type parallelSubtests struct{ marked sync.Map }

func (p *parallelSubtests) start(t *testing.T) {
	if strings.Count(t.Name(), "/") != 1 {
		return
	}
	if _, done := p.marked.LoadOrStore(t, true); !done {
		t.Parallel()
	}
}
