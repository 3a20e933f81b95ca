// Package testenv gives tests the real components they run against: a private SoftHSM2
// token store, OpenSC's pkcs11-tool and openssl as independent verifiers. Nothing here is
// a fake: when a component is missing the test fails with the command that installs it,
// it never skips.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// SoftHSMModule is where Debian's softhsm2 package puts the PKCS#11 module.
const SoftHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

const installHint = "run `make test` (it installs what is missing) or: apt-get install -y softhsm2 opensc openssl"

// SoftHSM is a private SoftHSM2 configuration: its own token directory, so tests never see
// tokens made by anyone else.
type SoftHSM struct {
	Dir    string // holds the config file and the token directory
	Conf   string // path of the softhsm2.conf
	Module string // path of the PKCS#11 module
}

// SetupSoftHSM creates a private SoftHSM2 configuration under a fresh directory (on
// /dev/shm when available: object writes are several times faster there) and points
// SOFTHSM2_CONF at it for this process. Call it from TestMain, before any module is loaded:
// SoftHSM reads the variable once, in C_Initialize. The returned cleanup removes it all.
func SetupSoftHSM() (*SoftHSM, func(), error) {
	s, err := newSoftHSM()
	if err != nil {
		return nil, nil, err
	}
	old, had := os.LookupEnv("SOFTHSM2_CONF")
	if err := os.Setenv("SOFTHSM2_CONF", s.Conf); err != nil {
		_ = os.RemoveAll(s.Dir)
		return nil, nil, err
	}
	cleanup := func() {
		if had {
			_ = os.Setenv("SOFTHSM2_CONF", old)
		} else {
			_ = os.Unsetenv("SOFTHSM2_CONF")
		}
		_ = os.RemoveAll(s.Dir)
	}
	return s, cleanup, nil
}

// NewSoftHSMStore gives the test an empty SoftHSM2 token store of its own: SOFTHSM2_CONF
// points at it until the test ends, then at the previous store again, and the store is
// removed. Tokens earlier tests (or earlier runs of -count) made are not in it, so what a
// test sees does not depend on what ran before. The tools the test starts (softhsm2-util,
// pkcs11-tool, an agent binary) inherit it. SoftHSM2 reads the variable in C_Initialize:
// call it first thing, while no module is loaded in the process (every Module of earlier
// tests closed), and not from parallel tests.
func NewSoftHSMStore(t testing.TB) *SoftHSM {
	t.Helper()
	s, err := newSoftHSM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(s.Dir) })
	t.Setenv("SOFTHSM2_CONF", s.Conf)
	return s
}

// newSoftHSM creates a SoftHSM2 configuration and its empty token directory under a fresh
// directory.
func newSoftHSM() (*SoftHSM, error) {
	if _, err := os.Stat(SoftHSMModule); err != nil {
		return nil, fmt.Errorf("SoftHSM2 module %s not found (%w); %s", SoftHSMModule, err, installHint)
	}
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "tokenfleet-softhsm-")
	if err != nil {
		return nil, fmt.Errorf("create SoftHSM2 directory: %w", err)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("create SoftHSM2 token directory: %w", err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("write SoftHSM2 config: %w", err)
	}
	return &SoftHSM{Dir: dir, Conf: conf, Module: SoftHSMModule}, nil
}

// MainWithSoftHSM is a TestMain body: it sets up a private SoftHSM2 configuration, runs the
// package's tests and removes it. A missing SoftHSM2 fails the run loudly.
func MainWithSoftHSM(m *testing.M) int {
	_, cleanup, err := SetupSoftHSM()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 2
	}
	defer cleanup()
	defer RemoveBinaries()
	return m.Run()
}

// InitToken initialises the next free SoftHSM2 slot with softhsm2-util (a tool nobody here
// wrote), so tests can start from a token this project did not touch. It returns the
// token's serial number.
func InitToken(t testing.TB, label, soPIN, userPIN string) string {
	t.Helper()
	Run(t, "softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", soPIN, "--pin", userPIN)
	out := Run(t, "softhsm2-util", "--show-slots")
	// Output lists blocks of "Serial number: X" ... "Label: Y"; pair them up.
	var serial string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "Serial number:"); ok {
			serial = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "Label:"); ok && strings.TrimSpace(v) == label {
			if serial == "" {
				t.Fatalf("softhsm2-util shows token %q without a serial number", label)
			}
			return serial
		}
	}
	t.Fatalf("token %q not found in softhsm2-util --show-slots:\n%s", label, out)
	return ""
}

// PKCS11Tool runs OpenSC's pkcs11-tool against the SoftHSM2 module and returns its
// combined output; a non-zero exit fails the test.
func PKCS11Tool(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, "pkcs11-tool", append([]string{"--module", SoftHSMModule}, args...)...)
}

// Run runs a program and returns its combined output, failing the test when it is
// missing or exits non-zero.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := RunErr(name, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// RunErr runs a program and returns its combined output and an error naming the command
// when it is missing or exits non-zero.
func RunErr(name string, args ...string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found on PATH (%w); %s", name, err, installHint)
	}
	cmd := exec.CommandContext(context.Background(), path, args...)
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	if err := cmd.Run(); err != nil {
		return buf.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, buf.String())
	}
	return buf.String(), nil
}

// NewPrivateSoftHSM gives the test a SoftHSM2 token store for a child process (an agent
// binary, with SOFTHSM2_CONF=Conf in its environment) without touching this process's:
// each agent then sees its own tokens only. It is removed when the test ends.
func NewPrivateSoftHSM(t testing.TB) *SoftHSM {
	t.Helper()
	s, err := newSoftHSM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(s.Dir) })
	return s
}
