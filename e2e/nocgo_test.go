//go:build !cgo

package e2e_test

import (
	"fmt"
	"os"
	"testing"
)

// TestMain fails the run: the tests drive the real agent on SoftHSM2 through PKCS#11, which
// needs cgo. They fail rather than skip.
func TestMain(*testing.M) {
	fmt.Fprintln(os.Stderr, "e2e: the end-to-end tests need cgo (CGO_ENABLED=1 and a C compiler)")
	os.Exit(2)
}
