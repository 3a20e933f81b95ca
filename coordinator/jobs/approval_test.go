package jobs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

func orgPolicy(required int) Policy {
	return Policy{Required: required, Roles: []Role{RoleApprover}, Scope: ScopeOrganization, ExpiresAfter: 3 * day}
}

func pendingJob() Job {
	return Job{
		ID: "job-1", Kind: KindIssue, State: StatePendingApproval, Attempt: 1,
		RequesterID: "helpdesk-1", HolderID: "holder-1", HolderOrganization: "org-a",
		ProfileName: "smartcard-logon", TargetAgentID: "ws-1", BindingHash: "h1", StateSince: t0,
	}
}

var (
	approverA  = Actor{ID: "appr-a", Roles: []Role{RoleApprover}, Organization: "org-a"}
	approverA2 = Actor{ID: "appr-a2", Roles: []Role{RoleApprover, RoleHelpdesk}, Organization: "org-a"}
	approverB  = Actor{ID: "appr-b", Roles: []Role{RoleApprover}, Organization: "org-b"}
	caOp       = Actor{ID: "ca-1", Roles: []Role{RoleCAOperator}}
	admin      = Actor{ID: "admin-1", Roles: []Role{RoleAdmin}, Organization: "org-a"}
	approve    = Vote{Verdict: VerdictApprove, BindingHash: "h1"}
)

func TestDecideDenials(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		job    func(j *Job)
		actor  Actor
		vote   Vote
		at     time.Time
		code   Code
		wantIn string
	}{
		{name: "requester approves own request", actor: Actor{ID: "helpdesk-1", Roles: []Role{RoleApprover}, Organization: "org-a"},
			code: CodeSelfApproval, wantIn: "requested job job-1"},
		{name: "holder approves own certificate", actor: Actor{ID: "holder-1", Roles: []Role{RoleApprover}, Organization: "org-a"},
			code: CodeSelfApproval, wantIn: "holder"},
		{name: "requester rejects own request", actor: Actor{ID: "helpdesk-1", Roles: []Role{RoleApprover}, Organization: "org-a"},
			vote: Vote{Verdict: VerdictReject, BindingHash: "h1", Reason: "oops"}, code: CodeSelfApproval, wantIn: "cancel"},
		{name: "approves twice", actor: approverA, job: func(j *Job) {
			j.Decisions = []Decision{{ActorID: "appr-a", Gate: GateRequest, Verdict: VerdictApprove, BindingHash: "h1", Attempt: 1, At: t0.Add(time.Hour)}}
		}, policy: orgPolicy(2), code: CodeAlreadyDecided, wantIn: "already decided"},
		{name: "role missing", actor: Actor{ID: "hd-2", Roles: []Role{RoleHelpdesk}, Organization: "org-a"},
			code: CodeRoleNotPermitted, wantIn: "approver"},
		{name: "admin is not an approver unless the policy says so", actor: admin, code: CodeRoleNotPermitted},
		{name: "other organisation", actor: approverB, code: CodeOutOfScope, wantIn: "another organisation"},
		{name: "approver without organisation", actor: Actor{ID: "x", Roles: []Role{RoleApprover}}, code: CodeOutOfScope},
		{name: "request expired", actor: approverA, at: t0.Add(3 * day), code: CodeApprovalExpired, wantIn: "expired at 2026-03-05T09:00:00Z"},
		{name: "stale view", actor: approverA, vote: Vote{Verdict: VerdictApprove, BindingHash: "h0"}, code: CodeBindingMismatch, wantIn: "changed"},
		{name: "not pending", actor: approverA, job: func(j *Job) { j.State = StateApproved }, code: CodeNotPending, wantIn: "approved"},
		{name: "already approved", actor: approverA2, policy: orgPolicy(1), job: func(j *Job) {
			j.Decisions = []Decision{{ActorID: "appr-a", Gate: GateRequest, Verdict: VerdictApprove, BindingHash: "h1", At: t0}}
		}, code: CodeNotPending, wantIn: "already approved"},
		{name: "rejection without reason", actor: approverA, vote: Vote{Verdict: VerdictReject, BindingHash: "h1", Reason: "  "}, code: CodeReasonRequired},
		{name: "awaiting certificate without CA gate", actor: caOp, job: func(j *Job) { j.State = StateAwaitingCertificate }, code: CodeNotPending, wantIn: "no CA-operator gate"},
		{name: "unknown verdict", actor: approverA, vote: Vote{Verdict: "maybe", BindingHash: "h1"}, code: CodeInvalidInput, wantIn: `"maybe"`},
		{name: "no binding hash in vote", actor: approverA, vote: Vote{Verdict: VerdictApprove}, code: CodeInvalidInput, wantIn: "binding hash"},
		{name: "job without requester", actor: approverA, job: func(j *Job) { j.RequesterID = "" }, code: CodeInvalidInput, wantIn: "no requester"},
		{name: "anonymous actor", actor: Actor{Roles: []Role{RoleApprover}}, code: CodeInvalidInput, wantIn: "no ID"},
		{name: "invalid policy", actor: approverA, policy: Policy{Required: 1, Scope: ScopeAny, ExpiresAfter: day}, code: CodeInvalidInput, wantIn: "no role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.policy
			if p.Required == 0 && p.Roles == nil && p.ExpiresAfter == 0 {
				p = orgPolicy(1)
			}
			j := pendingJob()
			if tt.job != nil {
				tt.job(&j)
			}
			v := tt.vote
			if v.Verdict == "" && v.BindingHash == "" {
				v = approve
			}
			at := tt.at
			if at.IsZero() {
				at = t0.Add(time.Hour)
			}
			_, _, err := Decide(p, j, tt.actor, v, at)
			var je *Error
			if !errors.As(err, &je) || je.Code != tt.code {
				t.Fatalf("got %v, want code %s", err, tt.code)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("message %q lacks %q", err, tt.wantIn)
			}
		})
	}
}

