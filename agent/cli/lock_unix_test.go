//go:build !windows

package cli_test

import (
	"os"
	"syscall"
	"testing"
)

// holdLock takes the lock an agent takes on its data directory.
func holdLock(t *testing.T, f *os.File) {
	t.Helper()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
}
