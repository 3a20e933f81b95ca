//go:build cgo

package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

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
	for _, tool := range []string{"pkcs11-tool", "openssl", "softhsm2-util"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s is not installed (%v): run `make test` (scripts/ensure-deps.sh installs it)\n", tool, err)
			return 2
		}
	}
	if err := testenv.CheckManagementAPI(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 2
	}
	var err error
	if agentBin, err = testenv.BuildBinary("./agent/cmd/tokenfleet-agent"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 2
	}
	return testenv.MainWithSoftHSM(m)
}
