package testenv

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// SoftHSMTokenDir is the directory in which the SoftHSM2 store SOFTHSM2_CONF names keeps
// the token with the serial: SoftHSM2 names it by a UUID whose last digits, without the
// dashes, are the serial.
func SoftHSMTokenDir(t testing.TB, serial string) string {
	t.Helper()
	conf, err := os.ReadFile(os.Getenv("SOFTHSM2_CONF"))
	if err != nil {
		t.Fatal(err)
	}
	var tokens string
	for line := range strings.SplitSeq(string(conf), "\n") {
		if v, ok := strings.CutPrefix(line, "directories.tokendir ="); ok {
			tokens = strings.TrimSpace(v)
		}
	}
	dirs, err := filepath.Glob(filepath.Join(tokens, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if strings.HasSuffix(strings.ReplaceAll(filepath.Base(d), "-", ""), serial) {
			return d
		}
	}
	t.Fatalf("no SoftHSM2 directory for token %s in %s", serial, tokens)
	return ""
}

// CutObjectWriteShort leaves in a SoftHSM2 token directory what a process killed while
// SoftHSM2 created an object leaves (it writes the object's file, then its lock file):
// the object's empty file without its lock. It returns the file's name.
func CutObjectWriteShort(t testing.TB, tokenDir string) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%x-%x-%x-%x-%x.object", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	if err := os.WriteFile(filepath.Join(tokenDir, name), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}
