package httpapi_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func TestCreateJob(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	j := e.newJob(t, "hd", map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing", "agent": "ws-1", "token_serial": "0042"})
	want := job{Kind: "issue", State: "pending_approval", Holder: "ann", Profile: "email-signing", Agent: "ws-1", TokenSerial: "0042",
		Requester: "hd", Organization: "Acme", Attempt: 1, Approvals: "0/1"}
	if j.ID == "" || len(j.BindingHash) != 64 || len(j.ProfileHash) != 64 || j.Kind != want.Kind || j.State != want.State ||
		j.Holder != want.Holder || j.Profile != want.Profile || j.Agent != want.Agent || j.TokenSerial != want.TokenSerial ||
		j.Requester != want.Requester || j.Organization != want.Organization || j.Attempt != 1 || j.Approvals != want.Approvals {
		t.Fatalf("created %+v", j)
	}
	// The deadline is the profile's request expiry from now.
	if !j.Deadline.Equal(e.clock.now().Add(7 * 24 * time.Hour)) {
		t.Fatalf("deadline %s, want now+7d", j.Deadline)
	}
	created := e.auditSince(t, 0, audit.ActionJobCreated)
	if len(created) != 1 || created[0].JobID != j.ID || created[0].Actor != e.user(t, "hd").ID ||
		!strings.Contains(string(created[0].Details), j.BindingHash) {
		t.Fatalf("job.created audit: %+v", created)
	}
	d := ok[jobDetail](t, e.as(t, "hd", "GET", "/api/v1/jobs/"+j.ID, nil), 200)
	if len(d.Timeline) != 1 || d.Timeline[0].To != "pending_approval" || d.Timeline[0].Actor != "hd" ||
		len(d.ApprovalList) != 0 || d.Steps == nil {
		t.Fatalf("detail %+v", d)
	}

	deadline := e.clock.now().Add(36 * time.Hour).Format(time.RFC3339)
	j2 := e.newJob(t, "admin", map[string]any{"kind": "csr", "holder": "gina", "profile": "email-signing", "agent": "ws-2", "deadline": deadline})
	if j2.Deadline.Format(time.RFC3339) != deadline || j2.Organization != "Globex" {
		t.Fatalf("explicit deadline: %+v", j2)
	}

	head := e.auditHead(t)
	bad := []struct {
		name   string
		body   any
		status int
		code   string
		field  string
	}{
		{"no kind", map[string]any{"holder": "ann", "profile": "email-signing", "agent": "ws-1"}, 400, "bad_request", "kind"},
		{"unknown kind", map[string]any{"kind": "enroll", "holder": "ann", "profile": "email-signing", "agent": "ws-1"}, 400, "bad_request", "kind"},
		{"coordinator kind", map[string]any{"kind": "revoke", "holder": "ann", "profile": "email-signing", "agent": "ws-1"}, 400, "bad_request", "kind"},
		{"no holder", map[string]any{"kind": "issue", "profile": "email-signing", "agent": "ws-1"}, 400, "bad_request", "holder"},
		{"unknown holder", issue("nobody", "email-signing", "ws-1"), 400, "bad_request", "holder"},
		{"no profile", map[string]any{"kind": "issue", "holder": "ann", "agent": "ws-1"}, 400, "bad_request", "profile"},
		{"unknown profile", issue("ann", "nope", "ws-1"), 400, "bad_request", "profile"},
		{"no agent", map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing"}, 400, "bad_request", "agent"},
		{"malformed agent ID", issue("ann", "email-signing", "WS.1"), 400, "bad_request", "agent"},
		{"agent never enrolled", issue("ann", "email-signing", "ws-9"), 400, "bad_request", "agent"},
		{"bad token serial", map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing", "agent": "ws-1", "token_serial": "a b"}, 400, "bad_request", "token_serial"},
		{"deadline in the past", map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing", "agent": "ws-1", "deadline": "2001-01-01T00:00:00Z"}, 400, "bad_request", "deadline"},
		{"deadline not a date", map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing", "agent": "ws-1", "deadline": "tomorrow"}, 400, "bad_request", "deadline"},
		{"kind not a string", map[string]any{"kind": 1, "holder": "ann", "profile": "email-signing", "agent": "ws-1"}, 400, "bad_request", "kind"},
		{"unknown field", map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing", "agent": "ws-1", "priority": 1}, 400, "bad_request", "priority"},
		{"holder lacks an attribute", issue("bob", "email-signing", "ws-1"), 400, "missing_holder_attribute", "holder"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, e.as(t, "hd", "POST", "/api/v1/jobs", tc.body), tc.status, tc.code, tc.field)
		})
	}
	if h := e.auditHead(t); h != head {
		t.Fatalf("refused jobs changed the audit log (%d entries)", h-head)
	}
	er := wantErr(t, e.as(t, "hd", "POST", "/api/v1/jobs", issue("bob", "email-signing", "ws-1")), 400, "missing_holder_attribute", "holder")
	if !strings.Contains(er.Error.Message, "Email") || !strings.Contains(er.Error.Message, "sans.email") {
		t.Fatalf("missing attribute not named: %s", er.Error.Message)
	}
	for _, who := range []string{"ap1", "ca", "aud", "ann"} {
		wantErr(t, e.as(t, who, "POST", "/api/v1/jobs", issue("ann", "email-signing", "ws-1")), 403, "forbidden", "")
	}
	if n := len(e.auditSince(t, head, audit.ActionAccessDenied)); n != 4 {
		t.Fatalf("%d denials audited, want 4", n)
	}
	l := ok[list[job]](t, e.as(t, "hd", "GET", "/api/v1/jobs", nil), 200)
	if len(l.Items) != 2 {
		t.Fatalf("%d jobs after refused requests", len(l.Items))
	}
}

func TestApprovalRules(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	j := e.newJob(t, "hd2", issue("ann", "email-signing", "ws-1"))
	path := "/api/v1/jobs/" + j.ID
	head := e.auditHead(t)

	// Denials, each audited with its rule's code; the job does not move.
	denials := []struct {
		who    string
		body   any
		status int
		code   string
	}{
		{"hd2", nil, 403, "self_approval"},      // the requester holds the approver role
		{"apg", nil, 403, "out_of_scope"},       // approver of another organisation
		{"hd", nil, 403, "role_not_permitted"},  // helpdesk is not an approver
		{"aud", nil, 403, "role_not_permitted"}, // auditors decide nothing
		{"ap1", map[string]string{"binding_hash": strings.Repeat("0", 64)}, 409, "binding_mismatch"},
	}
	for _, d := range denials {
		wantErr(t, e.as(t, d.who, "POST", path+"/approve", d.body), d.status, d.code, "")
	}
	got := e.auditSince(t, head, audit.ActionAccessDenied)
	if len(got) != len(denials) {
		t.Fatalf("%d denials audited, want %d", len(got), len(denials))
	}
	for i, d := range denials {
		if got[i].JobID != j.ID || got[i].Actor != e.user(t, d.who).ID || !strings.Contains(string(got[i].Details), `"code":"`+d.code+`"`) {
			t.Errorf("denial %d: %+v", i, got[i])
		}
	}
	wantErr(t, e.as(t, "ap1", "POST", path+"/approve", map[string]string{"binding_hash": "short"}), 400, "bad_request", "binding_hash")
	wantErr(t, e.as(t, "ap1", "POST", path+"/approve", map[string]any{"reason": strings.Repeat("r", 1025)}), 400, "bad_request", "reason")
	wantErr(t, e.as(t, "ap1", "POST", "/api/v1/jobs/nope/approve", nil), 404, "not_found", "")

	// The holder may not approve their own certificate, even as an approver.
	ok[user](t, e.as(t, "admin", "POST", "/api/v1/users", map[string]any{"username": "ann2", "organization": "Acme",
		"display_name": "Ann Two", "email": "ann2@acme.example", "roles": []string{"approver"}}), 201)
	e.tokens["ann2"] = ok[issuedToken](t, e.as(t, "admin", "POST", "/api/v1/users/ann2/tokens", nil), 201).Token
	j2 := e.newJob(t, "hd", issue("ann2", "email-signing", "ws-1"))
	wantErr(t, e.as(t, "ann2", "POST", "/api/v1/jobs/"+j2.ID+"/approve", nil), 403, "self_approval", "")

	d := ok[jobDetail](t, e.as(t, "ap1", "POST", path+"/approve", map[string]string{"reason": "ok", "binding_hash": j.BindingHash}), 200)
	if d.State != "approved" || d.Approvals != "1/1" || len(d.ApprovalList) != 1 || d.ApprovalList[0].Approver != "ap1" ||
		!d.ApprovalList[0].Valid || d.ApprovalList[0].Gate != "request" || d.ApprovalList[0].Decision != "approve" {
		t.Fatalf("after approval: %+v", d)
	}
	if last := d.Timeline[len(d.Timeline)-1]; last.From != "pending_approval" || last.To != "approved" || last.Actor != "ap1" {
		t.Fatalf("timeline %+v", d.Timeline)
	}
	if a := e.auditSince(t, head, audit.ActionJobApproved); len(a) != 1 || a[0].Actor != e.user(t, "ap1").ID || a[0].Reason != "ok" {
		t.Fatalf("approval audit %+v", a)
	}
	if tr := e.auditSince(t, head, audit.ActionJobTransition); len(tr) != 1 || !strings.Contains(string(tr[0].Details), `"to":"approved"`) {
		t.Fatalf("transition audit %+v", tr)
	}
	if approved, _, _, _ := e.rec.snapshot(); !slices.Contains(approved, j.ID) {
		t.Fatalf("dispatcher not told: %v", approved)
	}
	wantErr(t, e.as(t, "ap2", "POST", path+"/approve", nil), 409, "not_pending", "")
	wantErr(t, e.as(t, "ap2", "POST", path+"/reject", map[string]string{"reason": "late"}), 409, "not_pending", "")
}

func TestRejection(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	j := e.newJob(t, "hd", issue("ann", "dual", "ws-1"))
	path := "/api/v1/jobs/" + j.ID
	d := ok[jobDetail](t, e.as(t, "ap1", "POST", path+"/approve", nil), 200)
	if d.State != "pending_approval" || d.Approvals != "1/2" {
		t.Fatalf("one of two: %+v", d)
	}
	wantErr(t, e.as(t, "ap1", "POST", path+"/approve", nil), 409, "already_decided", "")
	wantErr(t, e.as(t, "ap2", "POST", path+"/reject", nil), 400, "bad_request", "")
	wantErr(t, e.as(t, "ap2", "POST", path+"/reject", map[string]string{"reason": "  "}), 400, "reason_required", "")
	d = ok[jobDetail](t, e.as(t, "ap2", "POST", path+"/reject", map[string]string{"reason": "not entitled"}), 200)
	if d.State != "rejected" || len(d.ApprovalList) != 2 || d.ApprovalList[1].Decision != "reject" || d.ApprovalList[1].Reason != "not entitled" {
		t.Fatalf("after rejection: %+v", d)
	}
	if a := e.auditSince(t, 0, audit.ActionJobRejected); len(a) != 1 || a[0].Reason != "not entitled" {
		t.Fatalf("rejection audit %+v", a)
	}
	wantErr(t, e.as(t, "ap3", "POST", path+"/approve", nil), 409, "not_pending", "")
	wantErr(t, e.as(t, "hd", "POST", path+"/cancel", nil), 409, "not_cancellable", "")
}

func TestTwoApprovalsThenCAOperator(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	j := e.newJob(t, "hd", issue("ann", "dual", "ws-1"))
	path := "/api/v1/jobs/" + j.ID
	ok[jobDetail](t, e.as(t, "ap1", "POST", path+"/approve", nil), 200)
	d := ok[jobDetail](t, e.as(t, "ap2", "POST", path+"/approve", nil), 200)
	if d.State != "approved" || d.Approvals != "2/2" {
		t.Fatalf("after two approvals: %+v", d)
	}
	// The dispatcher and the agent take it to awaiting_certificate (later steps of the
	// project); here the store does it.
	e.advanceJob(t, j.ID, jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate)

	wantErr(t, e.as(t, "ap3", "POST", path+"/approve", nil), 403, "role_not_permitted", "")
	d = ok[jobDetail](t, e.as(t, "ca", "POST", path+"/approve", nil), 200)
	if d.State != "awaiting_certificate" || len(d.ApprovalList) != 3 || d.ApprovalList[2].Gate != "ca_operator" || !d.ApprovalList[2].Valid {
		t.Fatalf("after the CA gate: %+v", d)
	}
	if _, _, ca, _ := e.rec.snapshot(); !slices.Equal(ca, []string{j.ID}) {
		t.Fatalf("issuer told %v", ca)
	}
	wantErr(t, e.as(t, "ca", "POST", path+"/approve", nil), 409, "not_pending", "")

	// A CA operator's rejection rejects a job awaiting its certificate.
	j2 := e.newJob(t, "hd", issue("ann", "dual", "ws-2"))
	ok[jobDetail](t, e.as(t, "ap1", "POST", "/api/v1/jobs/"+j2.ID+"/approve", nil), 200)
	ok[jobDetail](t, e.as(t, "ap2", "POST", "/api/v1/jobs/"+j2.ID+"/approve", nil), 200)
	e.advanceJob(t, j2.ID, jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate)
	d = ok[jobDetail](t, e.as(t, "ca", "POST", "/api/v1/jobs/"+j2.ID+"/reject", map[string]string{"reason": "wrong subject"}), 200)
	if d.State != "rejected" {
		t.Fatalf("CA rejection: %+v", d)
	}
}

// advanceJob moves a job through states directly in the store, as the dispatcher and
// agent reports will.
func (e *env) advanceJob(t *testing.T, id string, states ...jobs.State) {
	t.Helper()
	ctx := context.Background()
	for _, to := range states {
		err := e.st.InTx(ctx, func(tx store.Tx) error {
			j, err := tx.GetJob(ctx, id)
			if err != nil {
				return err
			}
			_, err = tx.UpdateJobState(ctx, id, j.State, to, j.Version, store.JobChange{Actor: "agent:ws-1", At: e.clock.now()})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestConcurrentApprovals(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	j := e.newJob(t, "hd", issue("ann", "dual", "ws-1"))
	var wg sync.WaitGroup
	results := make([]response, 3)
	for i, who := range []string{"ap1", "ap2", "ap3"} {
		wg.Go(func() { results[i] = e.as(t, who, "POST", "/api/v1/jobs/"+j.ID+"/approve", nil) })
	}
	wg.Wait()
	codes := map[int]int{}
	for _, r := range results {
		codes[r.status]++
	}
	// Two approvals approve; the third finds the gate passed.
	if codes[200] != 2 || codes[409] != 1 {
		t.Fatalf("statuses %v: %v", codes, results)
	}
	d := ok[jobDetail](t, e.as(t, "hd", "GET", "/api/v1/jobs/"+j.ID, nil), 200)
	if d.State != "approved" || len(d.ApprovalList) != 2 {
		t.Fatalf("after concurrent approvals: %+v", d)
	}
	transitions := 0
	for _, ev := range d.Timeline {
		if ev.To == "approved" {
			transitions++
		}
	}
	if transitions != 1 {
		t.Fatalf("%d transitions to approved", transitions)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	j := e.newJob(t, "hd", issue("ann", "email-signing", "ws-1"))
	path := "/api/v1/jobs/" + j.ID
	head := e.auditHead(t)
	for _, who := range []string{"hd2", "ap1", "ann"} {
		wantErr(t, e.as(t, who, "POST", path+"/cancel", nil), 403, "forbidden", "")
	}
	if n := len(e.auditSince(t, head, audit.ActionAccessDenied)); n != 3 {
		t.Fatalf("%d cancel denials audited", n)
	}
	wantErr(t, e.as(t, "hd", "POST", path+"/cancel", map[string]any{"reason": 5}), 400, "bad_request", "reason")
	d := ok[jobDetail](t, e.as(t, "hd", "POST", path+"/cancel", map[string]string{"reason": "user left"}), 200)
	if d.State != "cancelled" || d.Timeline[len(d.Timeline)-1].Reason != "user left" {
		t.Fatalf("cancelled: %+v", d)
	}
	if c := e.auditSince(t, head, audit.ActionJobCancelled); len(c) != 1 || c[0].Reason != "user left" || c[0].JobID != j.ID {
		t.Fatalf("cancel audit %+v", c)
	}
	wantErr(t, e.as(t, "hd", "POST", path+"/cancel", nil), 409, "not_cancellable", "")
	wantErr(t, e.as(t, "hd", "POST", "/api/v1/jobs/nope/cancel", nil), 404, "not_found", "")

	// An admin cancels an approved job; the dispatcher is told to withdraw it.
	j2 := e.newJob(t, "hd", issue("ann", "open-client", "ws-1"))
	if j2.State != "approved" {
		t.Fatalf("no-approval job is %s", j2.State)
	}
	d = ok[jobDetail](t, e.as(t, "admin", "POST", "/api/v1/jobs/"+j2.ID+"/cancel", nil), 200)
	if d.State != "cancelled" || !strings.Contains(d.Timeline[len(d.Timeline)-1].Reason, "admin") {
		t.Fatalf("admin cancel: %+v", d)
	}
	if _, withdrawn, _, _ := e.rec.snapshot(); !slices.Contains(withdrawn, j2.ID+":approved->cancelled") {
		t.Fatalf("withdrawn %v", withdrawn)
	}
	// Once the agent works on the token, nobody cancels.
	j3 := e.newJob(t, "hd", issue("ann", "open-client", "ws-2"))
	e.advanceJob(t, j3.ID, jobs.StateDispatched, jobs.StateRunning)
	e.addStep(t, j3.ID, jobs.StepTokenFound)
	wantErr(t, e.as(t, "admin", "POST", "/api/v1/jobs/"+j3.ID+"/cancel", nil), 409, "not_cancellable", "")
	// While it waits for the token, or for its certificate, the requester cancels and the
	// agent is told.
	for _, tc := range []struct {
		states []jobs.State
		step   jobs.Step
	}{
		{[]jobs.State{jobs.StateDispatched, jobs.StateRunning}, jobs.StepWaitingForToken},
		{[]jobs.State{jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate}, ""},
	} {
		j := e.newJob(t, "hd", issue("ann", "open-client", "ws-2"))
		e.advanceJob(t, j.ID, tc.states...)
		if tc.step != "" {
			e.addStep(t, j.ID, tc.step)
		}
		d = ok[jobDetail](t, e.as(t, "hd", "POST", "/api/v1/jobs/"+j.ID+"/cancel", nil), 200)
		from := tc.states[len(tc.states)-1]
		if d.State != "cancelled" {
			t.Fatalf("cancel while %s: %+v", from, d)
		}
		if _, withdrawn, _, _ := e.rec.snapshot(); !slices.Contains(withdrawn, j.ID+":"+string(from)+"->cancelled") {
			t.Fatalf("the agent was not told: withdrawn %v", withdrawn)
		}
	}
}

// addStep records a progress step of the job's current attempt, as the agent's report
// would.
func (e *env) addStep(t *testing.T, id string, step jobs.Step) {
	t.Helper()
	ctx := context.Background()
	err := e.st.InTx(ctx, func(tx store.Tx) error {
		j, err := tx.GetJob(ctx, id)
		if err != nil {
			return err
		}
		p, err := jobs.AdvanceStep(j.Kind, j.State, j.Progress, step)
		if err != nil {
			return err
		}
		_, err = tx.AddJobStep(ctx, store.JobStep{JobID: id, Attempt: j.Attempt, Step: step, At: e.clock.now()}, p, j.Version)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNoApprovalProfile(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	j := e.newJob(t, "hd", issue("ann", "open-client", "ws-1"))
	if j.State != "approved" || j.Approvals != "0/0" {
		t.Fatalf("job %+v", j)
	}
	if !j.Deadline.Equal(e.clock.now().Add(14 * 24 * time.Hour)) {
		t.Fatalf("deadline %s", j.Deadline)
	}
	d := ok[jobDetail](t, e.as(t, "hd", "GET", "/api/v1/jobs/"+j.ID, nil), 200)
	if len(d.Timeline) != 2 || d.Timeline[0].To != "pending_approval" || d.Timeline[1].To != "approved" {
		t.Fatalf("timeline %+v", d.Timeline)
	}
	if approved, _, _, _ := e.rec.snapshot(); !slices.Equal(approved, []string{j.ID}) {
		t.Fatalf("dispatcher told %v", approved)
	}
}

func TestSupersede(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	a := e.newJob(t, "hd", issue("ann", "email-signing", "ws-1"))
	other := e.newJob(t, "hd", map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing", "agent": "ws-1", "token_serial": "77"})
	elsewhere := e.newJob(t, "hd", issue("ann", "email-signing", "ws-2"))
	head := e.auditHead(t)
	b := e.newJob(t, "hd2", map[string]any{"kind": "renew", "holder": "ann", "profile": "email-signing", "agent": "ws-1"})

	da := ok[jobDetail](t, e.as(t, "hd", "GET", "/api/v1/jobs/"+a.ID, nil), 200)
	if da.State != "superseded" || da.SupersededBy != b.ID {
		t.Fatalf("old job: %+v", da.job)
	}
	s := e.auditSince(t, head, audit.ActionJobSuperseded)
	if len(s) != 1 || s[0].JobID != a.ID || !strings.Contains(string(s[0].Details), b.ID) || s[0].Actor != e.user(t, "hd2").ID {
		t.Fatalf("supersede audit %+v", s)
	}
	for _, id := range []string{other.ID, elsewhere.ID, b.ID} {
		if d := ok[jobDetail](t, e.as(t, "hd", "GET", "/api/v1/jobs/"+id, nil), 200); d.State != "pending_approval" {
			t.Fatalf("job %s is %s", id, d.State)
		}
	}
	// An approved job is superseded too, and withdrawn from dispatch.
	c := e.newJob(t, "hd", issue("ann", "open-client", "ws-1"))
	c2 := e.newJob(t, "hd", issue("ann", "open-client", "ws-1"))
	if d := ok[jobDetail](t, e.as(t, "hd", "GET", "/api/v1/jobs/"+c.ID, nil), 200); d.State != "superseded" || d.SupersededBy != c2.ID {
		t.Fatalf("approved job not superseded: %+v", d.job)
	}
	if _, withdrawn, _, _ := e.rec.snapshot(); !slices.Contains(withdrawn, c.ID+":approved->superseded") {
		t.Fatalf("withdrawn %v", withdrawn)
	}
}

func TestProfileChangeVoidsApproval(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	j := e.newJob(t, "hd", issue("ann", "email-signing", "ws-1"))
	ok[map[string]any](t, e.as(t, "admin", "PUT", "/api/v1/profiles", strings.Replace(profileEmail, "S/MIME signing.", "S/MIME signing, v2.", 1)), 200)
	er := wantErr(t, e.as(t, "ap1", "POST", "/api/v1/jobs/"+j.ID+"/approve", nil), 409, "binding_mismatch", "")
	if !strings.Contains(er.Error.Message, "queue the job again") {
		t.Fatalf("message %q", er.Error.Message)
	}
	// The job still reads with its own profile version.
	if d := ok[jobDetail](t, e.as(t, "ap1", "GET", "/api/v1/jobs/"+j.ID, nil), 200); d.ProfileHash != j.ProfileHash || d.Approvals != "0/1" {
		t.Fatalf("job after profile change: %+v", d.job)
	}
}

func TestExpiry(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	ctx := context.Background()
	pending := e.newJob(t, "hd", issue("ann", "email-signing", "ws-1"))
	approved := e.newJob(t, "hd", issue("ann", "open-client", "ws-1"))
	dual := e.newJob(t, "hd", issue("ann", "dual", "ws-2"))
	ok[jobDetail](t, e.as(t, "ap1", "POST", "/api/v1/jobs/"+dual.ID+"/approve", nil), 200)
	short := e.newJob(t, "hd", map[string]any{"kind": "wipe", "holder": "gina", "profile": "open-client", "agent": "ws-2",
		"deadline": e.clock.now().Add(2 * time.Hour).Format(time.RFC3339)})

	if n, err := e.svc.ExpireDue(ctx); err != nil || n != 0 {
		t.Fatalf("nothing due yet: %d, %v", n, err)
	}
	e.clock.advance(3 * time.Hour) // past the wipe's deadline
	if n, err := e.svc.ExpireDue(ctx); err != nil || n != 1 {
		t.Fatalf("deadline sweep: %d, %v", n, err)
	}
	e.clock.advance(2 * 24 * time.Hour) // the dual request (48h) lapsed
	if n, err := e.svc.ExpireDue(ctx); err != nil || n != 1 {
		t.Fatalf("48h sweep: %d, %v", n, err)
	}
	e.clock.advance(5 * 24 * time.Hour) // the email request (7d) lapsed
	if n, err := e.svc.ExpireDue(ctx); err != nil || n != 1 {
		t.Fatalf("7d sweep: %d, %v", n, err)
	}
	want := map[string]string{pending.ID: "expired", approved.ID: "approved", dual.ID: "expired", short.ID: "expired"}
	for id, state := range want {
		d := ok[jobDetail](t, e.as(t, "hd", "GET", "/api/v1/jobs/"+id, nil), 200)
		if d.State != state {
			t.Errorf("job %s is %s, want %s", id, d.State, state)
		}
		if state == "expired" && (d.ErrorCode != "job_expired" || d.Timeline[len(d.Timeline)-1].Actor != "system:expiry") {
			t.Errorf("expired job %s: %+v", id, d)
		}
	}
	expired := e.auditSince(t, 0, audit.ActionJobExpired)
	if len(expired) != 3 {
		t.Fatalf("%d job.expired entries", len(expired))
	}
	for _, x := range expired {
		if x.Actor != "system:expiry" || x.Reason == "" {
			t.Fatalf("expiry audit %+v", x)
		}
	}
	wantErr(t, e.as(t, "ap1", "POST", "/api/v1/jobs/"+pending.ID+"/approve", nil), 409, "not_pending", "")
	// The no-approval job expires at its deadline (14 days) if it never started.
	e.clock.advance(7 * 24 * time.Hour)
	if n, err := e.svc.ExpireDue(ctx); err != nil || n != 1 {
		t.Fatalf("14d sweep: %d, %v", n, err)
	}
	if _, withdrawn, _, _ := e.rec.snapshot(); !slices.Contains(withdrawn, approved.ID+":approved->expired") {
		t.Fatalf("withdrawn %v", withdrawn)
	}
}

func TestExpiredRequestCannotBeApproved(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	j := e.newJob(t, "hd", issue("ann", "email-signing", "ws-1"))
	e.clock.advance(8 * 24 * time.Hour)
	wantErr(t, e.as(t, "ap1", "POST", "/api/v1/jobs/"+j.ID+"/approve", nil), 409, "approval_expired", "")
	if a := e.auditSince(t, 0, audit.ActionAccessDenied); len(a) != 1 || !strings.Contains(string(a[0].Details), "approval_expired") {
		t.Fatalf("denial audit %+v", a)
	}
}

func TestListJobs(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	var ids []string
	for i := range 5 {
		e.clock.advance(time.Second)
		j := e.newJob(t, "hd", map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing", "agent": "ws-1",
			"token_serial": fmt.Sprint(i)})
		ids = append(ids, j.ID)
	}
	e.clock.advance(time.Second)
	g := e.newJob(t, "hd", issue("gina", "email-signing", "ws-2"))
	ids = append(ids, g.ID)
	slices.Reverse(ids) // newest first

	var got []string
	cursor := ""
	for {
		l := ok[list[job]](t, e.as(t, "aud", "GET", "/api/v1/jobs?limit=2&cursor="+cursor, nil), 200)
		for _, j := range l.Items {
			got = append(got, j.ID)
		}
		if cursor = l.NextCursor; cursor == "" {
			break
		}
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("paged %v, want %v", got, ids)
	}
	filters := []struct {
		query string
		n     int
	}{
		{"state=pending_approval", 6},
		{"state=approved", 0},
		{"holder=gina", 1},
		{"organization=Acme", 5},
		{"agent=ws-2", 1},
		{"kind=issue", 6},
		{"kind=wipe", 0},
	}
	for _, f := range filters {
		if l := ok[list[job]](t, e.as(t, "hd", "GET", "/api/v1/jobs?"+f.query, nil), 200); len(l.Items) != f.n {
			t.Errorf("%s: %d jobs, want %d", f.query, len(l.Items), f.n)
		}
	}
	for _, q := range []string{"state=done", "kind=enroll", "holder=nobody", "organization=Nowhere", "status=approved", "limit=-1"} {
		wantErr(t, e.as(t, "hd", "GET", "/api/v1/jobs?"+q, nil), 400, "bad_request", "-")
	}
	// Approvers read their organisation's jobs only.
	l := ok[list[job]](t, e.as(t, "apg", "GET", "/api/v1/jobs", nil), 200)
	if len(l.Items) != 1 || l.Items[0].ID != g.ID {
		t.Fatalf("Globex approver sees %+v", l.Items)
	}
	wantErr(t, e.as(t, "apg", "GET", "/api/v1/jobs?organization=Acme", nil), 403, "out_of_scope", "organization")
	wantErr(t, e.as(t, "apg", "GET", "/api/v1/jobs/"+ids[1], nil), 403, "out_of_scope", "")
	ok[jobDetail](t, e.as(t, "apg", "GET", "/api/v1/jobs/"+g.ID, nil), 200)
	ok[jobDetail](t, e.as(t, "ca", "GET", "/api/v1/jobs/"+ids[1], nil), 200)
	wantErr(t, e.as(t, "hd", "GET", "/api/v1/jobs/nope", nil), 404, "not_found", "")
}
