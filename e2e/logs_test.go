//go:build cgo

package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// checkLogLines checks that every line of a JSON log is one JSON object that names no
// field twice: log collectors index lines by field, and some (Elasticsearch's strict
// parser) refuse a line with a duplicate field outright. Lines not starting with '{' are
// skipped when mixed is set (a program's own error line next to its JSON log).
func checkLogLines(name string, data []byte, mixed bool) []string {
	var bad []string
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || (mixed && line[0] != '{') {
			continue
		}
		if err := oneObject(line); err != nil {
			bad = append(bad, fmt.Sprintf("log of %s, line %d: %v: %s", name, i+1, err, line))
		}
	}
	return bad
}

// oneObject checks that data is a single JSON object whose fields are all different.
func oneObject(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return fmt.Errorf("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		if seen[key] {
			return fmt.Errorf("field %q twice", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("more than one JSON value")
	}
	return nil
}

// checkLogs checks the lines of every log the system collected.
func (s *system) checkLogs() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, l := range s.logs {
		for _, b := range checkLogLines(name, l.Bytes(), strings.Contains(name, "binary")) {
			s.t.Error(b)
		}
	}
}

// TestLogLineCheck: the check finds a duplicate field and a line that is not JSON, and
// accepts well-formed lines.
func TestLogLineCheck(t *testing.T) {
	tests := []struct {
		name  string
		log   string
		mixed bool
		bad   int
	}{
		{"well formed", `{"level":"info","token":"a","message":"x"}` + "\n" + `{"level":"debug","n":{"token":1,"token":2}}`, false, 0},
		{"duplicate field", `{"level":"info","token":"","token":"a","message":"x"}`, false, 1},
		{"not JSON", "agent: something went wrong", false, 1},
		{"own error line in a mixed log", "tokenfleet-agent: refused\n" + `{"level":"error"}`, true, 0},
		{"two objects on a line", `{"a":1}{"b":2}`, false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkLogLines(tc.name, []byte(tc.log), tc.mixed); len(got) != tc.bad {
				t.Errorf("found %d bad lines, want %d: %v", len(got), tc.bad, got)
			}
		})
	}
}
