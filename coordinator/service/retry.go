package service

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// minRetrySpan is the least time a retried job whose deadline had passed is given.
const minRetrySpan = time.Hour

// RetryRequest asks for a new attempt of a failed job.
type RetryRequest struct {
	Reason string
	// Deadline is the new attempt's deadline; zero keeps the job's, or, when that has
	// passed, gives the job as long again as it had at first (at least an hour).
	Deadline time.Time
}

// RetryJob starts a new attempt of a failed job (its requester, a help desk operator or
// an admin), while its approvals are still valid: failed → approved with attempt+1, and
// the dispatcher sends it again like any approved job. Results of the failed attempt are
// void from then on; the agent reuses the token, key and PINs the job already made.
func (s *Service) RetryJob(ctx context.Context, by Actor, jobID string, r RetryRequest) (JobDetail, error) {
	actor := by.user
	if err := checkReason("reason", r.Reason); err != nil {
		return JobDetail{}, err
	}
	now := s.clock()
	if !r.Deadline.IsZero() {
		switch {
		case !r.Deadline.After(now):
			return JobDetail{}, badRequest("deadline", "%s is not in the future", r.Deadline.UTC().Format(time.RFC3339))
		case r.Deadline.Sub(now) > MaxJobDeadline:
			return JobDetail{}, badRequest("deadline", "%s is more than %s ahead", r.Deadline.UTC().Format(time.RFC3339), MaxJobDeadline)
		}
	}
	reason := strings.TrimSpace(r.Reason)
	if reason == "" {
		reason = "retried by " + actor.Username
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
		p, _, err := s.profileOfJob(ctx, t, j)
		if err != nil {
			return internal(err)
		}
		approvals, err := t.ListApprovals(ctx, j.ID)
		if err != nil {
			return err
		}
		acc, err := accessOf(ctx, t, actor)
		if err != nil {
			return err
		}
		who := acc.jobActor(j.OrganizationID)
		if err := jobs.CanRetry(p.Approval.Policy(), j.Rules(j.OrganizationID, approvals), who, t.now); err != nil {
			var je *jobs.Error
			if errors.As(err, &je) && je.Code != jobs.CodeInvalidInput {
				return t.refuse(ctx, actor, "retry job", j.ID, "", err)
			}
			return err
		}
		if refusal, err := rolloutRetryRefusal(ctx, t, j); err != nil {
			return err
		} else if refusal != nil {
			return t.refuse(ctx, actor, "retry job", j.ID, "", refusal)
		}
		// A token that left active meanwhile takes the retry only if it takes a new job of
		// the kind (tokenlife.JobAllowed).
		if err := tokenTakes(ctx, t, j.TokenSerial, j.Kind); err != nil {
			return err
		}
		deadline := r.Deadline
		if deadline.IsZero() && !j.Deadline.After(t.now) {
			span := max(j.Deadline.Sub(j.Created), minRetrySpan)
			deadline = t.now.Add(min(span, MaxJobDeadline))
		}
		out, err = t.transition(ctx, j, jobs.StateApproved, store.JobChange{Actor: actor.ID, Reason: reason, NewAttempt: true,
			Deadline: deadline}, audit.ActionJobRetried)
		return err
	})
	if err != nil {
		return JobDetail{}, err
	}
	return s.jobDetail(ctx, out)
}
