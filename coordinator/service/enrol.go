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

// AgentEnrolment is what an administrator says about a workstation agent before it first
// connects: jobs can then be queued for it, and wait in its broker queue until it comes.
type AgentEnrolment struct {
	ID       string // the agent's --id
	Hostname string // informational until the agent's hello reports its own
	// BrokerUser is the agent's own broker user, which the dispatcher checks its messages
	// against. Empty: the conventional protocol.AgentUser(ID).
	BrokerUser string
}

// AgentHook hears of an enrolled agent once the enrolment has committed, so that its
// broker queue can be declared. A failure is logged, not returned: the dispatcher also
// declares the queues of all enrolled agents when it starts.
type AgentHook interface {
	AgentEnrolled(ctx context.Context, a store.Agent) error
}

// EnrolAgent records a new agent (admin). A taken ID is refused with the host that holds
// it, so two workstations never share an identity.
func (s *Service) EnrolAgent(ctx context.Context, by Actor, e AgentEnrolment) (Agent, error) {
	actor := by.user
	if err := s.requireRole(ctx, actor, "enrol agent", jobs.RoleAdmin); err != nil {
		return Agent{}, err
	}
	e.ID = strings.TrimSpace(e.ID)
	if e.ID == "" {
		return Agent{}, badRequest("id", "is required")
	}
	if err := protocol.ValidateAgentID(e.ID); err != nil {
		return Agent{}, badRequest("id", "%v", err)
	}
	if err := checkText("hostname", e.Hostname, maxNameLen); err != nil {
		return Agent{}, err
	}
	if e.BrokerUser == "" {
		e.BrokerUser, _ = protocol.AgentUser(e.ID) // the ID was validated above
	}
	if err := checkText("broker_user", e.BrokerUser, maxNameLen); err != nil {
		return Agent{}, err
	}
	var out store.Agent
	err := s.update(ctx, func(t *txn) error {
		a, err := t.CreateAgent(ctx, store.Agent{ID: e.ID, Hostname: e.Hostname, BrokerUser: e.BrokerUser,
			Enrolled: t.now, Approved: t.now, ApprovedBy: actor.ID})
		if errors.Is(err, store.ErrConflict) {
			return newErr(CodeConflict, "id", "%v", err)
		}
		if err != nil {
			return err
		}
		out = a
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionAgentEnrolled, Target: "agent:" + a.ID,
			Details: audit.Details("hostname", a.Hostname, "broker_user", a.BrokerUser)})
	})
	if err != nil {
		return Agent{}, err
	}
	if s.agents != nil {
		if err := s.agents.AgentEnrolled(ctx, out); err != nil {
			s.log.Warn().Err(err).Str("agent", out.ID).Msg("enrolled agent's broker queue not declared yet; the dispatcher declares it when it starts")
		}
	}
	return agentOf(out), nil
}
