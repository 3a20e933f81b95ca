package logging

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Duration fields say their unit: zerolog writes Dur as a bare number of milliseconds, so
// its field name ends in _ms ("took_ms", "retry_in_ms"); elsewhere durations are logged as
// Go duration strings ("8s"), which carry their unit.
func TestDurationFieldsNameTheirUnit(t *testing.T) {
	durField := regexp.MustCompile(`\bDur\("([^"]*)"`)
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range durField.FindAllStringSubmatch(line, -1) {
				if !strings.HasSuffix(m[1], "_ms") {
					t.Errorf("%s:%d: duration field %q: name it %q (zerolog writes milliseconds)", path, i+1, m[1], m[1]+"_ms")
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
