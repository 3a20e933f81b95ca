//go:build !windows

package config

// DefaultDataDir is where the agent keeps its journal and key: systemd's StateDirectory
// for the unit in systemd/.
func DefaultDataDir() string { return "/var/lib/tokenfleet-agent" }
