//go:build cgo

package pkcs11

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLibraryFileIdentity: symbolic links resolve to one key, and a hard link, which has
// a key of its own, finds the library loaded from the other name by file identity.
func TestLibraryFileIdentity(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "libmodule.so")
	if err := os.WriteFile(file, []byte("stand-in"), 0o644); err != nil {
		t.Fatal(err)
	}
	symlink := filepath.Join(dir, "sym.so")
	if err := os.Symlink("libmodule.so", symlink); err != nil {
		t.Fatal(err)
	}
	hardlink := filepath.Join(dir, "hard.so")
	if err := os.Link(file, hardlink); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.so")
	if err := os.WriteFile(other, []byte("stand-in"), 0o644); err != nil {
		t.Fatal(err)
	}

	key, fi := libraryFile(file)
	if fi == nil {
		t.Fatalf("no file identity for %s", file)
	}
	if k, _ := libraryFile(symlink); k != key {
		t.Errorf("symbolic link keyed %s, the file %s", k, key)
	}
	if k, _ := libraryFile(filepath.Join(dir, ".", "sub", "..", "sym.so")); k != key {
		t.Errorf("unclean path keyed %s, the file %s", k, key)
	}
	if k, fi := libraryFile("libbare.so"); k != "libbare.so" || fi != nil {
		t.Errorf("a bare name is the loader's to search: keyed %s, identity %v", k, fi)
	}

	lib := &library{key: key, file: fi}
	libraries.mu.Lock()
	libraries.m[key] = lib
	libraries.mu.Unlock()
	t.Cleanup(func() {
		libraries.mu.Lock()
		delete(libraries.m, key)
		libraries.mu.Unlock()
	})

	libraries.mu.Lock()
	defer libraries.mu.Unlock()
	for _, p := range []string{file, symlink, hardlink} {
		if got := findLibraryLocked(libraryFile(p)); got != lib {
			t.Errorf("%s: found %v, want the library loaded from %s", p, got, file)
		}
	}
	if got := findLibraryLocked(libraryFile(other)); got != nil {
		t.Errorf("another file with the same content found library %s", got.key)
	}
}