// record applies Decide and appends the decision, as the store would.
func record(t *testing.T, p Policy, j *Job, a Actor, v Vote, at time.Time) Outcome {
	t.Helper()
	d, out, err := Decide(p, *j, a, v, at)
	if err != nil {
		t.Fatalf("%s %s: %v", a.ID, v.Verdict, err)
	}
	if d.ActorID != a.ID || d.Verdict != v.Verdict || d.BindingHash != v.BindingHash || !d.At.Equal(at) || d.Attempt != j.Attempt {
		t.Fatalf("decision %+v does not record the vote", d)
	}
	j.Decisions = append(j.Decisions, d)
	return out
}

func TestTwoApprovalsAnyScope(t *testing.T) {
	p := Policy{Required: 2, Roles: []Role{RoleApprover}, Scope: ScopeAny, ExpiresAfter: 3 * day}
	j := pendingJob()
	out := record(t, p, &j, approverB, approve, t0.Add(time.Hour))
	if out.Status != StatusPending || out.Approvals != 1 || out.Required != 2 {
		t.Fatalf("after one approval: %+v", out)
	}
	if !out.ValidUntil.Equal(t0.Add(3 * day)) {
		t.Errorf("pending request valid until %v, want %v", out.ValidUntil, t0.Add(3*day))
	}
	out = record(t, p, &j, approverA, approve, t0.Add(2*time.Hour))
	if out.Status != StatusApproved || out.Approvals != 2 {
		t.Fatalf("after two approvals: %+v", out)
	}
	// The gate holds until the older approval lapses.
	if want := t0.Add(time.Hour + 3*day); !out.ValidUntil.Equal(want) {
		t.Errorf("approved until %v, want %v", out.ValidUntil, want)
	}

	// Once approved and dispatched, the job expires when an approval lapses before it runs.
	j.State, j.StateSince = StateDispatched, t0.Add(3*time.Hour)
	for _, tc := range []struct {
		at   time.Time
		want bool
	}{
		{t0.Add(3 * day), false},
		{t0.Add(time.Hour + 3*day - time.Nanosecond), false},
		{t0.Add(time.Hour + 3*day), true},
	} {
		due, err := DueForExpiry(p, j, tc.at)
		if err != nil || due != tc.want {
			t.Errorf("DueForExpiry at %v = %v, %v; want %v", tc.at, due, err, tc.want)
		}
	}
	// Running jobs are not expired by lapsing approvals.
	j.State = StateRunning
	if due, _ := DueForExpiry(p, j, t0.Add(30*day)); due {
		t.Error("a running job is due for expiry")
	}
}

