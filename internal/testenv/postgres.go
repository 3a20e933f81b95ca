package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// PostgresURLEnv names the variable pointing tests at a PostgreSQL role that may create
// databases.
const PostgresURLEnv = "TOKENFLEET_TEST_POSTGRES_URL"

// DefaultPostgresURL is the role scripts/ensure-deps.sh creates.
const DefaultPostgresURL = "postgres://tokenfleet:tokenfleet@127.0.0.1:5432/postgres?sslmode=disable"

const postgresHint = "start it with `make test` (scripts/ensure-deps.sh starts PostgreSQL and creates the tokenfleet role), " +
	"or set " + PostgresURLEnv + " to the URL of a role with CREATEDB"

// PostgresURL returns the administrative URL tests connect with.
func PostgresURL() string {
	if v := os.Getenv(PostgresURLEnv); v != "" {
		return v
	}
	return DefaultPostgresURL
}

// PostgresDatabase creates a database with a random name for this test and drops it when
// the test ends, with everything in it. It returns the database's URL. When PostgreSQL
// cannot be reached the test fails, saying how to start it.
func PostgresDatabase(t testing.TB) string {
	t.Helper()
	admin := PostgresURL()
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("testenv: %s must be a postgres:// URL", PostgresURLEnv)
	}
	db, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatalf("testenv: PostgreSQL at %s: %v; %s", u.Redacted(), err, postgresHint)
	}
	defer func() { _ = db.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // generous: CREATE DATABASE waits for I/O on a busy machine
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("testenv: PostgreSQL is not reachable at %s: %v; %s", u.Redacted(), err, postgresHint)
	}

	b := make([]byte, 8)
	_, _ = rand.Read(b)
	name := "tokenfleet_test_" + hex.EncodeToString(b)
	// The name is ours and made of [a-z0-9_]: safe to put in the statement.
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database %s at %s: %v; %s", name, u.Redacted(), err, postgresHint)
	}
	t.Cleanup(func() {
		if err := dropPostgresDatabase(admin, name); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// dropPostgresDatabase drops a database this package created, closing what is still
// connected to it.
func dropPostgresDatabase(admin, name string) error {
	if !strings.HasPrefix(name, "tokenfleet_test_") {
		return fmt.Errorf("refusing to drop %s: not a test database", name)
	}
	db, err := sql.Open("pgx", admin)
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer func() { _ = db.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // generous: the machine may be busy
	defer cancel()
	if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// PostgresSchema creates a schema with a random name inside the database at dbURL and
// returns a URL whose connections use it (search_path), so one database can hold many
// independent copies of a schema; it goes when the database is dropped.
func PostgresSchema(t testing.TB, dbURL string) string {
	t.Helper()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer func() { _ = db.Close() }()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "s_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // generous: the machine may be busy
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("testenv: create schema %s: %v; %s", schema, err, postgresHint)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	qv := u.Query()
	qv.Set("search_path", schema)
	u.RawQuery = qv.Encode()
	return u.String()
}
