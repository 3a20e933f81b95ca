package service

import (
	"context"
	"errors"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// ResetAgentKey forgets the seal key an agent presented at its first hello (admin): the
// re-enrolment of a reinstalled agent, whose new key the dispatcher otherwise refuses. The
// agent's next hello records its key again. PINs sealed to the old key for dispatches
// not yet run cannot be opened by the new one: those jobs fail with unseal_failed and are
// retried.
func (s *Service) ResetAgentKey(ctx context.Context, by Actor, agentID, reason string) (Agent, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "reset agent key", jobs.PermManageAgents, ""); err != nil {
		return Agent{}, err
	}
	if err := checkReason("reason", reason); err != nil {
		return Agent{}, err
	}
	var out store.Agent
	err := s.update(ctx, func(t *txn) error {
		a, err := t.GetAgent(ctx, agentID)
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeNotFound, "", "no agent %q is enrolled", agentID)
		}
		if err != nil {
			return err
		}
		old := ""
		if len(a.PublicKey) > 0 {
			old = protocol.KeyFingerprint(a.PublicKey)
		}
		a.PublicKey = nil
		if out, err = t.UpdateAgent(ctx, a); err != nil {
			return err
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionAgentKeyReset, Target: "agent:" + a.ID,
			Reason: strings.TrimSpace(reason), Details: audit.Details("previous_seal_key", old, "username", actor.Username)})
	})
	if err != nil {
		return Agent{}, err
	}
	return agentOf(out), nil
}
