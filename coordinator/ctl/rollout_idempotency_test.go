package ctl_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
)

// TestRolloutCreateIdempotencyKey: a script that runs "rollout create" twice with one key
// makes one rollout; the second run says so and prints the rollout as it is; the key with
// another spec is refused.
func TestRolloutCreateIdempotencyKey(t *testing.T) {
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	for _, id := range []string{"ws-01", "ws-02"} {
		inst.EnrolAgent(t, id, id+".acme.example")
	}
	as := func(token string) map[string]string {
		return map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": token}
	}
	admin := as(inst.AdminToken)
	ok := func(env map[string]string, args ...string) string {
		t.Helper()
		r := runCtl(t, env, "", args...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%v: exit %d, stderr %q, stdout %q", args, r.code, r.stderr, r.stdout)
		}
		return r.stdout
	}
	ok(admin, "org", "create", "acme")
	ok(admin, "user", "create", "owner", "--org", "acme", "--role", "rollout_owner")
	ok(admin, "user", "create", "alice", "--name", "Alice Holder", "--org", "acme", "--upn", "alice@acme.example")
	ok(admin, "profile", "apply", filepath.Join("..", "..", "examples", "profiles", "smartcard-logon.yaml"))
	owner := as(strings.TrimSpace(ok(admin, "user", "token", "owner")))
	file := filepath.Join(t.TempDir(), "rollout.yaml")
	if err := os.WriteFile(file, []byte(rolloutYAML), 0o600); err != nil {
		t.Fatal(err)
	}

	create := []string{"rollout", "create", "-f", file, "--idempotency-key", "logon-acme-2026"}
	first := ok(owner, create...)
	if !strings.Contains(first, "Rollout ") || !strings.Contains(first, " created: pending_approval") {
		t.Fatalf("first run:\n%s", first)
	}
	id := strings.Fields(first)[1]
	again := runCtl(t, owner, "", create...)
	if again.code != 0 || !strings.Contains(again.stderr, "rollout "+id+" was created by an earlier request") ||
		!strings.Contains(again.stderr, "nothing new was created") || !strings.Contains(again.stdout, id) {
		t.Fatalf("second run: exit %d, stdout %q, stderr %q", again.code, again.stdout, again.stderr)
	}
	if n := strings.Count(ok(owner, "rollout", "list"), "logon acme"); n != 1 {
		t.Fatalf("%d rollouts listed, want 1", n)
	}
	other := runCtl(t, owner, "", append(create, "--name", "logon acme, again")...)
	if other.code == 0 || !strings.Contains(other.stderr, "used for another request") {
		t.Fatalf("reused key: exit %d, stdout %q, stderr %q", other.code, other.stdout, other.stderr)
	}
}
