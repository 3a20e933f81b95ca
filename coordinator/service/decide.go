package service

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// MaxReasonLen bounds the reason of a decision or a cancellation, in bytes of UTF-8: the
// protocol's bound on text, since a cancel carries its reason to the agent whole.
const MaxReasonLen = protocol.MaxTextLen

// checkReason checks a reason: text as checkText wants it, at most MaxReasonLen bytes.
func checkReason(field, v string) error {
	if err := checkText(field, v, MaxReasonLen); err != nil {
		return err
	}
	if len(v) > MaxReasonLen {
		return badRequest(field, "is %d bytes long in UTF-8, at most %d: shorten it", len(v), MaxReasonLen)
	}
	return nil
}

// requiredReason checks a reason that must be given (checkReason, and not blank) and
// returns it trimmed.
func requiredReason(field, v string) (string, error) {
	if err := checkReason(field, v); err != nil {
		return "", err
	}
	if v = strings.TrimSpace(v); v == "" {
		return "", badRequest(field, "is required: say why, for the audit log")
	}
	return v, nil
}

// DecisionRequest is an approver's decision on a job.
type DecisionRequest struct {
	Reason string
	// BindingHash is the job's binding hash as the approver reviewed it. When given and the
	// job changed since, the decision is refused (binding_mismatch); empty means the job
	// as it is now.
	BindingHash string
}

func (r DecisionRequest) validate() error {
	if err := checkReason("reason", r.Reason); err != nil {
		return err
	}
	if r.BindingHash != "" && len(r.BindingHash) != 64 {
		return badRequest("binding_hash", "want the 64 hex digits of the job's binding_hash")
	}
	return nil
}

// Approve records an approval: at the request gate of a pending job, or at the CA-operator
// gate of a job awaiting its certificate. Enough approvals move the job to approved; a
// passed CA-operator gate is handed to the Issuer.
func (s *Service) Approve(ctx context.Context, by Actor, jobID string, r DecisionRequest) (JobDetail, error) {
	return s.decide(ctx, by.user, jobID, jobs.VerdictApprove, r)
}

// Reject records a rejection, which needs a reason; one rejection rejects the job.
func (s *Service) Reject(ctx context.Context, by Actor, jobID string, r DecisionRequest) (JobDetail, error) {
	return s.decide(ctx, by.user, jobID, jobs.VerdictReject, r)
}

func (s *Service) decide(ctx context.Context, actor store.User, jobID string, verdict jobs.Verdict, r DecisionRequest) (JobDetail, error) {
	if err := r.validate(); err != nil {
		return JobDetail{}, err
	}
	op := string(verdict) + " job"
	var (
		out     store.Job
		pending bool
	)
	err := s.update(ctx, func(t *txn) error {
		pending = false
		j, err := t.GetJob(ctx, jobID)
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeNotFound, "", "no job %q", jobID)
		}
		if err != nil {
			return err
		}
		out = j
		vote := jobs.Vote{Verdict: verdict, BindingHash: r.BindingHash, Reason: strings.TrimSpace(r.Reason)}
		vc, err := s.checkVote(ctx, t, actor, j, vote, t.now)
		if err != nil {
			return err
		}
		if vc.refusal != nil {
			return t.refuse(ctx, actor, op, j.ID, "", vc.refusal)
		}
		policy, d, outcome := vc.policy, vc.decision, vc.outcome
		a := store.Approval{JobID: j.ID, Gate: d.Gate, ApproverID: actor.ID, Verdict: d.Verdict, BoundHash: d.BindingHash,
			Attempt: d.Attempt, Reason: d.Reason, At: t.now}
		if d.Gate == jobs.GateRequest && policy.ExpiresAfter > 0 {
			a.Expires = t.now.Add(policy.ExpiresAfter)
		}
		if _, err := t.AddApproval(ctx, a); err != nil {
			// A concurrent decision by the same approver: read again, Decide says so.
			return casLost(err)
		}
		action := audit.ActionJobApproved
		if verdict == jobs.VerdictReject {
			action = audit.ActionJobRejected
		}
		if err := t.audit(ctx, audit.Entry{Actor: actor.ID, Action: action, JobID: j.ID, Reason: d.Reason,
			Details: audit.Details("gate", string(d.Gate), "binding_hash", d.BindingHash, "attempt", d.Attempt,
				"approvals", outcome.Approvals, "required", outcome.Required, "status", string(outcome.Status))}); err != nil {
			return err
		}
		t.events = append(t.events, func(o Observer) { o.Decision(d.Gate, d.Verdict) })
		t.jobsChanged(j.ID)
		out, pending, err = t.apply(ctx, j, outcome, actor.ID)
		return err
	})
	if err != nil {
		return JobDetail{}, err
	}
	if pending {
		// Two approvers deciding at once on PostgreSQL may each count only their own
		// approval; whoever commits last sees both here and moves the job on.
		if j, err := s.settleJob(ctx, jobID); err != nil {
			s.log.Warn().Err(err).Str("job", jobID).Msg("settling job after a decision")
		} else {
			out = j
		}
	}
	return s.jobDetail(ctx, out)
}

