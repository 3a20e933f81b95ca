package logging

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestLevelChangesReachCopies(t *testing.T) {
	var buf bytes.Buffer
	level := NewLevel(zerolog.InfoLevel)
	log := New(&buf, FormatJSON, level)
	component := log.With().Str("component", "x").Logger() // what a component keeps
	component.Debug().Msg("hidden")
	component.Info().Msg("shown")
	level.Set(zerolog.DebugLevel)
	component.Debug().Msg("now shown")
	level.Set(zerolog.ErrorLevel)
	component.Warn().Msg("hidden again")
	log.Log().Msg("no level")

	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		got = append(got, m["message"].(string))
	}
	if want := []string{"shown", "now shown", "no level"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("logged %q, want %q", got, want)
	}
}

// Console output to a file or a pipe carries no colour escape codes.
func TestConsoleWithoutTerminalHasNoColour(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	log := New(f, FormatConsole, NewLevel(zerolog.InfoLevel))
	log.Error().Str("job", "j1").Msg("something failed")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.Contains(s, "something failed") || !strings.Contains(s, "job=j1") {
		t.Fatalf("not console output: %q", s)
	}
	if strings.Contains(s, "\x1b[") {
		t.Fatalf("colour escape codes written to a file: %q", s)
	}
	var buf bytes.Buffer // not a file at all
	bl := New(&buf, FormatConsole, NewLevel(zerolog.InfoLevel))
	bl.Warn().Msg("x")
	if strings.Contains(buf.String(), "\x1b[") || strings.HasPrefix(buf.String(), "{") {
		t.Fatalf("console output to a buffer: %q", buf.String())
	}
	buf.Reset()
	bl = New(&buf, FormatAuto, NewLevel(zerolog.InfoLevel))
	bl.Warn().Msg("x")
	if !strings.HasPrefix(buf.String(), "{") {
		t.Fatalf("auto format off a terminal is not JSON: %q", buf.String())
	}
}
