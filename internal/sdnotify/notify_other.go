//go:build !linux

package sdnotify

// send does nothing: only Linux has systemd.
func send(string) (bool, error) { return false, nil }
