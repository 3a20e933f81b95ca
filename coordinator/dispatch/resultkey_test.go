package dispatch_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
)

func TestResultKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), dispatch.ResultKeyFile)
	key, created, err := dispatch.LoadOrCreateResultKey(path)
	if err != nil || !created {
		t.Fatalf("first start: created %v, %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	again, created, err := dispatch.LoadOrCreateResultKey(path)
	if err != nil || created || !again.Equal(key) {
		t.Fatalf("second start: created %v, same key %v, %v", created, again.Equal(key), err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dispatch.LoadOrCreateResultKey(path); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("a world-readable key: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dispatch.LoadOrCreateResultKey(path); err == nil || !strings.Contains(err.Error(), "PEM") {
		t.Fatalf("garbage: %v", err)
	}
}
