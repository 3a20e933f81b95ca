//go:build !linux

package ctl

import (
	"io"
	"os"
)

// isTerminal reports whether r is a character device, the nearest this system's
// standard library comes to knowing a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && f.Name() != os.DevNull
}

// withoutEcho cannot turn a terminal's echo off on this system: the password typed is
// shown as it is typed.
func withoutEcho(io.Reader) (restore func(), err error) { return func() {}, nil }
