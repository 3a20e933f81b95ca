package coordinator

import (
	"io"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/internal/logging"
)

// NewLogger returns the logger the configuration asks for, writing to w: JSON lines, or
// human-readable lines when the format is console, or auto and w is a terminal (colour
// only on a terminal). The level it returns is the logger's: a reload sets it.
func NewLogger(c LogConfig, w io.Writer) (zerolog.Logger, *logging.Level) {
	level := logging.NewLevel(c.ParsedLevel())
	return logging.New(w, c.Format, level), level
}

// ParsedLevel is the configured level; Validate has refused anything else.
func (c LogConfig) ParsedLevel() zerolog.Level {
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil || c.Level == "" {
		return zerolog.InfoLevel
	}
	return level
}
