//go:build windows

package config

import (
	"os"
	"path/filepath"
)

// DefaultDataDir is where the agent keeps its journal and key: %ProgramData%\tokenfleet\agent.
func DefaultDataDir() string {
	base := os.Getenv("ProgramData")
	if base == "" {
		base = `C:\ProgramData`
	}
	return filepath.Join(base, "tokenfleet", "agent")
}
