package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The programs under test are built once per test process (one per package), not once per
// test: a build costs seconds on a busy machine.
var (
	binMu    sync.Mutex // guards the fields below
	binDir   string
	binPaths = map[string]string{} // main package → built program
	binErrs  = map[string]error{}  // main package → why its build failed
)

// Binary builds the main package pkg (a path relative to the module's root, such as
// "./agent/cmd/tokenfleet-agent") with the go tool on PATH, once per test process, and
// returns the program's path. Programs are built without the race detector, as they
// always were: the tests check them from outside. They are removed by RemoveBinaries
// (Main and MainWithSoftHSM call it).
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	p, err := buildBinary(pkg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// BuildBinary is Binary for a TestMain, before any test runs.
func BuildBinary(pkg string) (string, error) { return buildBinary(pkg) }

func buildBinary(pkg string) (string, error) {
	binMu.Lock()
	defer binMu.Unlock()
	if p, ok := binPaths[pkg]; ok {
		return p, nil
	}
	if err, ok := binErrs[pkg]; ok {
		return "", err
	}
	p, err := goBuild(pkg)
	if err != nil {
		binErrs[pkg] = err
		return "", err
	}
	binPaths[pkg] = p
	return p, nil
}

// goBuild runs go build for pkg into the process's binary directory. binMu is held.
func goBuild(pkg string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go tool is needed to build %s: %w", pkg, err)
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	if binDir == "" {
		if binDir, err = os.MkdirTemp("", "tokenfleet-test-bin-"); err != nil {
			return "", err
		}
	}
	out := filepath.Join(binDir, path.Base(pkg))
	// Generous: a cold build on a busy 2-core machine takes minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

var (
	rootOnce sync.Once
	root     string
	rootErr  error
)

// ModuleRoot is the tokenfleet module's root directory, as the go tool sees it.
func ModuleRoot() (string, error) {
	rootOnce.Do(func() {
		out, err := exec.CommandContext(context.Background(), "go", "env", "GOMOD").Output()
		if err != nil {
			rootErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			rootErr = fmt.Errorf("the tests do not run inside the tokenfleet module")
			return
		}
		root = filepath.Dir(gomod)
	})
	return root, rootErr
}

// RemoveBinaries removes the programs Binary built in this process.
func RemoveBinaries() {
	binMu.Lock()
	defer binMu.Unlock()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	binDir = ""
	clear(binPaths)
}

// Main is a TestMain body for packages whose tests build programs: it runs the tests,
// then removes the programs.
func Main(m *testing.M) int {
	defer RemoveBinaries()
	return m.Run()
}
