package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// binaries are the programs under test, built once per run of the test.
type binaries struct {
	coordinator, ctl string
	root             string // the module's root, for example files
}

// buildBinaries builds the real mains with the go tool on PATH, once per run of the
// package's tests.
func buildBinaries(t *testing.T) binaries {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return binaries{
		root:        root,
		coordinator: testenv.Binary(t, "./coordinator/cmd/tokenfleet-coordinator"),
		ctl:         testenv.Binary(t, "./coordinator/cmd/tokenfleetctl"),
	}
}

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// freeAddr returns a loopback address nothing listens on at the moment.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// coordinatorProc is a running tokenfleet-coordinator.
type coordinatorProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	output *syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, once done is closed
}

// noBroker is a broker address nothing listens on: a coordinator started without
// --broker among the extra arguments runs without a broker and leaves the machine's alone.
const noBroker = "amqp://guest:guest@127.0.0.1:1/"

// startCoordinator runs `tokenfleet-coordinator serve` on dataDir, with extra arguments,
// and waits until /healthz answers ok.
func startCoordinator(t *testing.T, bin, dataDir string, extra ...string) *coordinatorProc {
	t.Helper()
	addr := freeAddr(t)
	p := &coordinatorProc{t: t, url: "http://" + addr, output: &syncBuffer{}, done: make(chan struct{})}
	args := append([]string{"serve", "--data", dataDir, "--listen", addr}, extra...)
	if !slices.Contains(extra, "--broker") {
		args = append(args, "--broker", noBroker)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	p.cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting the coordinator: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop() })

	c, err := client.New(p.url, "")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, lastErr = c.Health(ctx)
		cancel()
		if lastErr == nil {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("the coordinator at %s was not healthy within 60s: %v\noutput:\n%s", p.url, lastErr, p.output.String())
		}
		select {
		case <-p.done:
			t.Fatalf("the coordinator exited before it was healthy: %v\noutput:\n%s", p.err, p.output.String())
		case <-tick.C:
		}
	}
}

// stop ends the coordinator with SIGTERM, as systemd would, and waits for it to exit
// cleanly. Safe to call twice.
func (p *coordinatorProc) stop() {
	p.t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("signalling the coordinator: %v", err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			p.t.Errorf("the coordinator did not exit cleanly on SIGTERM: %v\noutput:\n%s", p.err, p.output.String())
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Errorf("the coordinator did not stop within 30s of SIGTERM\noutput:\n%s", p.output.String())
	}
}

// ctlResult is one run of tokenfleetctl.
type ctlResult struct {
	stdout, stderr string
	code           int
}

// runCtl runs tokenfleetctl against url as the holder of token. HOME is a fresh
// directory, so no config file of the machine is read.
func runCtl(t *testing.T, bin, url, token string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TOKENFLEET_URL=" + url, "TOKENFLEET_TOKEN=" + token}
	err := cmd.Run()
	r := ctlResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("tokenfleetctl %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// sqlite runs the sqlite3 command-line tool on db with a script and returns its output.
// The tool is what an intruder with access to the file would use; the test fails, never
// skips, without it.
func sqlite(t *testing.T, db, script string) string {
	t.Helper()
	cmd := exec.Command(sqlite3Path(t), "-batch", "-bail", db)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3 %s: %v\nscript:\n%s\noutput:\n%s", db, err, script, out)
	}
	return strings.TrimSpace(string(out))
}

// sqlite3Path finds the sqlite3 tool or fails the test saying how to install it.
func sqlite3Path(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Fatalf("the sqlite3 command-line tool is needed to tamper with the database: apt-get install sqlite3 (or run scripts/ensure-deps.sh)")
	}
	return path
}
