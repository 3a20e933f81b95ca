//go:build cgo

package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// TestDemo runs scripts/demo.sh, what `make demo` runs, on the binaries built for this
// run: the first command of the README must keep working as the CLI changes around it.
// The script checks each step itself (a self-approval refused, the token as pkcs11-tool
// sees it, the certificate against the CA with openssl, the PIN shown once) and exits
// non-zero on the first that fails; the test then looks for the end of each check in
// what it printed.
func TestDemo(t *testing.T) {
	t.Parallel()
	var dir string
	for _, pkg := range []string{"./coordinator/cmd/tokenfleet-coordinator", "./coordinator/cmd/tokenfleetctl", "./agent/cmd/tokenfleet-agent"} {
		p, err := testenv.BuildBinary(pkg)
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Dir(p)
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "TOKENFLEET_BIN="+dir, "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/demo.sh: %v\n%s", err, out)
	}
	for _, want := range []string{"Certificate Object; type = X.509 cert", "cert.pem: OK", "demo: done"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out)
		}
	}
}
