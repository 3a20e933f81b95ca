package jobs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCanCancel(t *testing.T) {
	requester := Actor{ID: "helpdesk-1", Roles: []Role{RoleHelpdesk}}
	colleague := Actor{ID: "helpdesk-2", Roles: []Role{RoleHelpdesk, RoleApprover}}
	for _, s := range States() {
		for _, tc := range []struct {
			name  string
			actor Actor
		}{{"requester", requester}, {"admin", admin}, {"colleague", colleague}, {"nobody", Actor{}}} {
			j := pendingJob()
			j.State = s
			err := CanCancel(j, tc.actor)
			// Running with no step yet: the agent is looking for the token.
			open := s == StatePendingApproval || s == StateApproved || s == StateDispatched || s == StateRunning ||
				s == StateAwaitingCertificate
			allowed := tc.name == "requester" || tc.name == "admin"
			switch {
			case !open:
				if !errors.Is(err, ErrNotCancellable) {
					t.Errorf("%s cancels in %s: %v, want not_cancellable", tc.name, s, err)
				}
			case !allowed:
				if !errors.Is(err, ErrNotPermitted) {
					t.Errorf("%s cancels in %s: %v, want not_permitted", tc.name, s, err)
				}
			case err != nil:
				t.Errorf("%s cancels in %s: %v", tc.name, s, err)
			}
			// Every cancel CanCancel allows is a legal edge of the table.
			if err == nil {
				if terr := CanTransitionKind(j.Kind, s, StateCancelled); terr != nil {
					t.Errorf("cancel allowed in %s but the table refuses it: %v", s, terr)
				}
			}
		}
	}
}

// TestCanCancelRunning: a running job is cancelled only while the agent waits for its
// token, never in the middle of token work.
func TestCanCancelRunning(t *testing.T) {
	requester := Actor{ID: "helpdesk-1", Roles: []Role{RoleHelpdesk}}
	for _, tc := range []struct {
		current Step
		ok      bool
	}{
		{"", true}, {StepWaitingForToken, true}, {StepTokenFound, false}, {StepInitialising, false},
		{StepKeyGenerated, false}, {StepCSRSent, false},
	} {
		j := pendingJob()
		j.State = StateRunning
		j.Progress = Progress{Current: tc.current, Highest: StepCSRSent}
		err := CanCancel(j, requester)
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrNotCancellable)) {
			t.Errorf("running at %q: %v, want allowed %v", tc.current, err, tc.ok)
		}
	}
	j := pendingJob()
	j.State = StateInstalling
	if err := CanCancel(j, requester); !errors.Is(err, ErrNotCancellable) || !strings.Contains(err.Error(), "writing its certificate") {
		t.Errorf("installing: %v", err)
	}
}

func TestCanRetry(t *testing.T) {
	p := orgPolicy(1)
	failed := func(mod func(j *Job)) Job {
		j := pendingJob()
		j.State = StateFailed
		j.Decisions = []Decision{{ActorID: "appr-a", Gate: GateRequest, Verdict: VerdictApprove, BindingHash: "h1", Attempt: 1, At: t0.Add(time.Hour)}}
		if mod != nil {
			mod(&j)
		}
		return j
	}
	requester := Actor{ID: "helpdesk-1", Roles: []Role{RoleHelpdesk}}
	otherHelpdesk := Actor{ID: "helpdesk-2", Roles: []Role{RoleHelpdesk}}
	tests := []struct {
		name  string
		job   Job
		actor Actor
		at    time.Time
		want  error
	}{
		{"requester", failed(nil), requester, t0.Add(day), nil},
		{"other helpdesk", failed(nil), otherHelpdesk, t0.Add(day), nil},
		{"admin", failed(nil), admin, t0.Add(day), nil},
		{"approver only", failed(nil), approverA, t0.Add(day), ErrNotPermitted},
		{"auditor", failed(nil), Actor{ID: "aud", Roles: []Role{RoleAuditor}}, t0.Add(day), ErrNotPermitted},
		{"approval lapsed", failed(nil), requester, t0.Add(time.Hour + 3*day), ErrApprovalExpired},
		{"request edited since", failed(func(j *Job) { j.BindingHash = "h2" }), requester, t0.Add(day), ErrApprovalExpired},
		{"not failed", failed(func(j *Job) { j.State = StateRunning }), requester, t0.Add(day), ErrNotRetryable},
		{"rejected", failed(func(j *Job) { j.State = StateRejected }), requester, t0.Add(day), ErrNotRetryable},
	}
	for _, tt := range tests {
		err := CanRetry(p, tt.job, tt.actor, tt.at)
		if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	if err := CanTransition(StateFailed, StateApproved); err != nil {
		t.Errorf("retry edge missing from the table: %v", err)
	}
}

func TestSupersedes(t *testing.T) {
	old := pendingJob()
	old.TokenSerial = "0042"
	newReq := old
	newReq.ID = "job-2"
	tests := []struct {
		name string
		mod  func(n, o *Job)
		want bool
	}{
		{"same holder, profile, target", nil, true},
		{"old approved", func(n, o *Job) { o.State = StateApproved }, true},
		{"old dispatched", func(n, o *Job) { o.State = StateDispatched }, true},
		{"other kind, same target", func(n, o *Job) { n.Kind = KindRenew }, true},
		{"old running", func(n, o *Job) { o.State = StateRunning }, false},
		{"old awaiting certificate", func(n, o *Job) { o.State = StateAwaitingCertificate }, false},
		{"old ended", func(n, o *Job) { o.State = StateFailed }, false},
		{"other holder", func(n, o *Job) { n.HolderID = "holder-2" }, false},
		{"other profile", func(n, o *Job) { n.ProfileName = "email-signing" }, false},
		{"other agent", func(n, o *Job) { n.TargetAgentID = "ws-2" }, false},
		{"other token", func(n, o *Job) { n.TokenSerial = "0043" }, false},
		{"any token vs a given token", func(n, o *Job) { n.TokenSerial = "" }, false},
		{"same job", func(n, o *Job) { n.ID = o.ID }, false},
		{"revoke", func(n, o *Job) { n.Kind = KindRevoke }, false},
		{"an issue for a token a recovery targets", func(n, o *Job) { o.Kind = KindRecoverKey }, false},
		{"a recovery for a token an issue targets", func(n, o *Job) { n.Kind = KindRecoverKey }, false},
		{"no holder", func(n, o *Job) { n.HolderID, o.HolderID = "", "" }, false},
		{"no agent", func(n, o *Job) { n.TargetAgentID, o.TargetAgentID = "", "" }, false},
	}
	for _, tt := range tests {
		n, o := newReq, old
		if tt.mod != nil {
			tt.mod(&n, &o)
		}
		if got := Supersedes(n, o); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
		if Supersedes(n, o) {
			if err := CanTransitionKind(o.Kind, o.State, StateSuperseded); err != nil {
				t.Errorf("%s: supersede decided but the table refuses it: %v", tt.name, err)
			}
		}
	}
}