func TestOneRejectionRejects(t *testing.T) {
	p := orgPolicy(2)
	j := pendingJob()
	record(t, p, &j, approverA, approve, t0.Add(time.Hour))
	out := record(t, p, &j, approverA2, Vote{Verdict: VerdictReject, BindingHash: "h1", Reason: "wrong workstation"}, t0.Add(2*time.Hour))
	if out.Status != StatusRejected {
		t.Fatalf("after a rejection: %+v", out)
	}
	if _, _, err := Decide(p, j, Actor{ID: "appr-a3", Roles: []Role{RoleApprover}, Organization: "org-a"}, approve, t0.Add(3*time.Hour)); !errors.Is(err, ErrNotPending) {
		t.Fatalf("approval after rejection: %v, want not_pending", err)
	}
}

func TestEditVoidsApprovals(t *testing.T) {
	p := orgPolicy(2)
	j := pendingJob()
	record(t, p, &j, approverA, approve, t0.Add(time.Hour))
	// The request is edited: new binding hash, expiry clock restarted.
	j.BindingHash, j.StateSince = "h2", t0.Add(2*time.Hour)
	out, err := Evaluate(p, j, t0.Add(2*time.Hour))
	if err != nil || out.Approvals != 0 || out.Status != StatusPending {
		t.Fatalf("after edit: %+v, %v", out, err)
	}
	// The earlier approver may decide again, on the new version only.
	if _, _, err := Decide(p, j, approverA, approve, t0.Add(3*time.Hour)); !errors.Is(err, ErrBindingMismatch) {
		t.Fatalf("approval of the old version: %v, want binding_mismatch", err)
	}
	v2 := Vote{Verdict: VerdictApprove, BindingHash: "h2"}
	record(t, p, &j, approverA, v2, t0.Add(3*time.Hour))
	out = record(t, p, &j, approverA2, v2, t0.Add(4*time.Hour))
	if out.Status != StatusApproved {
		t.Fatalf("after re-approval: %+v", out)
	}
	// A request expiring three days after the edit, not after creation.
	j2 := pendingJob()
	j2.BindingHash, j2.StateSince = "h2", t0.Add(2*day)
	if due, _ := DueForExpiry(p, j2, t0.Add(3*day)); due {
		t.Error("edited request expires on its creation clock")
	}
}

func TestNoApprovalNeeded(t *testing.T) {
	out, err := Evaluate(Policy{}, pendingJob(), t0)
	if err != nil || out.Status != StatusApproved || !out.ValidUntil.IsZero() {
		t.Fatalf("policy without approvals: %+v, %v", out, err)
	}
	if _, _, err := Decide(Policy{}, pendingJob(), approverA, approve, t0); !errors.Is(err, ErrNotPending) {
		t.Fatalf("deciding on a request that needs no approval: %v, want not_pending", err)
	}
	j := pendingJob()
	j.State = StateApproved
	if due, _ := DueForExpiry(Policy{}, j, t0.Add(1000*day)); due {
		t.Error("an approved job without approval gate expires")
	}
}

