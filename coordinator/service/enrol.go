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

// AgentBatchHook is an AgentHook that also hears of a batch of enrolled agents at once
// (EnrolAgents), to declare their queues together; a hook without it hears of each agent
// in turn.
type AgentBatchHook interface {
	AgentsEnrolled(ctx context.Context, as []store.Agent) error
}

// check trims and checks an enrolment, the one set of rules of both enrolment paths, and
// fills in the default broker user.
func (e *AgentEnrolment) check() *Error {
	e.ID = strings.TrimSpace(e.ID)
	if e.ID == "" {
		return badRequest("id", "is required")
	}
	if err := protocol.ValidateAgentID(e.ID); err != nil {
		return badRequest("id", "%v", err)
	}
	if strings.TrimSpace(e.Hostname) == "" {
		return badRequest("hostname", "is required: the workstation's host name, shown until the agent reports its own")
	}
	if err := checkText("hostname", e.Hostname, maxNameLen); err != nil {
		return AsError(err)
	}
	if e.BrokerUser == "" {
		e.BrokerUser, _ = protocol.AgentUser(e.ID) // the ID was validated above
	}
	if err := checkText("broker_user", e.BrokerUser, maxNameLen); err != nil {
		return AsError(err)
	}
	return nil
}

// record is the stored agent an enrolment by actor at now makes: approved by the
// administrator who enrolled it.
func (e AgentEnrolment) record(actor store.User, t *txn) store.Agent {
	return store.Agent{ID: e.ID, Hostname: e.Hostname, BrokerUser: e.BrokerUser, Enrolled: t.now, Approved: t.now, ApprovedBy: actor.ID}
}

// enrolledEntry is the audit entry of an enrolled agent; extra details follow the
// agent's own.
func enrolledEntry(actor store.User, a store.Agent, extra ...any) audit.Entry {
	return audit.Entry{Actor: actor.ID, Action: audit.ActionAgentEnrolled, Target: "agent:" + a.ID,
		Details: audit.Details(append([]any{"hostname", a.Hostname, "broker_user", a.BrokerUser}, extra...)...)}
}

// EnrolAgent records a new agent (admin). A taken ID is refused with the host that holds
// it, so two workstations never share an identity.
func (s *Service) EnrolAgent(ctx context.Context, by Actor, e AgentEnrolment) (Agent, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "enrol agent", jobs.PermManageAgents, ""); err != nil {
		return Agent{}, err
	}
	if err := e.check(); err != nil {
		return Agent{}, err
	}
	var out store.Agent
	err := s.update(ctx, func(t *txn) error {
		a, err := t.CreateAgent(ctx, e.record(actor, t))
		if errors.Is(err, store.ErrConflict) {
			return newErr(CodeConflict, "id", "%v", err)
		}
		if err != nil {
			return err
		}
		out = a
		return t.audit(ctx, enrolledEntry(actor, a))
	})
	if err != nil {
		return Agent{}, err
	}
	s.agentsEnrolled(ctx, []store.Agent{out})
	return agentOf(out), nil
}

// agentsEnrolled tells the hook of committed enrolments: the batch at once when the hook
// takes batches.
func (s *Service) agentsEnrolled(ctx context.Context, as []store.Agent) {
	if s.agents == nil || len(as) == 0 {
		return
	}
	const why = "enrolled agent's broker queue not declared yet; the dispatcher declares it when it starts"
	if h, ok := s.agents.(AgentBatchHook); ok && len(as) > 1 {
		if err := h.AgentsEnrolled(ctx, as); err != nil {
			s.log.Warn().Err(err).Int("agents", len(as)).Str("first", as[0].ID).Msg(why)
		}
		return
	}
	for _, a := range as {
		if err := s.agents.AgentEnrolled(ctx, a); err != nil {
			s.log.Warn().Err(err).Str("agent", a.ID).Msg(why)
		}
	}
}
