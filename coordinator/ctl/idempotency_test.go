package ctl_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

func TestIssueIdempotencyKey(t *testing.T) {
	api := newFakeAPI(t)
	api.on("POST /api/v1/jobs", 201, client.Job{ID: "job-123", State: jobs.StatePendingApproval})
	args := []string{"issue", "--holder", "alice", "--agent", "ws-01", "--profile", "smartcard-logon"}

	// Without the flag each run sends a key of its own.
	for range 2 {
		if r := runCtl(t, api.env(), "", args...); r.code != 0 || r.stdout != "job-123\n" {
			t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
		}
	}
	seen := api.requests()
	if seen[0].IdempotencyKey == "" || seen[1].IdempotencyKey == "" || seen[0].IdempotencyKey == seen[1].IdempotencyKey {
		t.Fatalf("keys %q and %q: want a fresh one per run", seen[0].IdempotencyKey, seen[1].IdempotencyKey)
	}

	// With it, the key is the caller's; a replay prints the job ID alone on stdout and says
	// on stderr that nothing was created.
	api.routes["POST /api/v1/jobs"] = func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Idempotent-Replayed", "true")
		writeJSON(w, http.StatusOK, client.Job{ID: "job-123", State: jobs.StatePendingApproval})
	}
	r := runCtl(t, api.env(), "", append(args, "--idempotency-key", "onboard-alice-1")...)
	if r.code != 0 || r.stdout != "job-123\n" || !strings.Contains(r.stderr, "nothing new was created") {
		t.Fatalf("replay: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := api.requests()[2].IdempotencyKey; got != "onboard-alice-1" {
		t.Fatalf("sent key %q, want the flag's", got)
	}

	// The coordinator's refusal of a key used for another request reaches the user.
	api.routes["POST /api/v1/jobs"] = func(w http.ResponseWriter, _ *http.Request) {
		apiError(w, http.StatusUnprocessableEntity, "idempotency_key_reused", "key \"onboard-alice-1\" was used for another request")
	}
	r = runCtl(t, api.env(), "", append(args, "--idempotency-key", "onboard-alice-1", "--kind", "renew")...)
	if r.code == 0 || !strings.Contains(r.stderr, "used for another request") {
		t.Fatalf("reused key: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestIssueIdempotencyKeyAgainstCoordinator: a script run twice with one key makes one job.
func TestIssueIdempotencyKeyAgainstCoordinator(t *testing.T) {
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	inst.EnrolAgent(t, "ws-01", "ws-01.acme.example")
	admin := map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": inst.AdminToken}
	run := func(args ...string) result {
		t.Helper()
		return runCtl(t, admin, "", args...)
	}
	for _, args := range [][]string{
		{"org", "create", "acme"},
		{"user", "create", "alice", "--name", "Alice Holder", "--org", "acme", "--email", "alice@acme.example",
			"--upn", "alice@acme.example", "--attr", "employee_id=42"},
		{"profile", "apply", filepath.Join("..", "..", "examples", "profiles", "smartcard-logon.yaml")},
	} {
		if r := run(args...); r.code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	issue := []string{"issue", "--holder", "alice", "--agent", "ws-01", "--profile", "smartcard-logon", "--idempotency-key", "onboard-alice"}
	first := run(issue...)
	if first.code != 0 || first.stderr != "" {
		t.Fatalf("first run: exit %d, stderr %q", first.code, first.stderr)
	}
	again := run(issue...)
	if again.code != 0 || again.stdout != first.stdout || !strings.Contains(again.stderr, "nothing new was created") {
		t.Fatalf("second run: exit %d, stdout %q (first %q), stderr %q", again.code, again.stdout, first.stdout, again.stderr)
	}
	if out := run("jobs", "--holder", "alice"); out.code != 0 || strings.Count(strings.TrimSpace(out.stdout), "\n") != 1 {
		t.Fatalf("jobs after two runs with one key (want a header and one job):\n%s", out.stdout)
	}
	r := run("issue", "--holder", "alice", "--agent", "ws-01", "--profile", "smartcard-logon", "--kind", "renew",
		"--idempotency-key", "onboard-alice")
	if r.code != 1 || !strings.Contains(r.stderr, "idempotency_key_reused") {
		t.Fatalf("the key with other flags: exit %d, stderr %q", r.code, r.stderr)
	}
	r = run(append(issue[:len(issue)-1], "bad\tkey")...)
	if r.code != 1 || !strings.Contains(r.stderr, "Idempotency-Key") || !strings.Contains(r.stderr, "printable ASCII") {
		t.Fatalf("a bad key: exit %d, stderr %q", r.code, r.stderr)
	}
}
