package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/fleetsim/cli"
)

// TestBadFlags: each bad flag is refused with exit status 2 and an error naming the flag
// and what is valid.
func TestBadFlags(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"run", "--broker", "amqp://guest:guest@127.0.0.1:5672/x", "--coordinator", "http://127.0.0.1:1", "--api-token-file", tokenFile}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no broker", []string{"run", "--coordinator", "http://127.0.0.1:1", "--api-token-file", tokenFile}, []string{"--broker is required", "amqp://"}},
		{"broker not amqp", []string{"run", "--broker", "http://u:secret@h/", "--coordinator", "http://x", "--api-token-file", tokenFile}, []string{"--broker", "amqp://"}},
		{"no coordinator", []string{"run", "--broker", "amqp://h/"}, []string{"--coordinator is required"}},
		{"no token file", []string{"run", "--broker", "amqp://h/", "--coordinator", "http://x"}, []string{"--api-token-file is required"}},
		{"agents", append(base, "--agents", "0"), []string{"--agents 0", "1 or more"}},
		{"ramp", append(base, "--ramp", "fast"), []string{"--ramp", "500/s"}},
		{"profile", append(base, "--profile", "floppy"), []string{"--profile", "instant", "smartcard"}},
		{"report", append(base, "--report", "xml"), []string{"--report", "text or json"}},
		{"prefix", append(base, "--prefix", "Sim."), []string{"--prefix", "lower-case"}},
		{"heartbeat", append(base, "--heartbeat", "1ms"), []string{"--heartbeat", "100ms"}},
		{"stop", append(base, "--stop", "5000"), []string{"--stop 5000", "--agents"}},
		{"unknown flag", append(base, "--agnets", "5"), []string{"unknown flag: --agnets"}},
		{"per connection", append(base, "--per-connection", "5000"), []string{"--per-connection", "1 to 2000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := cli.Main(context.Background(), tc.args, strings.NewReader(""), &out, &errOut)
			if code != cli.ExitUsage {
				t.Errorf("exit status %d, want %d; stderr: %s", code, cli.ExitUsage, errOut.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr %q lacks %q", errOut.String(), w)
				}
			}
			if strings.Contains(errOut.String(), "secret") {
				t.Errorf("stderr shows the broker password: %s", errOut.String())
			}
		})
	}
}

// TestHelp: --help explains the commands with examples.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"enrol", "--help"}} {
		var out, errOut bytes.Buffer
		if code := cli.Main(context.Background(), args, strings.NewReader(""), &out, &errOut); code != cli.ExitOK {
			t.Fatalf("%v: exit status %d: %s", args, code, errOut.String())
		}
		if len(args) == 2 && !strings.Contains(out.String(), "Examples:") {
			t.Errorf("%v: no examples:\n%s", args, out.String())
		}
		if args[0] == "--help" && !strings.Contains(out.String(), "agent_users: shared") {
			t.Errorf("--help does not say the coordinator must run with shared agent users:\n%s", out.String())
		}
	}
}
