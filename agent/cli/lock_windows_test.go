//go:build windows

package cli_test

import (
	"os"
	"testing"

	"golang.org/x/sys/windows"
)

// holdLock takes the lock an agent takes on its data directory.
func holdLock(t *testing.T, f *os.File) {
	t.Helper()
	var ol windows.Overlapped
	if err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol); err != nil {
		t.Fatal(err)
	}
}
