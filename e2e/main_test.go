//go:build cgo

package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// agentBin is the tokenfleet-agent binary built for this run of the tests.
var agentBin string

// TestMain builds the agent binary once, checks that every outside tool the tests rely on
// is installed (the tests fail, never skip, without them), and runs the tests with a
// private SoftHSM2 configuration (each test then points SOFTHSM2_CONF at a token store of
// its own). Run as a crash-test child (see crash_test.go), the binary is the agent instead.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(agentChild())
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	for _, tool := range []string{"pkcs11-tool", "openssl", "softhsm2-util", "rabbitmqctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s is not installed (%v): run `make test` (scripts/ensure-deps.sh installs it)\n", tool, err)
			return 2
		}
	}
	dir, err := os.MkdirTemp("", "tokenfleet-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 2
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if agentBin, err = buildAgent(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 2
	}
	return testenv.MainWithSoftHSM(m)
}

// buildAgent builds the real tokenfleet-agent main with the go tool on PATH.
func buildAgent(dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go tool is needed to build tokenfleet-agent: %w", err)
	}
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("the tests do not run inside the tokenfleet module")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "tokenfleet-agent")
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, "./agent/cmd/tokenfleet-agent")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build tokenfleet-agent: %w\n%s", err, out)
	}
	return bin, nil
}
