package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// scenario runs tokenfleetctl against one coordinator.
type scenario struct {
	t    *testing.T
	bins binaries
	url  string
}

// ctl runs tokenfleetctl as the holder of token.
func (s *scenario) ctl(token string, args ...string) ctlResult {
	s.t.Helper()
	return runCtl(s.t, s.bins.ctl, s.url, token, args...)
}

// ok runs a command that must succeed and returns its standard output.
func (s *scenario) ok(token string, args ...string) string {
	s.t.Helper()
	r := s.ctl(token, args...)
	if r.code != 0 {
		s.t.Fatalf("tokenfleetctl %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// okJSON runs a command that must succeed and decodes its JSON output into v.
func (s *scenario) okJSON(token string, v any, args ...string) {
	s.t.Helper()
	out := s.ok(token, args...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		s.t.Fatalf("tokenfleetctl %s: output is not the JSON expected: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// fails runs a command that must fail with exit status code and one line on standard
// error holding want, and nothing on standard output.
func (s *scenario) fails(token string, code int, want string, args ...string) string {
	s.t.Helper()
	r := s.ctl(token, args...)
	cmdline := "tokenfleetctl " + strings.Join(args, " ")
	if r.code != code {
		s.t.Errorf("%s: exit %d, want %d (stderr %q)", cmdline, r.code, code, r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		s.t.Errorf("%s: stderr %q does not say %q", cmdline, r.stderr, want)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "tokenfleetctl: ") {
		s.t.Errorf("%s: stderr is not one tokenfleetctl line: %q", cmdline, r.stderr)
	}
	if r.stdout != "" {
		s.t.Errorf("%s: stdout %q on failure", cmdline, r.stdout)
	}
	return r.stderr
}

// jobState reads a job's state with job show --json.
func (s *scenario) job(token, id string) client.JobDetail {
	s.t.Helper()
	var d client.JobDetail
	s.okJSON(token, &d, "job", "show", id, "--json")
	if d.ID != id {
		s.t.Fatalf("job show %s --json gave job %q", id, d.ID)
	}
	return d
}

// issue queues a job as the operator and returns its ID, the only thing printed.
func (s *scenario) issue(token string, args ...string) string {
	s.t.Helper()
	out := s.ok(token, append([]string{"issue"}, args...)...)
	id := strings.TrimSuffix(out, "\n")
	if id == "" || strings.ContainsAny(id, " \t\n") {
		s.t.Fatalf("issue printed %q, want the job ID alone on one line", out)
	}
	return id
}

var tokenRE = regexp.MustCompile(`^\S+\n$`)

// TestCoordinatorCore is the coordinator core's scenario, end to end with the real
// binaries: bootstrap, people, a profile with an approval gate, the approval rules, the
// audit log verified by the client, then tampered with by hand and caught.
func TestCoordinatorCore(t *testing.T) {
	t.Parallel()   // its own data directory and port; the binaries are built once for both tests
	sqlite3Path(t) // fail before the build when the tool is missing
	bins := buildBinaries(t)

	// 1. An empty data directory; the first start writes the bootstrap admin token.
	data := t.TempDir()
	co := startCoordinator(t, bins.coordinator, data)
	tokenPath := filepath.Join(data, "admin.token")
	st, err := os.Stat(tokenPath)
	if err != nil {
		t.Fatalf("the first start wrote no admin token: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", tokenPath, st.Mode().Perm())
	}
	raw, err := os.ReadFile(tokenPath)
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(raw))
	if admin == "" {
		t.Fatal("the admin token file is empty")
	}

	// A restart on the same data keeps the token.
	co.stop()
	co = startCoordinator(t, bins.coordinator, data)
	if again, err := os.ReadFile(tokenPath); err != nil || string(again) != string(raw) {
		t.Fatalf("a restart changed the admin token file (%v)", err)
	}
	s := &scenario{t: t, bins: bins, url: co.url}

	var me client.User
	s.okJSON(admin, &me, "whoami", "--json")
	if !slices.Contains(me.Roles, jobs.RoleAdmin) {
		t.Fatalf("the bootstrap token's user has roles %v, want admin", me.Roles)
	}
	s.fails("not-a-token", 1, "unauthenticated", "whoami")

	// Jobs target enrolled agents: the administrator enrols three workstations; a taken
	// ID is refused, naming the host that holds it.
	for _, id := range []string{"ws-01", "ws-02", "ws-03"} {
		s.ok(admin, "agent", "add", id, "--hostname", id+".acme.example")
	}
	s.fails(admin, 1, "ws-01.acme.example", "agent", "add", "ws-01", "--hostname", "other.acme.example")
	s.fails(admin, 1, "bad_request", "agent", "add", "WS.01")

	// 2. Organizations, people, their API tokens, the profile.
	s.ok(admin, "org", "create", "acme")
	s.ok(admin, "org", "create", "globex")
	var orgs []client.Org
	s.okJSON(admin, &orgs, "org", "list", "--json")
	if names := orgNames(orgs); !slices.Contains(names, "acme") || !slices.Contains(names, "globex") {
		t.Errorf("org list shows %v", names)
	}
	s.fails(admin, 1, "conflict", "org", "create", "acme")

	users := map[string]client.User{}
	for _, u := range []struct {
		username string
		args     []string
	}{
		{"olga.op", []string{"--name", "Olga Operator", "--org", "acme", "--role", "helpdesk"}},
		{"arne.approver", []string{"--name", "Arne Approver", "--org", "acme", "--role", "approver"}},
		{"greta.globex", []string{"--name", "Greta Globex", "--org", "globex", "--role", "approver"}},
		{"alice", []string{"--name", "Alice Holder", "--org", "acme", "--email", "alice@acme.example", "--upn", "alice@acme.example"}},
		{"bob", []string{"--name", "Bob Holder", "--org", "acme", "--email", "bob@acme.example", "--upn", "bob@acme.example"}},
		{"audrey.auditor", []string{"--name", "Audrey Auditor", "--role", "auditor"}},
	} {
		var created client.User
		s.okJSON(admin, &created, append([]string{"user", "create", u.username, "--json"}, u.args...)...)
		if created.Username != u.username || created.ID == "" {
			t.Fatalf("user create %s gave %+v", u.username, created)
		}
		users[u.username] = created
	}
	if a := users["alice"]; a.Email != "alice@acme.example" || a.UPN != "alice@acme.example" || a.Organization != "acme" {
		t.Errorf("holder stored as %+v", a)
	}

	tokens := map[string]string{}
	for _, name := range []string{"olga.op", "arne.approver", "greta.globex", "audrey.auditor"} {
		out := s.ok(admin, "user", "token", name, "--name", "e2e", "--expires", "1d")
		if !tokenRE.MatchString(out) {
			t.Fatalf("user token %s printed %q, want the token alone on one line", name, out)
		}
		tokens[name] = strings.TrimSpace(out)
		var who client.User
		s.okJSON(tokens[name], &who, "whoami", "--json")
		if who.Username != name {
			t.Errorf("the token issued for %s belongs to %s", name, who.Username)
		}
	}
	op, approver, outsider, auditor := tokens["olga.op"], tokens["arne.approver"], tokens["greta.globex"], tokens["audrey.auditor"]

	profileFile := filepath.Join(bins.root, "examples", "profiles", "smartcard-logon.yaml")
	out := s.ok(admin, "profile", "apply", profileFile)
	if !strings.Contains(out, "smartcard-logon") {
		t.Errorf("profile apply printed %q", out)
	}
	var profiles []client.Profile
	s.okJSON(op, &profiles, "profile", "list", "--json")
	if i := slices.IndexFunc(profiles, func(p client.Profile) bool { return p.Name == "smartcard-logon" }); i < 0 {
		t.Fatalf("profile list shows %+v", profiles)
	} else if profiles[i].ApprovalsRequired != 1 {
		t.Errorf("smartcard-logon requires %d approvals, want 1", profiles[i].ApprovalsRequired)
	}
	s.fails(op, 1, "forbidden", "profile", "apply", profileFile)

	// 3. The operator queues a job; only its ID is printed; it waits for approval.
	j1 := s.issue(op, "--holder", "alice", "--agent", "ws-01", "--profile", "smartcard-logon")
	if d := s.job(op, j1); d.State != jobs.StatePendingApproval || d.Holder != "alice" || d.Approvals != "0/1" {
		t.Fatalf("new job: state %s holder %s approvals %s", d.State, d.Holder, d.Approvals)
	}
	human := s.ok(op, "job", "show", j1)
	for _, want := range []string{"State         pending_approval", "Approvals:", "Timeline:", "Steps:"} {
		if !strings.Contains(human, want) {
			t.Errorf("job show does not say %q:\n%s", want, human)
		}
	}

	// 4. The requester cannot approve their own request, nor an approver of another
	// organisation; the holder's organisation's approver can.
	s.fails(op, 1, "tokenfleetctl: approve: self_approval: ", "approve", j1)
	s.fails(outsider, 1, "tokenfleetctl: approve: out_of_scope: ", "approve", j1)
	if d := s.job(op, j1); d.State != jobs.StatePendingApproval {
		t.Fatalf("refused approvals changed the job to %s", d.State)
	}
	var approved client.JobDetail
	s.okJSON(approver, &approved, "approve", j1, "--reason", "identity checked in person", "--json")
	if approved.State != jobs.StateApproved || approved.Approvals != "1/1" {
		t.Errorf("after the approval: state %s, approvals %s", approved.State, approved.Approvals)
	}
	if len(approved.ApprovalList) != 1 || approved.ApprovalList[0].Approver != "arne.approver" || !approved.ApprovalList[0].Valid {
		t.Errorf("approval list %+v", approved.ApprovalList)
	}
	if !hasTransition(approved.Timeline, jobs.StatePendingApproval, jobs.StateApproved) {
		t.Errorf("timeline %+v has no pending_approval → approved", approved.Timeline)
	}
	s.fails(approver, 1, "", "approve", j1) // decided already: refused, whatever the state now

	// 6. Listing by state, rejection (a reason is required), cancellation.
	j2 := s.issue(op, "--holder", "alice", "--agent", "ws-02", "--profile", "smartcard-logon")
	j3 := s.issue(op, "--holder", "bob", "--agent", "ws-03", "--profile", "smartcard-logon")
	var pending []client.Job
	s.okJSON(op, &pending, "jobs", "--state", "pending_approval", "--json")
	if ids := jobIDs(pending); !slices.Equal(ids, []string{j3, j2}) {
		t.Errorf("jobs --state pending_approval: %v, want [%s %s] (newest first)", ids, j3, j2)
	}
	table := s.ok(op, "jobs", "--state", "pending_approval")
	if lines := strings.Split(strings.TrimSpace(table), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") ||
		!strings.HasPrefix(lines[1], j3+" ") || !strings.HasPrefix(lines[2], j2+" ") {
		t.Errorf("jobs --state pending_approval printed:\n%s", table)
	}

	s.fails(approver, 2, "a rejection needs a reason", "reject", j2)
	apiClient, err := client.New(co.url, approver)
	if err != nil {
		t.Fatal(err)
	}
	_, err = apiClient.Reject(t.Context(), j2, "")
	if code := client.ErrorCode(err); code != "reason_required" && code != "bad_request" {
		t.Errorf("the API accepted or misreported a rejection without a reason: %v", err)
	}
	var rejected client.JobDetail
	s.okJSON(approver, &rejected, "reject", j2, "--reason", "holder already has a valid smart card", "--json")
	if rejected.State != jobs.StateRejected {
		t.Errorf("rejected job is %s", rejected.State)
	}

	s.fails(approver, 1, "", "cancel", j3) // neither its requester nor an admin
	if out := s.ok(op, "cancel", j3, "--reason", "holder left the company"); !strings.Contains(out, "cancelled") {
		t.Errorf("cancel printed %q", out)
	}
	if d := s.job(op, j3); d.State != jobs.StateCancelled {
		t.Errorf("cancelled job is %s", d.State)
	}
	s.fails(op, 1, "", "cancel", j3)

	pending = nil
	s.okJSON(op, &pending, "jobs", "--state", "pending_approval", "--json")
	if len(pending) != 0 {
		t.Errorf("jobs still pending: %v", jobIDs(pending))
	}
	if out := s.ok(op, "jobs", "--state", "pending_approval"); out != "no jobs\n" {
		t.Errorf("an empty listing printed %q", out)
	}
	var all []client.Job
	s.okJSON(op, &all, "jobs", "--all", "--json")
	states := map[string]jobs.State{}
	for _, j := range all {
		states[j.ID] = j.State
	}
	if states[j2] != jobs.StateRejected || states[j3] != jobs.StateCancelled || states[j1] == "" {
		t.Errorf("jobs --all: %v", states)
	}
	var holderJobs []client.Job
	s.okJSON(op, &holderJobs, "jobs", "--holder", "bob", "--json")
	if ids := jobIDs(holderJobs); !slices.Equal(ids, []string{j3}) {
		t.Errorf("jobs --holder bob: %v", ids)
	}
	var agents []client.Agent
	s.okJSON(admin, &agents, "agents", "--json")
	if len(agents) != 3 || agents[0].Hostname == "" {
		t.Errorf("agents --json: %+v", agents)
	}
	for _, args := range [][]string{{"tokens", "--json"}, {"certs", "--json"}} {
		var items []map[string]any
		s.okJSON(admin, &items, args...)
		if len(items) != 0 {
			t.Errorf("%v: %v, want none before any agent reported", args, items)
		}
	}
	var people []client.User
	s.okJSON(admin, &people, "user", "list", "--org", "acme", "--json")
	if len(people) != 4 {
		t.Errorf("user list --org acme: %d people, want 4", len(people))
	}

	// 5. The client verifies the audit log; an operator may not read it.
	s.fails(op, 1, "forbidden", "audit", "verify")
	head := verifyOK(t, s, auditor)
	var entries []client.AuditEntry
	s.okJSON(auditor, &entries, "audit", "list", "--all", "--json")
	if int64(len(entries)) < head.Seq {
		t.Fatalf("audit list gave %d entries, verify checked %d", len(entries), head.Seq)
	}
	approval := findEntry(t, entries, func(e client.AuditEntry) bool {
		return e.Action == audit.ActionJobApproved && e.Job == j1 && e.Actor == users["arne.approver"].ID
	}, "the approval of "+j1)
	rejection := findEntry(t, entries, func(e client.AuditEntry) bool {
		return e.Action == audit.ActionJobRejected && e.Job == j2
	}, "the rejection of "+j2)
	if approval.Seq >= rejection.Seq || rejection.Seq >= head.Seq {
		t.Fatalf("want the approval (%d) before the rejection (%d), both before the head (%d)", approval.Seq, rejection.Seq, head.Seq)
	}

	// Tamper with the database as an intruder with the file would: stop the coordinator,
	// drop the append-only trigger, edit the row, put the trigger back.
	co.stop()
	db := filepath.Join(data, "coordinator.db")
	pristine := filepath.Join(t.TempDir(), "pristine.db")
	sqlite(t, db, ".backup "+pristine+"\n")
	editActor := fmt.Sprintf("DROP TRIGGER audit_log_no_update;\n"+
		"UPDATE audit_log SET actor = '%s' WHERE seq = %d;\nSELECT changes();\n", users["greta.globex"].ID, approval.Seq)
	trigger := sqlite(t, db, "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'audit_log_no_update';\n")
	if got := sqlite(t, db, editActor+trigger+";\n"); got != "1" {
		t.Fatalf("the edit changed %q rows, want 1", got)
	}
	co = startCoordinator(t, bins.coordinator, data)
	s.url = co.url
	verifyBroken(t, s, auditor, approval.Seq, audit.KindEdited)

	// Start again from the untouched copy and delete a later row instead.
	co.stop()
	sqlite(t, db, ".restore "+pristine+"\n")
	deleteRow := fmt.Sprintf("DROP TRIGGER audit_log_no_delete;\nDELETE FROM audit_log WHERE seq = %d;\nSELECT changes();\n", rejection.Seq)
	if got := sqlite(t, db, deleteRow); got != "1" {
		t.Fatalf("the delete removed %q rows, want 1", got)
	}
	co = startCoordinator(t, bins.coordinator, data)
	s.url = co.url
	verifyBroken(t, s, auditor, rejection.Seq, audit.KindRemoved)
	co.stop()
}

// verifyOK runs audit verify on an intact log and returns the head it reports.
func verifyOK(t *testing.T, s *scenario, token string) audit.Head {
	t.Helper()
	out := s.ok(token, "audit", "verify")
	m := regexp.MustCompile(`^audit log verified: (\d+) entries, head seq (\d+) hash ([0-9a-f]{64})\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("audit verify printed %q", out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	seq, _ := strconv.ParseInt(m[2], 10, 64)
	if n != seq || n < 10 {
		t.Errorf("audit verify checked %d entries up to seq %d; the scenario wrote more than 10", n, seq)
	}
	var rep struct {
		Verified bool       `json:"verified"`
		Entries  int64      `json:"entries"`
		Head     audit.Head `json:"head"`
	}
	s.okJSON(token, &rep, "audit", "verify", "--json")
	if !rep.Verified || rep.Entries < n || rep.Head.Seq < seq {
		t.Errorf("audit verify --json: %+v after %d entries", rep, n)
	}
	return audit.Head{Seq: seq, Hash: m[3]}
}

// verifyBroken runs audit verify on a tampered log: it must fail and name the entry.
func verifyBroken(t *testing.T, s *scenario, token string, seq int64, kind audit.Kind) {
	t.Helper()
	s.fails(token, 3, fmt.Sprintf("tokenfleetctl: audit verify: the audit log was tampered with: entry %d %s: ", seq, kind), "audit", "verify")
	r := s.ctl(token, "audit", "verify", "--json")
	var rep struct {
		Verified bool `json:"verified"`
		Broken   *struct {
			Seq  int64      `json:"seq"`
			Kind audit.Kind `json:"kind"`
		} `json:"broken"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("audit verify --json printed %q: %v", r.stdout, err)
	}
	if r.code != 3 || rep.Verified || rep.Broken == nil || rep.Broken.Seq != seq || rep.Broken.Kind != kind {
		t.Errorf("audit verify --json: exit %d, %+v; want entry %d %s", r.code, rep, seq, kind)
	}
}

func findEntry(t *testing.T, entries []client.AuditEntry, match func(client.AuditEntry) bool, what string) client.AuditEntry {
	t.Helper()
	for _, e := range entries {
		if match(e) {
			return e
		}
	}
	var actions []string
	for _, e := range entries {
		actions = append(actions, fmt.Sprintf("%d %s %s %s", e.Seq, e.Action, e.Job, e.Actor))
	}
	t.Fatalf("no audit entry for %s among:\n%s", what, strings.Join(actions, "\n"))
	return client.AuditEntry{}
}

func hasTransition(tl []client.JobEvent, from, to jobs.State) bool {
	return slices.ContainsFunc(tl, func(e client.JobEvent) bool { return e.From == from && e.To == to })
}

func jobIDs(js []client.Job) []string {
	ids := make([]string, len(js))
	for i, j := range js {
		ids[i] = j.ID
	}
	return ids
}

func orgNames(orgs []client.Org) []string {
	names := make([]string, len(orgs))
	for i, o := range orgs {
		names[i] = o.Name
	}
	return names
}
