package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// PINOpener is an optional capability of the Issuer: it opens a PIN an agent sealed to
// the coordinator's result key. The caller clears the returned bytes.
type PINOpener interface {
	OpenTokenPIN(p store.TokenPIN) ([]byte, error)
}

// RevealUserPIN returns the user PIN a job set on its token, once: to the job's requester
// who still holds the request permission (they hand the token over), its holder when the
// profile allows self-service reveal, or an administrator. It is shown only while it is
// still the token's PIN, and the reveal is recorded, with who asked, before the PIN leaves
// the coordinator; a second call is refused. The caller clears the returned bytes.
func (s *Service) RevealUserPIN(ctx context.Context, by Actor, jobID string) ([]byte, error) {
	actor := by.user
	const op = "reveal user PIN"
	j, err := s.st.GetJob(ctx, jobID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, newErr(CodeNotFound, "id", "no job %q", jobID)
	}
	if err != nil {
		return nil, AsError(err)
	}
	acc, err := accessOf(ctx, s.st, actor)
	if err != nil {
		return nil, AsError(err)
	}
	// The requester hands the token over, while they still may request for the job's
	// organisation (a role taken away since takes the PIN away too); a holder who asked
	// for themselves without a role is judged as the holder, by the profile.
	byRequester := actor.ID == j.RequesterID && acc.can(jobs.PermRequest, j.OrganizationID)
	if !byRequester && !acc.can(jobs.PermManageJobs, j.OrganizationID) {
		// The holder of the job, when its profile lets holders see their PIN themselves.
		ss, err := s.selfServiceOf(ctx, s.st, j.ProfileName)
		if err != nil {
			return nil, AsError(err)
		}
		if actor.ID != j.HolderID || actor.Disabled || !ss.RevealPIN {
			return nil, s.deny(ctx, actor, op, j.ID, "job:"+j.ID,
				forbidden("only the requester of job %s (while they hold the %s permission), its holder when profile %s allows (self_service.reveal_pin), or a holder of the %s permission (admin) may see its PIN; %s is none of these",
					j.ID, jobs.PermRequest, j.ProfileName, jobs.PermManageJobs, actor.Username))
		}
	}
	if j.State != jobs.StateSucceeded {
		return nil, newErr(CodeConflict, "id", "job %s is %s: its PIN is shown once it succeeded", j.ID, j.State)
	}
	opener, ok := s.issuer.(PINOpener)
	if !ok {
		return nil, newErr(CodeInternal, "", "this coordinator keeps no PINs")
	}
	if j.TokenSerial == "" {
		return nil, newErr(CodeNotFound, "id", "job %s set no PIN on a token", j.ID)
	}
	p, err := s.st.GetTokenPIN(ctx, j.TokenSerial, store.PINPurposeUser)
	if errors.Is(err, store.ErrNotFound) {
		return nil, newErr(CodeNotFound, "id", "no user PIN was recorded for job %s", j.ID)
	}
	if err != nil {
		return nil, AsError(err)
	}
	if p.JobID != j.ID {
		return nil, newErr(CodeConflict, "id", "the user PIN of token %s was set again by job %s: ask for that one", j.TokenSerial, p.JobID)
	}
	if !p.Revealed.IsZero() {
		return nil, newErr(CodeConflict, "id", "the user PIN of job %s was already shown at %s; a PIN is shown once: for a new one, queue an unblock_pin job: %s",
			j.ID, p.Revealed.Format(time.RFC3339), s.unblockCommand(ctx, j))
	}
	pin, err := opener.OpenTokenPIN(p)
	if err != nil {
		return nil, newErr(CodeInternal, "", "the user PIN of job %s cannot be opened with this coordinator's result key", j.ID)
	}
	err = s.update(ctx, func(t *txn) error {
		if err := t.MarkTokenPINRevealed(ctx, p.ID, t.now); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return newErr(CodeConflict, "id", "the user PIN of job %s was already shown", j.ID)
			}
			return err
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionPINRevealed, JobID: j.ID,
			Target: "token:" + j.TokenSerial, Details: audit.Details("purpose", store.PINPurposeUser, "username", actor.Username)})
	})
	if err != nil {
		clear(pin)
		return nil, err
	}
	return pin, nil
}

// unblockCommand is the command line that queues an unblock_pin job for j's token: at
// the workstation that last reported the token, else at the job's.
func (s *Service) unblockCommand(ctx context.Context, j store.Job) string {
	n := newNames(s.st)
	agent := j.AgentID
	if tok, err := s.st.GetToken(ctx, j.TokenSerial); err == nil && tok.AgentID != "" {
		agent = tok.AgentID
	}
	return fmt.Sprintf("tokenfleetctl issue --kind %s --holder %s --agent %s --profile %s --token %s",
		jobs.KindUnblockPIN, n.user(ctx, j.HolderID), agent, j.ProfileName, j.TokenSerial)
}