func TestPendingRequestExpiry(t *testing.T) {
	p := orgPolicy(1)
	j := pendingJob()
	for _, tc := range []struct {
		at   time.Time
		want Status
	}{
		{t0, StatusPending},
		{t0.Add(3*day - time.Nanosecond), StatusPending},
		{t0.Add(3 * day), StatusExpired},
	} {
		out, err := Evaluate(p, j, tc.at)
		if err != nil || out.Status != tc.want {
			t.Errorf("at %v: %+v, %v; want %s", tc.at, out, err, tc.want)
		}
		due, _ := DueForExpiry(p, j, tc.at)
		if due != (tc.want == StatusExpired) {
			t.Errorf("DueForExpiry at %v = %v", tc.at, due)
		}
	}
}

func TestApprovalsFromOneActorCountOnce(t *testing.T) {
	// Duplicate rows (a replayed write) must not make one approver count twice.
	p := orgPolicy(2)
	j := pendingJob()
	d := Decision{ActorID: "appr-a", Gate: GateRequest, Verdict: VerdictApprove, BindingHash: "h1", Attempt: 1, At: t0.Add(time.Hour)}
	j.Decisions = []Decision{d, d}
	out, err := Evaluate(p, j, t0.Add(2*time.Hour))
	if err != nil || out.Approvals != 1 || out.Status != StatusPending {
		t.Fatalf("%+v, %v", out, err)
	}
}

func TestCAOperatorGate(t *testing.T) {
	p := Policy{Required: 2, Roles: []Role{RoleApprover, RoleCAOperator}, Scope: ScopeAny, ExpiresAfter: 2 * day, CAOperatorRequired: true}
	j := pendingJob()
	bothRoles := Actor{ID: "dual", Roles: []Role{RoleApprover, RoleCAOperator}, Organization: "org-a"}
	record(t, p, &j, approverA, approve, t0.Add(time.Hour))
	if out := record(t, p, &j, bothRoles, approve, t0.Add(2*time.Hour)); out.Status != StatusApproved {
		t.Fatalf("request gate: %+v", out)
	}
	j.State, j.StateSince = StateAwaitingCertificate, t0.Add(5*time.Hour)

	out, err := Evaluate(p, j, t0.Add(5*time.Hour))
	if err != nil || out.Gate != GateCAOperator || out.Status != StatusPending || out.Required != 1 {
		t.Fatalf("CA gate before decision: %+v, %v", out, err)
	}
	at := t0.Add(6 * time.Hour)
	for _, tc := range []struct {
		name  string
		actor Actor
		code  Code
	}{
		{"approver without ca_operator", approverA2, CodeRoleNotPermitted},
		{"passed the request gate already", bothRoles, CodeAlreadyDecided},
		{"requester", Actor{ID: "helpdesk-1", Roles: []Role{RoleCAOperator}}, CodeSelfApproval},
	} {
		if _, _, err := Decide(p, j, tc.actor, approve, at); !errors.Is(err, &Error{Code: tc.code}) {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.code)
		}
	}
	// CA operators are not bound to the holder's organisation.
	out = record(t, p, &j, caOp, approve, at)
	if out.Status != StatusApproved || out.Gate != GateCAOperator {
		t.Fatalf("CA gate after ca_operator approval: %+v", out)
	}
	if due, _ := DueForExpiry(p, j, t0.Add(30*day)); due {
		t.Error("an approved CA gate expires")
	}

	// A retry is a new attempt: the CA gate must be passed again, by the same operator if
	// they like, while the request-gate approvals still hold.
	j.State, j.Attempt, j.StateSince = StateAwaitingCertificate, 2, t0.Add(8*time.Hour)
	out, _ = Evaluate(p, j, t0.Add(8*time.Hour))
	if out.Status != StatusPending {
		t.Fatalf("CA gate of attempt 2 before decision: %+v", out)
	}
	if out = record(t, p, &j, caOp, approve, t0.Add(9*time.Hour)); out.Status != StatusApproved {
		t.Fatalf("CA gate of attempt 2: %+v", out)
	}
}

