package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kardianos/service"

	"github.com/tokenfleet/tokenfleet/agent/cli"
)

// A configuration error is one line naming the setting, and exit status 2.
func TestRunBadConfiguration(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(bad, []byte("id: ws-01\nbroker:\n  url: amqp://127.0.0.1/\n  queue_mode: check\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--config", bad}, "tokenfleet-agent: " + bad + `:4:3: broker.queue_mode: unknown field "queue_mode" (known fields: url,`},
		{[]string{"run", "--config", filepath.Join(dir, "missing.yaml")}, "missing.yaml: no such file or directory"},
		{[]string{"run", "--id", "WS 01", "--data", dir}, `tokenfleet-agent: id (--id): "WS 01" contains upper case 'W' at byte 0: agent IDs are lower case`},
		{[]string{"run", "--id", "ws.01", "--data", dir}, `id (--id): "ws.01" contains '.' at byte 2`},
		{[]string{"run", "--id", "ws-01", "--data", dir, "--broker", "http://x/"}, `broker.url (--broker): scheme "http": want amqp or amqps`},
		{[]string{"run", "--id", "ws-01", "--data", dir, "--queue", "maybe", "--poll-interval", "1ms"},
			`poll_interval (--poll-interval): 1ms is too short (at least 50ms); broker.queue (--queue): "maybe": want auto, declare or check`},
		{[]string{"install", "--id", "ws-01", "--data", dir, "--broker", "amqp://u:secret@broker.example.org/"},
			"--broker holds a password, which the service definition would show to every local user"},
	} {
		stdout, stderr, code := run(t, tc.args...)
		if code != cli.ExitUsage {
			t.Errorf("%v: exit %d, want %d; stderr %q", tc.args, code, cli.ExitUsage, stderr)
		}
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: stderr %q lacks %q", tc.args, stderr, tc.want)
		}
		if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 || stdout != "" {
			t.Errorf("%v: want one line on stderr and nothing on stdout; got %q and %q", tc.args, stderr, stdout)
		}
	}
}

// The data directory is locked: a second agent on the same journal is refused.
func TestRunDataDirectoryInUse(t *testing.T) {
	dir := t.TempDir()
	lock, err := os.OpenFile(filepath.Join(dir, "agent.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Close() }()
	holdLock(t, lock)
	_, stderr, code := run(t, "run", "--id", "ws-01", "--data", dir, "--no-usb", "--broker", "amqp://127.0.0.1:1/")
	if code != cli.ExitError || !strings.Contains(stderr, "data directory "+dir+" is in use by another tokenfleet-agent") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// The service commands speak systemd or the Windows service manager; elsewhere they say so.
func TestServiceCommandsOnThisSystem(t *testing.T) {
	stdout, stderr, code := run(t, "status")
	if service.Platform() == "linux-systemd" {
		switch code {
		case cli.StatusRunning, cli.StatusStopped, cli.StatusNotInstalled:
			if !strings.HasPrefix(stdout, cli.ServiceName+": ") {
				t.Errorf("status printed %q", stdout)
			}
		default:
			t.Errorf("status: exit %d, %s", code, stderr)
		}
		return
	}
	// One of the documented statuses: nothing is installed where nothing could install it.
	if code != cli.StatusNotInstalled || stdout != cli.ServiceName+": not installed\n" ||
		!strings.Contains(stderr, "service commands need systemd on Linux or the Windows service manager, and this system uses "+service.Platform()) {
		t.Errorf("status on %s: exit %d, stdout %q, stderr %q", service.Platform(), code, stdout, stderr)
	}
}
