package ctl_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
)

// Every shell gets its completion script; bash's is valid bash.
func TestCompletionScripts(t *testing.T) {
	for shell, marker := range map[string]string{
		"bash":       "complete -o default -F __start_tokenfleetctl tokenfleetctl",
		"zsh":        "#compdef tokenfleetctl",
		"fish":       "complete -c tokenfleetctl",
		"powershell": "Register-ArgumentCompleter",
	} {
		r := runCtl(t, nil, "", "completion", shell)
		if r.code != ctl.ExitOK || !strings.Contains(r.stdout, marker) {
			t.Fatalf("completion %s: exit %d, stderr %q, stdout lacks %q (%d bytes)", shell, r.code, r.stderr, marker, len(r.stdout))
		}
		if shell != "bash" {
			continue
		}
		script := filepath.Join(t.TempDir(), "tokenfleetctl.bash")
		if err := os.WriteFile(script, []byte(r.stdout), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.CommandContext(context.Background(), "bash", "-n", script).CombinedOutput(); err != nil {
			t.Fatalf("bash -n on the completion script: %v\n%s", err, out)
		}
	}
}

// --version and `version` print the program, its version, commit and toolchain.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		r := runCtl(t, nil, "", args...)
		if r.code != ctl.ExitOK || !strings.HasPrefix(r.stdout, "tokenfleetctl ") || !strings.Contains(r.stdout, "(commit ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}