// voteCheck is what the approval rules say of a vote on a job as it stands.
type voteCheck struct {
	policy   jobs.Policy
	decision jobs.Decision // the decision to record
	outcome  jobs.Outcome  // the gate's outcome with the decision counted
	refusal  error         // the rules refuse the vote; audited when it was cast
}

// checkVote applies the approval rules to actor's vote on j: the job's profile must still
// be the one in force, then jobs.Decide. Deciding and listing what awaits a person's
// decision both ask it, so the list never shows a job its reader could not decide on.
// An empty vote binding hash means the job as it is.
func (s *Service) checkVote(ctx context.Context, r store.Reader, actor store.User, j store.Job, vote jobs.Vote, now time.Time) (voteCheck, error) {
	p, sp, err := s.profileOfJob(ctx, r, j)
	if err != nil {
		return voteCheck{}, internal(err)
	}
	if cur, err := r.GetProfile(ctx, j.ProfileName); err != nil {
		return voteCheck{}, err
	} else if cur.ContentHash != sp.ContentHash {
		// The approval would be bound to a profile that is no longer the one in force.
		return voteCheck{refusal: newErr(CodeBindingMismatch, "",
			"profile %s changed (version %d) since job %s was queued under version %d; queue the job again", j.ProfileName, cur.Version, j.ID, sp.Version)}, nil
	}
	approvals, err := r.ListApprovals(ctx, j.ID)
	if err != nil {
		return voteCheck{}, err
	}
	policy := p.Approval.Policy()
	if vote.BindingHash == "" {
		vote.BindingHash = j.BindingHash
	}
	acc, err := accessOf(ctx, r, actor)
	if err != nil {
		return voteCheck{}, err
	}
	who := acc.jobActor(j.OrganizationID)
	d, outcome, err := jobs.Decide(policy, j.Rules(j.OrganizationID, approvals), who, vote, now)
	var je *jobs.Error
	if errors.As(err, &je) && je.Code != jobs.CodeInvalidInput {
		return voteCheck{policy: policy, refusal: err}, nil
	}
	if err != nil {
		return voteCheck{}, err
	}
	if d.Gate == jobs.GateCAOperator {
		if refusal, err := rolloutCAGateRefusal(ctx, r, actor, j); err != nil || refusal != nil {
			return voteCheck{policy: policy, refusal: refusal}, err
		}
	}
	return voteCheck{policy: policy, decision: d, outcome: outcome}, nil
}

