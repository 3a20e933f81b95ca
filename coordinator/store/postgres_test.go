package store_test

import (
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/store/storetest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestPostgres runs the suite in a database created for this run and dropped at its end;
// each subtest gets a schema of its own inside it. Without a reachable PostgreSQL it
// fails, saying how to start one.
func TestPostgres(t *testing.T) {
	db := testenv.PostgresDatabase(t)
	storetest.Run(t, func(t *testing.T) store.Config {
		return store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresSchema(t, db)}
	})
}

func BenchmarkPostgres(b *testing.B) {
	db := testenv.PostgresDatabase(b)
	storetest.Bench(b, store.Config{Driver: store.DriverPostgres, DSN: db})
}
