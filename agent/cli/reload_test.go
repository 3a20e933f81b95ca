package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/cli"
	"github.com/tokenfleet/tokenfleet/internal/sdnotify"
	"github.com/tokenfleet/tokenfleet/internal/sdnotify/sdnotifytest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// A start that fails before the agent ever connected (here the broker refuses its login)
// removes the data directory it created; one that was there before stays.
func TestFailedStartLeavesNoDataDirectory(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	b := testenv.NewBroker(t)
	u, err := url.Parse(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("guest", "wrong-password")
	fresh := filepath.Join(t.TempDir(), "agent-data")
	args := []string{"run", "--id", testenv.UniqueUser("ws-"), "--broker", u.String(), "--module", testenv.SoftHSMModule,
		"--no-usb", "--log-format", "json", "--queue", "check"}
	_, stderr, code := run(t, append(args, "--data", fresh)...)
	if code != cli.ExitUsage || !strings.Contains(stderr, "refused") {
		t.Fatalf("exit %d, want %d for a refused login; stderr %s", code, cli.ExitUsage, stderr)
	}
	if _, err := os.Stat(fresh); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the failed start left %s behind: %v", fresh, err)
	}

	kept := t.TempDir()
	if _, _, code := run(t, append(args, "--data", kept)...); code != cli.ExitUsage {
		t.Fatalf("exit %d", code)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("a data directory that was there before the start was removed: %v", err)
	}
}

// SIGHUP reads the configuration again: the new log level applies at once; a
// configuration that does not load keeps the running settings, with the reason logged.
func TestSIGHUPReloads(t *testing.T) {
	testenv.NewSoftHSMStore(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "agent.yaml")
	config := func(level string) []byte {
		// The broker is not there: the agent runs on, retrying it.
		return []byte("id: " + testenv.UniqueUser("ws-") + "\ndata_dir: " + filepath.Join(dir, "data") +
			"\nmodules: [" + testenv.SoftHSMModule + "]\nusb: false\nbroker: {url: \"amqp://guest:guest@127.0.0.1:1/\"}\n" +
			"log: {level: " + level + ", format: json}\n")
	}
	if err := os.WriteFile(cfgFile, config("warn"), 0o600); err != nil {
		t.Fatal(err)
	}
	notify := sdnotifytest.Listen(t)
	cmd := exec.CommandContext(context.Background(), testenv.Binary(t, "./agent/cmd/tokenfleet-agent"), "run", "--config", cfgFile)
	cmd.Env = append(os.Environ(), sdnotify.SocketEnv+"="+notify.Path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan map[string]any, 1000)
	waited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines <- m
			}
		}
		close(lines)
		_ = cmd.Wait()
		close(waited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // an error only says it already ended
		<-waited
	})
	// Ready: the reload signal is handled from before READY=1.
	notify.Wait(t, sdnotify.Ready, time.Minute)
	until := func(msg string) (before []map[string]any, line map[string]any) {
		t.Helper()
		timeout := time.After(time.Minute)
		for {
			select {
			case m, ok := <-lines:
				if !ok {
					t.Fatalf("the agent ended before logging %q", msg)
				}
				if m["message"] == msg {
					return before, m
				}
				before = append(before, m)
			case <-timeout:
				t.Fatalf("no %q log line within a minute", msg)
			}
		}
	}

	if err := os.WriteFile(cfgFile, config("info"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// Logged at info: seen only because the level changed from warn.
	before, reloaded := until("configuration reloaded")
	for _, m := range before {
		if m["level"] == "info" || m["level"] == "debug" {
			t.Fatalf("logged at %v while the level was warn: %v", m["level"], m)
		}
	}
	if reloaded["log_level"] != "info" {
		t.Errorf("reload logged %v", reloaded)
	}

	if err := os.WriteFile(cfgFile, append(config("debug"), "colour: red\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, failed := until("reload failed: the running settings stay")
	if e, _ := failed["error"].(string); !strings.Contains(e, `unknown field "colour"`) {
		t.Errorf("failed reload logged %v", failed)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for range lines { //nolint:revive // drains the output until the process ends
	}
	<-waited
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

// --version and `version` print the program, its version and commit.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		stdout, stderr, code := run(t, args...)
		if code != cli.ExitOK || !strings.HasPrefix(stdout, "tokenfleet-agent ") || !strings.Contains(stdout, "(commit ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
}