// apply carries out a gate's outcome; it reports whether the gate is still pending.
func (t *txn) apply(ctx context.Context, j store.Job, o jobs.Outcome, actor string) (store.Job, bool, error) {
	switch {
	case o.Status == jobs.StatusRejected:
		nj, err := t.transition(ctx, j, jobs.StateRejected, store.JobChange{Actor: actor,
			Reason: fmt.Sprintf("rejected at the %s gate", o.Gate)}, "")
		if err == nil {
			err = t.notifyDecided(ctx, nj, o.Gate, jobs.VerdictReject)
		}
		return nj, false, err
	case o.Status == jobs.StatusApproved && o.Gate == jobs.GateRequest:
		nj, err := t.transition(ctx, j, jobs.StateApproved, store.JobChange{Actor: actor,
			Reason: fmt.Sprintf("%d of %d approvals", o.Approvals, o.Required)}, "")
		if err == nil {
			err = t.notifyDecided(ctx, nj, o.Gate, jobs.VerdictApprove)
		}
		return nj, false, err
	case o.Status == jobs.StatusApproved && o.Gate == jobs.GateCAOperator:
		if err := t.s.issuer.CAGatePassed(ctx, &JobTx{Tx: t.Tx, t: t}, j); err != nil {
			return store.Job{}, false, fmt.Errorf("issuer: job %s: %w", j.ID, err)
		}
		nj, err := t.GetJob(ctx, j.ID)
		return nj, false, err
	}
	return j, o.Status == jobs.StatusPending, nil
}

// Cancel cancels a job that has not started running: its requester or an admin may.
func (s *Service) Cancel(ctx context.Context, by Actor, jobID, reason string) (JobDetail, error) {
	actor := by.user
	if err := checkReason("reason", reason); err != nil {
		return JobDetail{}, err
	}
	reason = strings.TrimSpace(reason)
	if reason == "" {
		reason = "cancelled by " + actor.Username
	}
	var out store.Job
	err := s.update(ctx, func(t *txn) error {
		j, err := t.GetJob(ctx, jobID)
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeNotFound, "", "no job %q", jobID)
		}
		if err != nil {
			return err
		}
		out = j
		acc, err := accessOf(ctx, t, actor)
		if err != nil {
			return err
		}
		who := acc.jobActor(j.OrganizationID)
		if err := jobs.CanCancel(j.Rules(j.OrganizationID, nil), who); err != nil {
			return t.refuse(ctx, actor, "cancel job", j.ID, "", err)
		}
		out, err = t.transition(ctx, j, jobs.StateCancelled, store.JobChange{Actor: actor.ID, Reason: reason}, audit.ActionJobCancelled)
		return err
	})
	if err != nil {
		return JobDetail{}, err
	}
	return s.jobDetail(ctx, out)
}

// settleJob applies, in its own transaction, what the job's gates and deadline say now:
// approved or rejected by the decisions recorded, or expired.
func (s *Service) settleJob(ctx context.Context, jobID string) (store.Job, error) {
	var out store.Job
	err := s.update(ctx, func(t *txn) error {
		j, err := t.GetJob(ctx, jobID)
		if err != nil {
			return err
		}
		out, err = t.settle(ctx, j)
		return err
	})
	return out, err
}

// settlement is what a job's gates and deadline say should happen to it now.
type settlement struct {
	outcome *jobs.Outcome // a pending gate already decided by its recorded decisions
	expire  string        // the reason to expire it; "" for none
}

func (st settlement) none() bool { return st.outcome == nil && st.expire == "" }

// settlementOf reads what a job needs: nothing for most jobs most of the time. It only
// reads, so the sweeper opens a transaction only for the jobs that change.
func (s *Service) settlementOf(ctx context.Context, r store.Reader, j store.Job, now time.Time) (settlement, error) {
	if jobs.Terminal(j.State) || j.State == jobs.StateRunning || j.State == jobs.StateInstalling {
		return settlement{}, nil
	}
	p, _, err := s.profileOfJob(ctx, r, j)
	if err != nil {
		return settlement{}, err
	}
	approvals, err := r.ListApprovals(ctx, j.ID)
	if err != nil {
		return settlement{}, err
	}
	policy := p.Approval.Policy()
	rules := j.Rules(j.OrganizationID, approvals)
	if j.State == jobs.StatePendingApproval {
		o, err := jobs.Evaluate(policy, rules, now)
		if err != nil {
			return settlement{}, err
		}
		if o.Status == jobs.StatusApproved || o.Status == jobs.StatusRejected {
			return settlement{outcome: &o}, nil
		}
	}
	due, err := jobs.DueForExpiry(policy, rules, now)
	if err != nil {
		return settlement{}, err
	}
	switch {
	case due && j.State == jobs.StatePendingApproval:
		return settlement{expire: fmt.Sprintf("not approved within %s", policy.ExpiresAfter)}, nil
	case due && j.State == jobs.StateAwaitingCertificate:
		return settlement{expire: fmt.Sprintf("CA operator did not decide within %s", policy.ExpiresAfter)}, nil
	case due:
		return settlement{expire: "its approvals lapsed before it started"}, nil
	case jobs.Open(j.State) && !j.Deadline.IsZero() && !now.Before(j.Deadline):
		return settlement{expire: "deadline " + j.Deadline.Format(time.RFC3339) + " passed before it started"}, nil
	}
	return settlement{}, nil
}

