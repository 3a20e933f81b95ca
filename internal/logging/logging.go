// Package logging makes the zerolog loggers of the coordinator and the agent: JSON lines for
// services, human-readable lines for people, colour only on a terminal, and a level that a
// reload can change while every component keeps the logger it was given.
package logging

import (
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Level is a log level that can be changed while loggers made with it are in use.
type Level struct{ v atomic.Int32 }

// NewLevel returns a Level set to l.
func NewLevel(l zerolog.Level) *Level {
	lv := &Level{}
	lv.Set(l)
	return lv
}

// Set changes the level of every logger made with l.
func (l *Level) Set(v zerolog.Level) { l.v.Store(int32(v)) }

// Get returns the current level.
func (l *Level) Get() zerolog.Level { return zerolog.Level(l.v.Load()) }

// Formats.
const (
	FormatJSON    = "json"
	FormatConsole = "console"
	FormatAuto    = "auto" // console on a terminal, else JSON; "" means the same
)

// New returns a logger writing to w at level: JSON lines, or human-readable lines when
// format is console, or auto (or "") and w is a terminal. Colour is used only when w is a
// terminal: escape codes in a file or a journal are noise.
func New(w io.Writer, format string, level *Level) zerolog.Logger {
	out := w
	if format == FormatConsole || (format != FormatJSON && IsTerminal(w)) {
		out = zerolog.ConsoleWriter{Out: w, NoColor: !IsTerminal(w), TimeFormat: time.RFC3339}
	}
	// The logger itself lets everything through; the writer drops what is below the level
	// of the moment, so that a change reaches the copies the components hold.
	// Components log from their own goroutines; not every writer is safe for that.
	return zerolog.New(filter{w: zerolog.LevelWriterAdapter{Writer: zerolog.SyncWriter(out)}, level: level}).
		Level(zerolog.TraceLevel).With().Timestamp().Logger()
}

// filter drops events below its level.
type filter struct {
	w     zerolog.LevelWriter
	level *Level
}

func (f filter) Write(p []byte) (int, error) { return f.w.Write(p) }

func (f filter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	// Events logged without a level (Logger.Log) are always written, as zerolog does.
	if l != zerolog.NoLevel && l < f.level.Get() {
		return len(p), nil
	}
	return f.w.WriteLevel(l, p)
}

// IsTerminal reports whether w is a character device (a terminal), without a dependency.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
