package ctl_test

import (
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
)

// TestPeopleRolesAndTokens runs the people, role and API token commands against the real
// coordinator.
func TestPeopleRolesAndTokens(t *testing.T) {
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	as := func(token string) map[string]string {
		return map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": token}
	}
	admin := as(inst.AdminToken)
	ok := func(env map[string]string, args ...string) string {
		t.Helper()
		r := runCtl(t, env, "", args...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
		return r.stdout
	}
	fails := func(env map[string]string, want string, args ...string) {
		t.Helper()
		r := runCtl(t, env, "", args...)
		if r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Fatalf("%v: exit %d, stderr %q, want it to say %q", args, r.code, r.stderr, want)
		}
	}
	ok(admin, "org", "create", "acme")
	ok(admin, "user", "create", "ann", "--org", "acme", "--name", "Ann")

	out := ok(admin, "role", "create", "site-approver", "--permission", "approve,read", "--org", "acme", "--description", "Acme's approvers")
	for _, want := range []string{"Name          site-approver\n", "Organization  acme\n", "Permissions   approve, read\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("role create does not show %q:\n%s", want, out)
		}
	}
	fails(admin, "want one of request", "role", "create", "x", "--permission", "fly")
	fails(admin, "bad_request", "role", "create", "x", "--permission", "manage_users", "--org", "acme")
	if out := ok(admin, "role", "list"); !strings.Contains(out, "site-approver  acme          approve,read  Acme's approvers") {
		t.Errorf("role list:\n%s", out)
	}
	ok(admin, "role", "update", "site-approver", "--permission", "approve", "--org", "acme")

	out = ok(admin, "user", "update", "ann", "--email", "ann@acme.example", "--add-role", "site-approver")
	for _, want := range []string{"Email         ann@acme.example\n", "Roles         site-approver\n", "Name          Ann\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("user update does not show %q:\n%s", want, out)
		}
	}
	fails(admin, "nothing to change", "user", "update", "ann")
	fails(admin, "bad_request", "user", "update", "ann", "--add-role", "no-such-role")
	fails(admin, "is held by ann", "role", "delete", "site-approver")

	tok := strings.TrimSpace(ok(admin, "user", "token", "ann", "--name", "laptop"))
	ann := as(tok)
	fails(admin, "api_tokens.max_ttl", "user", "token", "ann", "--expires", "500d")
	list := ok(ann, "user", "tokens", "ann")
	lines := strings.Split(strings.TrimSpace(list), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[1], "laptop") || strings.Contains(lines[1], "never (bootstrap)") {
		t.Fatalf("user tokens ann:\n%s", list)
	}
	if out := ok(admin, "user", "tokens", "admin"); !strings.Contains(out, "never (bootstrap)") {
		t.Errorf("the bootstrap token is not said to never expire:\n%s", out)
	}
	id := strings.Fields(lines[1])[0]
	if out := ok(ann, "user", "revoke-token", id, "--reason", "lost"); out != "API token "+id+" (laptop of ann) revoked\n" {
		t.Errorf("revoke-token printed %q", out)
	}
	fails(ann, "unauthenticated", "whoami")

	fails(admin, "--reason is required", "user", "disable", "ann")
	if out := ok(admin, "user", "disable", "ann", "--reason", "left"); out != "user ann disabled\n" {
		t.Errorf("disable printed %q", out)
	}
	if out := ok(admin, "user", "enable", "ann", "--reason", "back"); out != "user ann enabled\n" {
		t.Errorf("enable printed %q", out)
	}
	ok(admin, "user", "update", "ann", "--remove-role", "site-approver")
	if out := ok(admin, "role", "delete", "site-approver", "--reason", "unused"); out != "role site-approver deleted\n" {
		t.Errorf("role delete printed %q", out)
	}
}