// settle applies a job's settlement inside the transaction: a pending job whose
// decisions already decide it moves on; a job whose gate lapsed or whose deadline passed
// expires.
func (t *txn) settle(ctx context.Context, j store.Job) (store.Job, error) {
	st, err := t.s.settlementOf(ctx, t, j, t.now)
	switch {
	case err != nil:
		return store.Job{}, err
	case st.outcome != nil:
		nj, _, err := t.apply(ctx, j, *st.outcome, systemActor("approval"))
		return nj, err
	case st.expire != "":
		return t.transition(ctx, j, jobs.StateExpired, store.JobChange{Actor: systemActor("expiry"), Reason: st.expire,
			Error: &store.JobError{Code: "job_expired", Message: st.expire}}, audit.ActionJobExpired)
	}
	return j, nil
}

// sweepStates are the states a job can expire from or be settled in.
var sweepStates = []jobs.State{jobs.StatePendingApproval, jobs.StateApproved, jobs.StateDispatched, jobs.StateAwaitingCertificate}

// ExpireDue settles every job that can expire: it expires those whose gate lapsed or whose
// deadline passed, and completes a pending decision left unsettled. It returns how many
// jobs changed state. One job's failure is logged and does not stop the others.
func (s *Service) ExpireDue(ctx context.Context) (int, error) {
	var ids []string
	now := s.clock()
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		page, next, err := s.st.ListJobs(ctx, store.JobFilter{States: sweepStates}, p)
		if err != nil {
			return 0, AsError(err)
		}
		for _, j := range page {
			st, err := s.settlementOf(ctx, s.st, j, now)
			if err != nil {
				s.log.Error().Err(err).Str("job", j.ID).Msg("expiry sweep")
				continue
			}
			if !st.none() {
				ids = append(ids, j.ID)
			}
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	changed := 0
	var firstErr error
	for _, id := range ids {
		if ctx.Err() != nil {
			return changed, ctx.Err()
		}
		var before jobs.State
		var after store.Job
		err := s.update(ctx, func(t *txn) error {
			j, err := t.GetJob(ctx, id)
			if err != nil {
				return err
			}
			before = j.State
			after, err = t.settle(ctx, j)
			return err
		})
		if err != nil {
			s.log.Error().Err(err).Str("job", id).Msg("expiry sweep")
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if after.State != before {
			changed++
		}
	}
	return changed, firstErr
}

// RunExpiry sweeps every interval until ctx is done: jobs past their deadline, and once
// an hour the console sessions over for longer than SessionRetention.
func (s *Service) RunExpiry(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var purged time.Time // the last purge of old console sessions
	for {
		n, err := s.ExpireDue(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.log.Warn().Err(err).Msg("expiry sweep incomplete")
		case n > 0:
			s.log.Info().Int("jobs", n).Msg("expiry sweep settled jobs")
		}
		if now := s.clock(); now.Sub(purged) >= sessionPurgeEvery {
			if n, err := s.PurgeSessions(ctx); err != nil {
				s.log.Warn().Err(err).Msg("cannot purge old console sessions")
			} else {
				purged = now
				if n > 0 {
					s.log.Info().Int64("sessions", n).Msg("purged old console sessions")
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