func TestCAOperatorGateRejectAndExpire(t *testing.T) {
	p := Policy{CAOperatorRequired: true, ExpiresAfter: day}
	j := pendingJob()
	j.State = StateAwaitingCertificate
	out := record(t, p, &j, caOp, Vote{Verdict: VerdictReject, BindingHash: "h1", Reason: "subject looks wrong"}, t0.Add(time.Hour))
	if out.Status != StatusRejected {
		t.Fatalf("after CA rejection: %+v", out)
	}
	j2 := pendingJob()
	j2.State = StateAwaitingCertificate
	if due, _ := DueForExpiry(p, j2, t0.Add(day)); !due {
		t.Error("undecided CA gate is not due for expiry after expires_after")
	}
	if _, _, err := Decide(p, j2, caOp, approve, t0.Add(day)); !errors.Is(err, ErrApprovalExpired) {
		t.Errorf("CA approval after expiry: %v", err)
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		p      Policy
		wantIn string // "" = valid
	}{
		{"none", Policy{}, ""},
		{"one approver", orgPolicy(1), ""},
		{"CA only", Policy{CAOperatorRequired: true, ExpiresAfter: day}, ""},
		{"negative", Policy{Required: -1}, "outside 0..10"},
		{"too many", Policy{Required: 11, Roles: []Role{RoleApprover}, Scope: ScopeAny, ExpiresAfter: day}, "outside 0..10"},
		{"auditor", Policy{Required: 1, Roles: []Role{RoleAuditor}, Scope: ScopeAny, ExpiresAfter: day}, "read-only"},
		{"malformed role", Policy{Required: 1, Roles: []Role{"Boss!"}, Scope: ScopeAny, ExpiresAfter: day}, `"Boss!"`},
		{"bad scope", Policy{Required: 1, Roles: []Role{RoleApprover}, Scope: "galaxy", ExpiresAfter: day}, `"galaxy"`},
		{"no expiry", Policy{Required: 1, Roles: []Role{RoleApprover}, Scope: ScopeAny}, "expires_after"},
		{"CA without expiry", Policy{CAOperatorRequired: true}, "expires_after"},
	}
	for _, tt := range tests {
		err := tt.p.Validate()
		if tt.wantIn == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), tt.wantIn) {
			t.Errorf("%s: got %v, want invalid_input naming %q", tt.name, err, tt.wantIn)
		}
	}
}

// A rollout's job passed its request gate by the rollout's approval: it carries no
// decisions of its own, and it does not lapse while it waits for its agent; the
// CA-operator gate still applies to it.
func TestRolloutJobApprovedByItsRollout(t *testing.T) {
	p := orgPolicy(2)
	p.CAOperatorRequired = true
	j := pendingJob()
	j.State, j.Rollout = StateApproved, "rollout-1"
	for _, at := range []time.Time{t0, t0.Add(30 * day)} {
		out, err := Evaluate(p, j, at)
		if err != nil || out.Status != StatusApproved || !out.ValidUntil.IsZero() {
			t.Fatalf("at %s: %+v, %v; want approved without a lapse", at, out, err)
		}
		if due, err := DueForExpiry(p, j, at); err != nil || due {
			t.Fatalf("at %s: due for expiry %v, %v", at, due, err)
		}
	}
	j.Rollout = ""
	if due, _ := DueForExpiry(p, j, t0.Add(30*day)); !due {
		t.Fatal("a job without a rollout and without approvals must lapse")
	}
	j.Rollout, j.State = "rollout-1", StateAwaitingCertificate
	out, err := Evaluate(p, j, t0)
	if err != nil || out.Gate != GateCAOperator || out.Status != StatusPending {
		t.Fatalf("CA-operator gate of a rollout job: %+v, %v; want pending", out, err)
	}
}
