package jobs

import "time"

// CanCancel checks whether actor a may cancel job j: only the requester or a holder of
// the manage_jobs permission (admin), and
// only while the agent is not doing token work: before the job runs (pending_approval,
// approved, dispatched), while the agent waits for the token (running, with no step yet
// or waiting_for_token as the last one), and while it waits for its certificate
// (awaiting_certificate). The agent is told and stops at its next safe point; see the
// package doc.
func CanCancel(j Job, a Actor) error {
	if err := knownStates(j.State); err != nil {
		return err
	}
	if !Cancellable(j.State, j.Progress) || (j.Kind == KindRevoke && j.State == StateRunning) {
		why := "the agent is working on the token (" + string(j.Progress.Current) + "); it can be cancelled while waiting for the token or for its certificate"
		switch {
		case Terminal(j.State):
			why = "it has ended"
		case j.State == StateInstalling:
			why = "the agent is writing its certificate to the token"
		}
		return errorf(CodeNotCancellable, "job %s is %s and can no longer be cancelled: %s", j.ID, j.State, why)
	}
	if a.ID == "" || (a.ID != j.RequesterID && !a.Can(PermManageJobs)) {
		return errorf(CodeNotPermitted, "%q may not cancel job %s: only its requester or a role with the %s permission (admin) may", a.name(), j.ID, PermManageJobs)
	}
	return nil
}

// Cancellable reports whether a job in state s with progress p can be cancelled (by a
// person allowed to): open, waiting for its token, or waiting for its certificate.
func Cancellable(s State, p Progress) bool {
	switch s {
	case StatePendingApproval, StateApproved, StateDispatched, StateAwaitingCertificate:
		return true
	case StateRunning:
		return p.Current == "" || p.Current == StepWaitingForToken
	}
	return false
}

// CanRetry checks whether actor a may retry the failed job j at time now. A retry moves it
// failed → approved with Attempt+1, so its request-gate approvals must still be valid
// (bound to the same hash, not lapsed); otherwise a new request is needed. The requester,
// a holder of the request permission (helpdesk, admin) may retry.
func CanRetry(p Policy, j Job, a Actor, now time.Time) error {
	if err := knownStates(j.State); err != nil {
		return err
	}
	if j.State != StateFailed {
		return errorf(CodeNotRetryable, "job %s is %s; only a failed job can be retried", j.ID, j.State)
	}
	if a.ID == "" || (a.ID != j.RequesterID && !a.Can(PermRequest)) {
		return errorf(CodeNotPermitted, "%q may not retry job %s: only its requester or a role with the %s permission (helpdesk, admin) may", a.name(), j.ID, PermRequest)
	}
	out, err := Evaluate(p, j, now)
	if err != nil {
		return err
	}
	if out.Status != StatusApproved {
		return errorf(CodeApprovalExpired, "job %s can no longer be retried: its approvals are no longer valid (%d of %d); file a new request", j.ID, out.Approvals, out.Required)
	}
	return nil
}

// Open reports whether a job in state s can still be superseded or cancelled: it has not
// ended and not started running.
func Open(s State) bool {
	return s == StatePendingApproval || s == StateApproved || s == StateDispatched
}

// Supersedes reports whether the new request supersedes the existing job old: same
// holder, same profile, same target (agent and token serial, an empty serial meaning "any
// token at that agent"), old still open, and both run on an agent. The kind is not
// compared (the latest request for a holder's token under a profile is the one that
// counts, whatever it asks), except that a recovery neither replaces nor is replaced.
func Supersedes(newJob, old Job) bool {
	return newJob.ID != old.ID &&
		Open(old.State) &&
		OnAgent(newJob.Kind) && OnAgent(old.Kind) &&
		// A recovery names its own escrowed key: a new request for the token does not
		// replace it, nor does it replace anything.
		newJob.Kind != KindRecoverKey && old.Kind != KindRecoverKey &&
		newJob.HolderID != "" && newJob.HolderID == old.HolderID &&
		newJob.ProfileName != "" && newJob.ProfileName == old.ProfileName &&
		newJob.TargetAgentID != "" && newJob.TargetAgentID == old.TargetAgentID &&
		newJob.TokenSerial == old.TokenSerial
}
