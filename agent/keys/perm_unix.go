//go:build !windows

package keys

import (
	"fmt"
	"io/fs"
	"os"
)

// checkPrivate refuses a key file that group or others may read or write.
func checkPrivate(path string, st fs.FileInfo) error {
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("keys: %s has mode %04o: others may read the agent's private key; refusing it (chmod 600 it if it was never exposed, else delete it so a new key is made)", path, perm)
	}
	return nil
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	defer func() { _ = d.Close() }()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("keys: sync %s: %w", dir, err)
	}
	return nil
}
