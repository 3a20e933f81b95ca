package ctl_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
)

const rolloutYAML = `# smart-card logon for alice on every Acme workstation
name: logon acme
template:
  kind: issue
  profile: smartcard-logon
  holder: alice
  deadline: 3d
selector:
  agents:
    host_pattern: "ws-*.acme.example"
plan:
  canary: {count: 1}
  waves: [50, 100]
brake:
  threshold_percent: 25
`

// TestRolloutAgainstCoordinator runs the rollout commands against the real coordinator:
// a dry run from a YAML file, the creation, show, the approval by another person, list,
// targets and abort.
func TestRolloutAgainstCoordinator(t *testing.T) {
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	for _, id := range []string{"ws-01", "ws-02", "ws-03", "ws-04"} {
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
	ok(admin, "user", "create", "appr1", "--org", "acme", "--role", "approver")
	ok(admin, "user", "create", "alice", "--name", "Alice Holder", "--org", "acme", "--upn", "alice@acme.example")
	ok(admin, "profile", "apply", filepath.Join("..", "..", "examples", "profiles", "smartcard-logon.yaml"))
	tokenOf := func(user string) map[string]string {
		return as(strings.TrimSpace(ok(admin, "user", "token", user)))
	}
	owner, appr := tokenOf("owner"), tokenOf("appr1")
	file := filepath.Join(t.TempDir(), "rollout.yaml")
	if err := os.WriteFile(file, []byte(rolloutYAML), 0o600); err != nil {
		t.Fatal(err)
	}

	dry := ok(owner, "rollout", "create", "-f", file, "--dry-run")
	hash := regexp.MustCompile(`\nBinding hash  ([0-9a-f]{64})\n`).FindStringSubmatch(dry)
	for _, want := range []string{"Dry run: nothing was created.\n", "\nTargets       4\n",
		"\nWaves         canary 1, wave 1 2, wave 2 1\n", "\nBy organisation:\n  acme  4\n", "\nTargets:\n  SEQ  WAVE    AGENT  ",
		"  1    canary  ws-01  ws-01.acme.example  -      -      alice   acme"} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry run does not show %q:\n%s", want, dry)
		}
	}
	if hash == nil {
		t.Fatalf("dry run shows no binding hash:\n%s", dry)
	}
	// A flag replaces what the file says.
	if out := ok(owner, "rollout", "create", "-f", file, "--dry-run", "--canary", "2", "--waves", "100"); !strings.Contains(out, "\nWaves         canary 2, wave 1 2\n") {
		t.Errorf("dry run with --canary 2 --waves 100:\n%s", out)
	}
	if out := ok(owner, "rollout", "list"); out != "no rollouts\n" {
		t.Errorf("a dry run created a rollout: %q", out)
	}

	created := ok(owner, "rollout", "create", "-f", file)
	m := regexp.MustCompile(`^Rollout (\S+) created: pending_approval, approvals 0/1\.\n`).FindStringSubmatch(created)
	if m == nil || !strings.Contains(created, "\nBinding hash  "+hash[1]+"\n") ||
		!strings.Contains(created, "\nWaiting for approval: tokenfleetctl rollout approve "+m[1]) {
		t.Fatalf("create printed:\n%s", created)
	}
	id := m[1]

	show := ok(owner, "rollout", "show", id)
	for _, want := range []string{
		"\nState         pending_approval\n",
		"\nBinding hash  " + hash[1] + "\n",
		"\nApprovals     0/1\n",
		"\nTemplate      issue, profile smartcard-logon (hash ",
		"\nWAVE     SIZE  PENDING  OPEN  SUCCEEDED  FAILED  TIMED OUT  REFUSED  TOKEN ABSENT  STATUS\n",
		"\ncanary   1     1        0     0          0       0          0        0             waiting\n",
		"\noverall  4     4        0     0          0       0          0        0             pending_approval\n",
	} {
		if !strings.Contains(show, want) {
			t.Errorf("rollout show does not show %q:\n%s", want, show)
		}
	}
	var r client.Rollout
	if err := json.Unmarshal([]byte(ok(owner, "rollout", "show", id, "--json")), &r); err != nil || r.ID != id || r.BindingHash != hash[1] {
		t.Errorf("rollout show --json: %v %+v", err, r)
	}

	// The owner cannot approve; an approver approves what they are shown.
	if res := runCtl(t, owner, "", "rollout", "approve", id, "--yes"); res.code != 1 || !strings.Contains(res.stderr, "tokenfleetctl: rollout approve: ") {
		t.Errorf("the owner approving: exit %d, stderr %q", res.code, res.stderr)
	}
	approved := ok(appr, "rollout", "approve", id, "--yes", "--reason", "checked")
	for _, want := range []string{"Approving rollout " + id + " (logon acme), approvals 0/1:\n", "  Targets       4 in canary 1, wave 1 2, wave 2 1\n",
		"  Binding hash  " + hash[1] + "\n", "rollout " + id + ": approval recorded (1/1); state "} {
		if !strings.Contains(approved, want) {
			t.Errorf("rollout approve does not show %q:\n%s", want, approved)
		}
	}

	list := ok(appr, "rollout", "list")
	if lines := strings.Split(strings.TrimSpace(list), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") ||
		!strings.HasPrefix(lines[1], id+"  logon acme  ") || !strings.Contains(lines[1], "  issue  smartcard-logon  4  ") {
		t.Errorf("rollout list:\n%s", list)
	}
	var rs []client.Rollout
	if err := json.Unmarshal([]byte(ok(owner, "rollout", "list", "--json", "--standing=false")), &rs); err != nil || len(rs) != 1 {
		t.Errorf("rollout list --json: %v %+v", err, rs)
	}
	if targets := ok(owner, "rollout", "targets", id); strings.Count(targets, "\n") != 5 || !strings.HasPrefix(targets, "SEQ  WAVE") {
		t.Errorf("rollout targets:\n%s", targets)
	}

	if out := ok(owner, "rollout", "abort", id, "--reason", "test over"); out != "rollout "+id+" aborted: state aborted\n" {
		t.Errorf("rollout abort printed %q", out)
	}
	res := runCtl(t, owner, "", "rollout", "watch", id, "--once")
	if res.code != 1 || !strings.Contains(res.stdout, "\nState         aborted\n") || !strings.Contains(res.stderr, "ended aborted") {
		t.Errorf("watch of an aborted rollout: exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}
}

func sampleRollout() client.Rollout {
	t0 := fixedNow.Add(-2 * time.Hour)
	tally := func(targets, pending, open, ok int, failed map[rollout.Outcome]int) client.RolloutTally {
		executed := ok
		for _, n := range failed {
			executed += n
		}
		return client.RolloutTally{Targets: targets, Pending: pending, Open: open, Succeeded: ok, Failures: failed,
			ByCode: map[string]int{"token.device_error": failed[rollout.OutcomeFailed]}, Executed: executed}
	}
	spec := rollout.Spec{Name: "renew vpn", Template: rollout.Template{Kind: jobs.KindRenew, Profile: "vpn", ProfileHash: "0123456789abcdef0123"},
		Plan:  rollout.Plan{Canary: rollout.Canary{Count: 10}, Waves: []float64{100}},
		Brake: rollout.Brake{Outcomes: rollout.DefaultBrakeOutcomes(), ThresholdPercent: 20, MinExecuted: 5}}
	return client.Rollout{ID: "r1", Name: "renew vpn", State: rollout.StatePaused, Spec: spec, BindingHash: strings.Repeat("ab", 32),
		TargetCount: 110, CreatedBy: "owner", Created: t0, Updated: t0, ApprovedAt: t0, Approvals: 0, Required: 1, Approvers: []string{},
		Waves: []client.RolloutWave{
			{Wave: 0, Name: "canary", Size: 10, Started: true, Finished: true, Tally: tally(10, 0, 0, 7, map[rollout.Outcome]int{rollout.OutcomeFailed: 3})},
			{Wave: 1, Name: "wave 1", Size: 100, Tally: tally(100, 100, 0, 0, map[rollout.Outcome]int{})},
		},
		Overall:   tally(110, 100, 0, 7, map[rollout.Outcome]int{rollout.OutcomeFailed: 3}),
		PauseKind: rollout.PauseBrake, PauseReason: "brake tripped", PausedBy: "system:brake", PausedAt: t0, PauseRound: 1,
		Trip: &client.RolloutTrip{Scope: "overall", Wave: -1, Executed: 10, Failed: 3, Percent: 30, Threshold: 20, At: t0,
			Summary: "brake tripped overall: 3 of 10 executed failed (30%, threshold 20%): token.device_error ×3",
			ByCode: []client.RolloutCodeCount{{Code: "token.device_error", Count: 3, Examples: []client.RolloutExample{
				{JobID: "j7", AgentID: "ws-07", Message: "CKR_DEVICE_ERROR"}}}}},
	}
}

// TestRolloutWatchBrake: show and watch tell why the brake paused the rollout, and watch
// --exit-on-pause ends with status 3.
func TestRolloutWatchBrake(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/rollouts/r1", 200, sampleRollout())
	r := runCtl(t, api.env(), "", "rollout", "watch", "r1", "--exit-on-pause")
	if r.code != ctl.ExitBrake || !strings.Contains(r.stderr, "rollout r1 paused by the brake: brake tripped overall") {
		t.Fatalf("watch --exit-on-pause: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"\nState         paused (brake)\n",
		"\nApprovals     0/1, to resume after brake trip 1\n",
		"\ncanary   10    0        0     7          3       0          0        0             done\n",
		"\nBrake trip (2025-06-01T10:00:00Z): brake tripped overall: 3 of 10 executed failed (30%, threshold 20%): token.device_error ×3\n",
		"\n  token.device_error ×3\n    job j7 on agent ws-07: CKR_DEVICE_ERROR\n",
		"\nResuming takes approvals: tokenfleetctl rollout approve r1\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("watch does not show %q:\n%s", want, r.stdout)
		}
	}
	// Without --exit-on-pause, --once shows it and ends well: the rollout is not over.
	if r := runCtl(t, api.env(), "", "rollout", "watch", "r1", "--once"); r.code != 0 || r.stderr != "" {
		t.Errorf("watch --once: exit %d stderr %q", r.code, r.stderr)
	}
	// Resume answers approval_required: the error says who resumes it, and how.
	api.routes["POST /api/v1/rollouts/r1/resume"] = func(w http.ResponseWriter, _ *http.Request) {
		apiError(w, 409, "approval_required", "the brake paused rollout r1: resuming it needs approvals")
	}
	r = runCtl(t, api.env(), "", "rollout", "resume", "r1")
	if r.code != 1 || !strings.Contains(r.stderr, "approval_required: ") || !strings.Contains(r.stderr, "tokenfleetctl rollout approve r1") {
		t.Errorf("resume after a brake trip: exit %d stderr %q", r.code, r.stderr)
	}
	oneLine(t, "stderr", r.stderr)
}

// TestRolloutCreateFlags: the flags alone make a spec, sent as the API's object.
func TestRolloutCreateFlags(t *testing.T) {
	api := newFakeAPI(t)
	created := sampleRollout()
	created.State, created.PauseKind, created.Trip = rollout.StatePendingApproval, "", nil
	api.on("POST /api/v1/rollouts", 201, created)
	r := runCtl(t, api.env(), "", "rollout", "create", "--name", "renew vpn", "--kind", "renew", "--profile", "vpn",
		"--deadline", "7d", "--agents-org", "acme,globex", "--agents-tag", "paris", "--host-pattern", "ws-*", "--token-model", "Rutoken ECP",
		"--firmware", "5.4", "--expires-within", "30d", "--holders-org", "acme", "--canary", "10%", "--per-model",
		"--exponential", "10x2", "--max-concurrent", "50", "--pause", "promote", "--window", "mon-fri 22:00-06:00 Europe/Paris",
		"--window", "sat,sun 00:00-23:59", "--brake-threshold", "20", "--brake-min", "8", "--brake-per-wave",
		"--brake-outcomes", "failed,timed_out")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "Rollout r1 created: pending_approval, approvals 0/1.\n") {
		t.Fatalf("create: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	reqs := api.requests()
	if len(reqs) != 1 {
		t.Fatalf("requests %+v", reqs)
	}
	var got client.RolloutCreate
	dec := json.NewDecoder(strings.NewReader(reqs[0].Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := client.RolloutCreate{Spec: rollout.Spec{Name: "renew vpn",
		Template: rollout.Template{Kind: jobs.KindRenew, Profile: "vpn", Deadline: rollout.Duration(7 * 24 * time.Hour)},
		Selector: rollout.Selector{
			Agents:       rollout.AgentSelector{Organizations: []string{"acme", "globex"}, Tags: []string{"paris"}, HostPattern: "ws-*"},
			Tokens:       rollout.TokenSelector{Models: []string{"Rutoken ECP"}, Firmware: []string{"5.4"}},
			Certificates: rollout.CertificateSelector{ExpiresWithin: rollout.Duration(30 * 24 * time.Hour)},
			Holders:      rollout.HolderSelector{Organizations: []string{"acme"}}},
		Plan: rollout.Plan{Canary: rollout.Canary{Percent: 10, PerModel: true}, Exponential: &rollout.Exponential{Start: 10, Factor: 2},
			MaxConcurrent: 50, Pause: rollout.Pause{UntilPromoted: true}, Windows: []rollout.Window{
				{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: "22:00", End: "06:00", TimeZone: "Europe/Paris"},
				{Days: []string{"sat", "sun"}, Start: "00:00", End: "23:59"}}},
		Brake: rollout.Brake{Outcomes: []rollout.Outcome{rollout.OutcomeFailed, rollout.OutcomeTimedOut}, ThresholdPercent: 20,
			MinExecuted: 8, PerWave: true}}}
	if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
		t.Errorf("sent\n%s\nwant\n%s", g, w)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRolloutUsageErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: x\nplan:\n  canry: {count: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"rollout", "create"}, "give the rollout's spec with -f FILE"},
		{[]string{"rollout", "create", "-f", bad}, "canry"},
		{[]string{"rollout", "create", "--name", "x", "--canary", "0"}, `--canary "0"`},
		{[]string{"rollout", "create", "--name", "x", "--canary", "150%"}, `--canary "150%"`},
		{[]string{"rollout", "create", "--name", "x", "--waves", "25,half"}, `"half" is not a percentage`},
		{[]string{"rollout", "create", "--name", "x", "--exponential", "10"}, "want STARTxFACTOR"},
		{[]string{"rollout", "create", "--name", "x", "--waves", "50", "--exponential", "10x2"}, "pass --waves or --exponential, not both"},
		{[]string{"rollout", "create", "--name", "x", "--pause", "soon"}, `--pause "soon"`},
		{[]string{"rollout", "create", "--name", "x", "--deadline", "48"}, "--deadline: duration 48 needs a unit"},
		{[]string{"rollout", "create", "--name", "x", "--window", "someday 22:00-06:00"}, `"someday" is not a day`},
		{[]string{"rollout", "create", "--name", "x", "--window", "mon-fri"}, "no hours"},
		{[]string{"rollout", "create", "--name", "x", "--brake-outcomes", "cancelled"}, `--brake-outcomes "cancelled"`},
		{[]string{"rollout", "reject", "r1"}, "a rejection needs a reason"},
		{[]string{"rollout", "list", "--state", "done"}, `--state "done": want one of pending_approval`},
		{[]string{"rollout", "targets", "r1", "--outcome", "won"}, `--outcome "won"`},
		{[]string{"rollout", "targets", "r1", "--wave", "-1"}, "--wave -1"},
		{[]string{"rollout", "watch", "r1", "--interval", "1ms"}, "--interval 1ms"},
		{[]string{"rollout", "show"}, "want ID, got 0 argument(s)"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			api := newFakeAPI(t)
			r := runCtl(t, api.env(), "", tt.args...)
			if r.code != ctl.ExitUsage || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", r.code, r.stderr, tt.want)
			}
			oneLine(t, "stderr", r.stderr)
			if n := len(api.requests()); n != 0 {
				t.Errorf("%d requests sent for a wrong command line", n)
			}
		})
	}
}

// The shells complete the values of the rollout flags that take one of a fixed list.
func TestRolloutCompletion(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"rollout", "list", "--state", ""}, "\npaused\n"},
		{[]string{"rollout", "targets", "r1", "--outcome", ""}, "\ntoken_absent\n"},
		{[]string{"rollout", "create", "--kind", ""}, "\nrenew\n"},
		{[]string{"rollout", "create", "--brake-outcomes", ""}, "\ntimed_out\n"},
		{[]string{"rollout", ""}, "\nwatch\t"},
	} {
		r := runCtl(t, nil, "", append([]string{"__complete"}, tt.args...)...)
		if r.code != ctl.ExitOK || !strings.Contains(r.stdout, tt.want) {
			t.Errorf("completing %v: exit %d, stdout %q, want %q", tt.args, r.code, r.stdout, tt.want)
		}
	}
}

