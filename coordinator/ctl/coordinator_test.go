package ctl_test

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// TestAgainstCoordinator runs the commands against the real coordinator (the HTTP API
// over the service and a SQLite store, in this process), checking what people see.
func TestAgainstCoordinator(t *testing.T) {
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	inst.EnrolAgent(t, "ws-01", "ws-01.acme.example")
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

	if out := ok(admin, "org", "create", "acme"); !regexp.MustCompile(`^organisation acme created \(id \S+\)\n$`).MatchString(out) {
		t.Errorf("org create printed %q", out)
	}
	ok(admin, "org", "create", "globex")
	out := ok(admin, "user", "create", "op1", "--name", "Olga Operator", "--org", "acme", "--role", "helpdesk")
	if !regexp.MustCompile(`^user op1 created \(id \S+, organisation acme, roles helpdesk\)\n$`).MatchString(out) {
		t.Errorf("user create printed %q", out)
	}
	ok(admin, "user", "create", "appr1", "--org", "acme", "--role", "approver")
	ok(admin, "user", "create", "appr2", "--org", "globex", "--role", "approver")
	ok(admin, "user", "create", "alice", "--name", "Alice Holder", "--org", "acme", "--email", "alice@acme.example",
		"--upn", "alice@acme.example", "--attr", "employee_id=42")

	tokenOf := func(user string) map[string]string {
		out := ok(admin, "user", "token", user, "--expires", "90d")
		if strings.Count(out, "\n") != 1 || strings.ContainsAny(strings.TrimSuffix(out, "\n"), " \t") {
			t.Fatalf("user token printed %q, want the token alone", out)
		}
		return as(strings.TrimSpace(out))
	}
	op, appr1, appr2 := tokenOf("op1"), tokenOf("appr1"), tokenOf("appr2")

	who := ok(op, "whoami")
	for _, want := range []string{"Username      op1\n", "Name          Olga Operator\n", "Organization  acme\n", "Roles         helpdesk\n"} {
		if !strings.Contains(who, want) {
			t.Errorf("whoami does not show %q:\n%s", want, who)
		}
	}
	users := ok(admin, "user", "list", "--org", "acme")
	if lines := strings.Split(strings.TrimSpace(users), "\n"); len(lines) != 4 || !strings.HasPrefix(lines[0], "USERNAME ") {
		t.Errorf("user list --org acme:\n%s", users)
	}

	profile := filepath.Join("..", "..", "examples", "profiles", "smartcard-logon.yaml")
	if out := ok(admin, "profile", "apply", profile); !strings.Contains(out, "smartcard-logon  1        rsa-2048") {
		t.Errorf("profile apply printed:\n%s", out)
	}
	r := runCtl(t, op, "", "profile", "apply", profile)
	if r.code != 1 || !strings.HasPrefix(r.stderr, "tokenfleetctl: profile apply: forbidden: ") {
		t.Errorf("an operator applying a profile: exit %d, stderr %q", r.code, r.stderr)
	}

	id := strings.TrimSpace(ok(op, "issue", "--holder", "alice", "--agent", "ws-01", "--profile", "smartcard-logon"))
	r = runCtl(t, op, "", "issue", "--holder", "alice", "--agent", "ws-09", "--profile", "smartcard-logon")
	if r.code != 1 || !strings.HasPrefix(r.stderr, `tokenfleetctl: issue: bad_request: agent "ws-09" is not enrolled`) {
		t.Errorf("a job for an unknown agent: exit %d, stderr %q", r.code, r.stderr)
	}

	jobsOut := ok(op, "jobs", "--state", "pending_approval")
	lines := strings.Split(strings.TrimSpace(jobsOut), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], id+"  issue  pending_approval  alice   smartcard-logon  ws-01  0/1        op1  ") {
		t.Errorf("jobs --state pending_approval:\n%s", jobsOut)
	}

	// approvers see what waits for their decision, by the rules approve applies.
	if out := ok(appr1, "jobs", "--awaiting-me"); !strings.Contains(out, id+"  issue  pending_approval") {
		t.Errorf("jobs --awaiting-me of appr1:\n%s", out)
	}
	for _, env := range []map[string]string{op, appr2} {
		if out := ok(env, "jobs", "--awaiting-me"); out != "no jobs awaiting your decision\n" {
			t.Errorf("jobs --awaiting-me of the requester or another organisation's approver: %q", out)
		}
	}
	for _, tt := range []struct {
		env  map[string]string
		code string
	}{{op, "self_approval"}, {appr2, "out_of_scope"}} {
		r := runCtl(t, tt.env, "", "approve", id)
		if r.code != 1 || !strings.HasPrefix(r.stderr, "tokenfleetctl: approve: "+tt.code+": ") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("approve as the wrong person: exit %d stdout %q stderr %q, want code %s", r.code, r.stdout, r.stderr, tt.code)
		}
	}
	out = ok(appr1, "approve", id, "--reason", "checked")
	if !strings.HasSuffix(out, "\njob "+id+" approved: state approved, approvals 1/1\n") ||
		!strings.Contains(out, "  Subject       CN=Alice Holder,O=acme\n") || !strings.Contains(out, "  Binding hash  ") {
		t.Errorf("approve printed %q", out)
	}
	show := ok(op, "job", "show", id)
	for _, want := range []string{
		"State         approved\n",
		"Requester     op1\n",
		"  request  appr1     approve   yes  ",
		"  (new)             pending_approval  1        op1    ",
		"  pending_approval  approved          1        appr1  ",
	} {
		if !strings.Contains(show, want) {
			t.Errorf("job show does not show %q:\n%s", want, show)
		}
	}
	var d client.JobDetail
	if err := json.Unmarshal([]byte(ok(op, "job", "show", id, "--json")), &d); err != nil || d.State != jobs.StateApproved {
		t.Errorf("job show --json: %v %+v", err, d)
	}

	// watch follows the job until it ends: here, cancelled by its requester.
	r = runCtl(t, op, "", "job", "watch", id, "--timeout", "300ms", "--interval", "100ms")
	if r.code != ctl.ExitGaveUp || !strings.Contains(r.stdout, "approved; being sent to agent ws-01") ||
		!strings.Contains(r.stdout, "agent ws-01 has never connected") ||
		!strings.HasPrefix(r.stderr, "tokenfleetctl: job watch: gave up after 300ms: job "+id+" is still approved") {
		t.Errorf("watch of a job that does not move: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	ok(op, "cancel", id, "--reason", "wrong holder")
	r = runCtl(t, op, "", "job", "watch", id)
	if r.code != 1 || !strings.Contains(r.stdout, "  cancelled\n") || !strings.Contains(r.stderr, "ended cancelled") {
		t.Errorf("watch of a cancelled job: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	agents := ok(admin, "agents")
	if !strings.Contains(agents, "ws-01  ws-01.acme.example  linux  test     active  offline ") {
		t.Errorf("agents:\n%s", agents)
	}
	if out := ok(admin, "tokens"); out != "no tokens\n" {
		t.Errorf("tokens printed %q", out)
	}

	verified := ok(admin, "audit", "verify", "--page-size", "3")
	if !regexp.MustCompile(`^audit log verified: (\d+) entries, head seq (\d+) hash [0-9a-f]{64}\n$`).MatchString(verified) {
		t.Errorf("audit verify printed %q", verified)
	}
	list := ok(admin, "audit", "list", "--all")
	if !strings.Contains(list, "job.approved") || !strings.HasPrefix(list, "SEQ  TIME ") ||
		!regexp.MustCompile(`\n\d+ +\S+ +appr1 +job\.approved `).MatchString(list) {
		t.Errorf("audit list:\n%s", list)
	}
}
