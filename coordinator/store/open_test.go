package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/store/storetest"
)

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		cfg       store.Config
		sentinel  error  // nil: any error
		mentioned string // the error must name this
	}{
		{"unknown driver", store.Config{Driver: "mysql", DSN: "x"}, store.ErrInvalid, `"mysql"`},
		{"no driver", store.Config{DSN: "x"}, store.ErrInvalid, `unknown driver ""`},
		{"sqlite without path", store.Config{Driver: "sqlite"}, store.ErrInvalid, "empty DSN"},
		{"sqlite memory", store.Config{Driver: "sqlite", DSN: ":memory:"}, store.ErrInvalid, ":memory:"},
		{"sqlite URI", store.Config{Driver: "sqlite", DSN: "file:x.db?mode=ro"}, store.ErrInvalid, "file:x.db"},
		{"sqlite missing directory", store.Config{Driver: "sqlite", DSN: filepath.Join(dir, "missing", "c.db")}, nil, filepath.Join(dir, "missing")},
		{"sqlite parent is a file", store.Config{Driver: "sqlite", DSN: filepath.Join(notDir, "c.db")}, nil, notDir},
		{"postgres without DSN", store.Config{Driver: "postgres"}, store.ErrInvalid, "empty DSN"},
		{"postgres bad DSN", store.Config{Driver: "postgres", DSN: "postgres://u:secret@host:notaport/db"}, store.ErrInvalid, "bad DSN"},
		// Nothing listens on port 1: connection refused at once.
		{"postgres unreachable", store.Config{Driver: "postgres", DSN: "postgres://u:secret@127.0.0.1:1/db?sslmode=disable&connect_timeout=5"}, nil, "127.0.0.1:1/db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := store.Open(t.Context(), tc.cfg, storetest.Logger(t))
			if err == nil {
				_ = s.Close()
				t.Fatal("opened")
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Fatalf("error %v is not %v", err, tc.sentinel)
			}
			if !strings.Contains(err.Error(), tc.mentioned) {
				t.Fatalf("error %q does not mention %q", err, tc.mentioned)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error %q shows the password", err)
			}
		})
	}
}