// TestRolloutApproveResume: approving a rollout the brake paused shows the trip and what
// resumes, and sends the hash that was shown.
func TestRolloutApproveResume(t *testing.T) {
	api := newFakeAPI(t)
	paused := sampleRollout()
	api.on("GET /api/v1/rollouts/r1", 200, paused)
	resumed := sampleRollout()
	resumed.State, resumed.PauseKind, resumed.Approvals, resumed.Approvers = rollout.StateRunning, "", 1, []string{"appr1"}
	api.on("POST /api/v1/rollouts/r1/approve", 200, resumed)
	r := runCtl(t, api.env(), "", "rollout", "approve", "r1", "--yes")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{
		"Approving the resumption of rollout r1 (renew vpn) after brake trip 1, approvals 0/1:\n",
		"  brake tripped overall: 3 of 10 executed failed (30%, threshold 20%): token.device_error ×3\n",
		"  Targets       110 in canary 10, wave 1 100\n",
		"  Binding hash  " + paused.BindingHash + "\n",
		"rollout r1: approval recorded (1/1); state running\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("approve does not show %q:\n%s", want, r.stdout)
		}
	}
	reqs := api.requests()
	if len(reqs) != 2 || reqs[1].Body != `{"binding_hash":"`+paused.BindingHash+`"}` {
		t.Errorf("requests %+v", reqs)
	}
}
