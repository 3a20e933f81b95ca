package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const modulePath = "github.com/tokenfleet/tokenfleet"

// TestDeps keeps protocol a leaf: both ends of the wire and tools outside
// the project import it, so it may depend on the standard library only, and
// protocol/seal on the standard library and protocol.
func TestDeps(t *testing.T) {
	tests := []struct {
		pkg     string
		allowed map[string]bool // non-standard packages allowed
	}{
		{modulePath + "/protocol", nil},
		{modulePath + "/protocol/seal", map[string]bool{modulePath + "/protocol": true}},
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.pkg, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), goTool, "list", "-deps", "-json=ImportPath,Standard", tc.pkg)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list %s: %v\n%s", tc.pkg, err, stderr.String())
			}
			dec := json.NewDecoder(bytes.NewReader(out))
			seen := 0
			for {
				var p struct {
					ImportPath string
					Standard   bool
				}
				if err := dec.Decode(&p); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					t.Fatalf("go list output: %v", err)
				}
				seen++
				if p.ImportPath == tc.pkg || p.Standard || tc.allowed[p.ImportPath] {
					continue
				}
				if strings.HasPrefix(p.ImportPath, modulePath) {
					t.Errorf("%s imports %s: it must not depend on the rest of the project", tc.pkg, p.ImportPath)
				} else {
					t.Errorf("%s imports %s: only the standard library is allowed", tc.pkg, p.ImportPath)
				}
			}
			if seen < 2 {
				t.Fatalf("go list reported %d packages for %s; the check saw nothing", seen, tc.pkg)
			}
		})
	}
}
