package service

import (
	"context"
	"crypto/ecdh"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// BrokerIdentities provisions each agent's own least-privilege broker user: RabbitMQ's
// management API in production (coordinator/brokeradmin).
type BrokerIdentities interface {
	// PutAgent creates or updates the agent's broker user with this password and exactly
	// the agent's permissions.
	PutAgent(ctx context.Context, agentID, user, password string) error
	// RemoveAgent deletes the user and closes its connections.
	RemoveAgent(ctx context.Context, user, reason string) error
}

// EnrolRequest is an agent enrolling itself with an activation code or enrolment key.
type EnrolRequest struct {
	Code     string
	AgentID  string // "" derives it from Hostname, and Session when given
	Hostname string
	Session  string // a user session on a shared terminal server: the ID is session@host
	OS       string
	Version  string
	SealKey  []byte // the agent's X25519 public key (PKIX DER) that PINs and credentials are sealed to
	Source   string // the client's address, for the audit log
	// Secure says the code arrived over TLS, or from the coordinator's own host: a code
	// sent in clear over a network is refused (and, being seen, should be revoked).
	Secure bool
}

// Enrolment is what an enrolled agent is given.
type Enrolment struct {
	Agent Agent
	// Secret authenticates the agent when it fetches its broker credentials (AgentCredentials),
	// now and after a rotation. Shown once.
	Secret string
	// Credentials are its broker user and password sealed to its seal key; nil while it
	// waits for an administrator's approval, or when provisioning failed (the agent then
	// fetches them later and provisioning is tried again).
	Credentials *protocol.Sealed
}

// enrolRefusal is a refused enrolment: the error for the client and what the audit log says.
type enrolRefusal struct {
	err    *Error
	key    string // the key's ID when the secret matched one
	reason string
}

func (r *enrolRefusal) Error() string { return r.err.Error() }

// Enrol enrols an agent with an activation code or enrolment key. Every refusal is
// audited (agent.enrol_refused) with the source; an unknown or wrong secret is audited at
// most once a minute per source, like a bad API token.
func (s *Service) Enrol(ctx context.Context, r EnrolRequest) (Enrolment, error) {
	if !r.Secure {
		return Enrolment{}, s.refuseEnrol(ctx, r, &enrolRefusal{reason: "plain HTTP from " + r.Source,
			err: badRequest("", "enrolment over plain HTTP from another host is refused: the code would cross the network in clear. Enrol over https (the coordinator's tls settings), and revoke this code")})
	}
	if s.broker == nil {
		return Enrolment{}, newErr(CodeUnavailable, "", "self-enrolment is off: the coordinator has no broker management configured (broker.management in its configuration); an administrator enrols agents with tokenfleetctl agent add")
	}
	if err := r.check(); err != nil {
		return Enrolment{}, err
	}
	sealKey, err := seal.ParsePublicKey(r.SealKey)
	if err != nil {
		return Enrolment{}, badRequest("seal_key", "%v: send the agent's X25519 public key, PKIX DER", err)
	}
	var out Enrolment
	var created store.Agent
	err = s.update(ctx, func(t *txn) error {
		k, err := t.UseEnrolmentKey(ctx, r.Code, t.now)
		var unusable *store.KeyUnusableError
		switch {
		case errors.Is(err, store.ErrNotFound):
			return &enrolRefusal{reason: "unknown or wrong code",
				err: newErr(CodeUnauthenticated, "code", "no such activation code or enrolment key: check it was copied whole (tfe_...)")}
		case errors.As(err, &unusable):
			return &enrolRefusal{key: unusable.Key.ID, reason: unusable.Reason, err: unusableErr(unusable)}
		case err != nil:
			return err
		}
		if k.AgentID != "" && k.AgentID != r.AgentID {
			return &enrolRefusal{key: k.ID, reason: "code for another agent: " + k.AgentID,
				err: newErr(CodeForbidden, "agent_id", "%s is for agent %s, not %s: enrol with --id %s or ask for a code for this machine", describeKey(k), k.AgentID, r.AgentID, k.AgentID)}
		}
		user, _ := protocol.AgentUser(r.AgentID) // checked above
		a := store.Agent{ID: r.AgentID, Hostname: r.Hostname, OS: r.OS, Version: r.Version, PublicKey: r.SealKey,
			BrokerUser: user, Enrolled: t.now, State: store.AgentPending, StateBy: keyActor(k.ID), StateAt: t.now,
			OrganizationID: k.OrganizationID, Tags: k.Tags, EnrolledWith: k.ID}
		if k.PreApproved {
			a.State, a.Approved, a.ApprovedBy = store.AgentActive, t.now, keyActor(k.ID)
			a.StateReason = "pre-approved by " + describeKey(k)
		} else {
			a.StateReason = "waiting for an administrator's approval"
		}
		created, err = t.CreateAgent(ctx, a)
		if errors.Is(err, store.ErrConflict) {
			return &enrolRefusal{key: k.ID, reason: "agent ID taken: " + r.AgentID,
				// Not the holder's host name: the one enrolling is not authenticated yet.
				err: newErr(CodeConflict, "agent_id", "agent ID %q is already enrolled: an administrator removes the old agent first (tokenfleetctl agent remove %s), or enrol with another --id", r.AgentID, r.AgentID)}
		}
		if err != nil {
			return err
		}
		if out.Secret, err = t.IssueAgentSecret(ctx, created.ID); err != nil {
			return err
		}
		return t.audit(ctx, enrolledEntry(store.User{ID: keyActor(k.ID)}, created, "enrolled_with", k.ID, "kind", string(k.Kind),
			"state", string(created.State), "source", r.Source, "seal_key", protocol.KeyFingerprint(r.SealKey)))
	})
	var refusal *enrolRefusal
	if errors.As(err, &refusal) {
		return Enrolment{}, s.refuseEnrol(ctx, r, refusal)
	}
	if err != nil {
		return Enrolment{}, err
	}
	out.Agent = agentOf(created)
	if created.State == store.AgentActive {
		s.agentsEnrolled(ctx, []store.Agent{created})
		sealed, err := s.provision(ctx, created, sealKey, keyActor(created.EnrolledWith), "enrolled")
		if err != nil {
			s.log.Warn().Err(err).Str("agent", created.ID).Msg("enrolled agent's broker identity not provisioned; it is tried again when the agent fetches its credentials")
		}
		out.Credentials = sealed
	}
	return out, nil
}

func unusableErr(u *store.KeyUnusableError) *Error {
	what := describeKey(u.Key)
	switch u.Reason {
	case "revoked":
		return newErr(CodeForbidden, "code", "%s was revoked: ask an administrator for a new one", what)
	case "expired":
		return newErr(CodeForbidden, "code", "%s expired at %s: ask an administrator for a new one", what, u.Key.Expires.Format("2006-01-02 15:04 MST"))
	case "used":
		if u.Key.Kind == store.EnrolmentCode {
			return newErr(CodeForbidden, "code", "%s was used already: a code enrols one agent; ask an administrator for a new one", what)
		}
		return newErr(CodeForbidden, "code", "%s has enrolled its limit of %d agents: ask an administrator to raise it or for a new key", what, u.Key.MaxUses)
	}
	return newErr(CodeForbidden, "code", "%s cannot be used: %s", what, u.Reason)
}

// refuseEnrol audits a refused enrolment in a transaction of its own (the refused one
// rolled back: no use of the code is taken) and returns its error. Refusals without a
// key (an unknown secret, plain HTTP) are rate-limited per source and reason.
func (s *Service) refuseEnrol(ctx context.Context, r EnrolRequest, ref *enrolRefusal) error {
	now := s.clock()
	actor := AnonymousActor
	suppressed := 0
	if ref.key != "" {
		actor = keyActor(ref.key)
	} else {
		n, ok := s.anon.AllowCount(r.Source+"|enrol|"+ref.reason, now)
		if !ok {
			s.obs.Denial(ref.err.Code)
			return ref.err
		}
		suppressed = n
	}
	err := s.update(ctx, func(t *txn) error {
		return t.audit(ctx, audit.Entry{Actor: actor, Action: audit.ActionAgentEnrolRefused, Target: "agent:" + r.AgentID,
			Reason: ref.reason, Details: audit.Details("code", string(ref.err.Code), "source", r.Source, "hostname", r.Hostname,
				"suppressed", suppressed)})
	})
	if err != nil {
		s.log.Warn().Err(err).Str("source", r.Source).Msg("cannot audit a refused enrolment")
	}
	s.obs.Denial(ref.err.Code)
	return ref.err
}

func (r *EnrolRequest) check() error {
	r.Code = strings.TrimSpace(r.Code)
	r.Hostname = strings.ToLower(strings.TrimSpace(r.Hostname))
	r.Session = strings.TrimSpace(r.Session)
	r.AgentID = strings.TrimSpace(r.AgentID)
	if r.Code == "" {
		return badRequest("code", "is required: the activation code or enrolment key (tfe_...)")
	}
	if r.Hostname == "" {
		return badRequest("hostname", "is required: the workstation's host name")
	}
	for _, f := range []struct{ name, v string }{{"hostname", r.Hostname}, {"session", r.Session}, {"os", r.OS}, {"version", r.Version}} {
		if err := checkText(f.name, f.v, maxNameLen); err != nil {
			return err
		}
	}
	if r.AgentID == "" {
		r.AgentID = DefaultAgentID(r.Hostname, r.Session)
	}
	return checkAgentID("agent_id", r.AgentID)
}

// DefaultAgentID is the agent ID of a host (its first label, lower-cased) and, on a
// shared terminal server, of a user session on it: session@host.
func DefaultAgentID(hostname, session string) string {
	host, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(hostname)), ".")
	if session = strings.ToLower(strings.TrimSpace(session)); session != "" {
		return session + "@" + host
	}
	return host
}

// provision gives an active agent a new broker password: the broker user is created or
// updated, then the password is kept sealed to the agent's key for it to fetch. why goes
// into the audit entry.
func (s *Service) provision(ctx context.Context, a store.Agent, to *ecdh.PublicKey, actor, why string) (*protocol.Sealed, error) {
	user := a.BrokerUser
	if user == "" {
		user, _ = protocol.AgentUser(a.ID)
	}
	password := newBrokerPassword()
	if err := s.broker.PutAgent(ctx, a.ID, user, password); err != nil {
		return nil, fmt.Errorf("provision broker user %s: %w", user, err)
	}
	plain, _ := json.Marshal(protocol.BrokerCredentials{User: user, Password: password}) // strings always marshal
	sealed, err := seal.Seal(to, plain, seal.Binding{Purpose: protocol.PurposeBrokerCredentials, AgentID: a.ID})
	if err != nil {
		return nil, err
	}
	blob, _ := json.Marshal(sealed)
	err = s.update(ctx, func(t *txn) error {
		if err := t.SetAgentCredentials(ctx, a.ID, blob, t.now); err != nil {
			return err
		}
		return t.audit(ctx, audit.Entry{Actor: actor, Action: audit.ActionAgentCredentials, Target: "agent:" + a.ID,
			Reason: why, Details: audit.Details("broker_user", user)})
	})
	if err != nil {
		return nil, err
	}
	return sealed, nil
}

// AgentCredentialsAnswer is what an agent fetching its credentials hears.
type AgentCredentialsAnswer struct {
	Agent       Agent
	Credentials *protocol.Sealed // nil while the agent is pending
}

// AgentCredentials gives an agent, authenticated by its own secret, its broker
// credentials sealed to its key: after its enrolment was approved, after a rotation, or
// when its broker login failed. An active agent whose identity is missing (provisioning
// failed, or the agent was enabled again) is provisioned now.
func (s *Service) AgentCredentials(ctx context.Context, agentID, secret, source string) (AgentCredentialsAnswer, error) {
	a, err := s.st.CheckAgentSecret(ctx, agentID, secret)
	if errors.Is(err, store.ErrNotFound) {
		return AgentCredentialsAnswer{}, s.unauthenticated(ctx, source, "unknown agent or wrong agent secret", s.clock())
	}
	if err != nil {
		return AgentCredentialsAnswer{}, AsError(err)
	}
	ans := AgentCredentialsAnswer{Agent: agentOf(a)}
	switch a.State {
	case store.AgentPending:
		return ans, nil
	case store.AgentDisabled, store.AgentRemoved:
		return AgentCredentialsAnswer{}, newErr(CodeForbidden, "", "agent %s is %s (%s): it has no broker identity", a.ID, a.State, a.StateReason)
	}
	blob, err := s.st.AgentCredentials(ctx, a.ID)
	if err != nil {
		return AgentCredentialsAnswer{}, AsError(err)
	}
	if blob != nil {
		var sealed protocol.Sealed
		if err := json.Unmarshal(blob, &sealed); err != nil {
			return AgentCredentialsAnswer{}, fmt.Errorf("agent %s: stored credentials: %w", a.ID, err)
		}
		ans.Credentials = &sealed
		return ans, nil
	}
	if s.broker == nil {
		return AgentCredentialsAnswer{}, newErr(CodeUnavailable, "", "the coordinator has no broker management configured")
	}
	key, err := seal.ParsePublicKey(a.PublicKey)
	if err != nil {
		return AgentCredentialsAnswer{}, newErr(CodeConflict, "", "agent %s has no usable seal key (%v): enrol it again", a.ID, err)
	}
	sealed, err := s.provision(ctx, a, key, systemActor("enrolment"), "provisioned when the agent asked")
	if err != nil {
		return AgentCredentialsAnswer{}, &Error{Code: CodeUnavailable, Msg: "the broker identity cannot be provisioned now; try again", Err: err}
	}
	ans.Credentials = sealed
	return ans, nil
}

// AgentStateRequest is an administrator moving an agent in its life cycle.
type AgentStateRequest struct {
	Reason string
}

// ApproveAgent activates a pending agent (admin) and provisions its broker identity; the
// agent, polling, then fetches its credentials.
func (s *Service) ApproveAgent(ctx context.Context, by Actor, id string, r AgentStateRequest) (Agent, error) {
	if s.broker == nil {
		// Checked first: an approved agent with no way to get a broker identity would
		// wait for credentials that never come.
		return Agent{}, newErr(CodeUnavailable, "", "cannot approve agent %s: the coordinator has no broker management configured (broker.management), so it cannot give the agent a broker identity", id)
	}
	a, err := s.moveAgent(ctx, by, id, "approve agent", r.Reason, store.AgentActive, audit.ActionAgentApproved, store.AgentPending)
	if err != nil {
		return Agent{}, err
	}
	s.agentsEnrolled(ctx, []store.Agent{a})
	if err := s.provisionFor(ctx, by, a, "approved"); err != nil {
		return agentOf(a), err
	}
	return agentOf(a), nil
}

// RejectAgent refuses a pending agent (admin): it is removed, with the reason.
func (s *Service) RejectAgent(ctx context.Context, by Actor, id string, r AgentStateRequest) (Agent, error) {
	a, err := s.moveAgent(ctx, by, id, "reject agent", r.Reason, store.AgentRemoved, audit.ActionAgentRejected, store.AgentPending)
	return agentOf(a), err
}

// DisableAgent disables an agent (admin): its open jobs end (cancelled before they
// started, failed after), its broker user is deleted and its connections closed, and
// whatever it still sends is refused. EnableAgent undoes it.
func (s *Service) DisableAgent(ctx context.Context, by Actor, id string, r AgentStateRequest) (Agent, error) {
	return s.retireAgent(ctx, by, id, "disable agent", r.Reason, store.AgentDisabled, audit.ActionAgentDisabled,
		store.AgentActive, store.AgentPending, store.AgentDisabled)
}

// RemoveAgent removes an agent for good (admin), as DisableAgent does; its record stays
// for its history, and its ID stays taken.
func (s *Service) RemoveAgent(ctx context.Context, by Actor, id string, r AgentStateRequest) (Agent, error) {
	return s.retireAgent(ctx, by, id, "remove agent", r.Reason, store.AgentRemoved, audit.ActionAgentRemoved,
		store.AgentActive, store.AgentPending, store.AgentDisabled)
}

// EnableAgent makes a disabled agent active again with a new broker password (admin),
// which the agent fetches when its old one is refused.
func (s *Service) EnableAgent(ctx context.Context, by Actor, id string, r AgentStateRequest) (Agent, error) {
	a, err := s.moveAgent(ctx, by, id, "enable agent", r.Reason, store.AgentActive, audit.ActionAgentEnabled, store.AgentDisabled)
	if err != nil {
		return Agent{}, err
	}
	if s.broker == nil {
		// Without broker management nothing deleted its broker user when it was disabled:
		// the one made by hand works again.
		return agentOf(a), nil
	}
	if err := s.provisionFor(ctx, by, a, "enabled"); err != nil {
		return agentOf(a), err
	}
	return agentOf(a), nil
}

// RotateAgentCredentials gives an active agent a new broker password (admin). Its open
// connections stay up, so no job is interrupted; the agent fetches the new password the
// next time the broker refuses the old one.
func (s *Service) RotateAgentCredentials(ctx context.Context, by Actor, id string, r AgentStateRequest) (Agent, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "rotate agent credentials", jobs.PermManageAgents, ""); err != nil {
		return Agent{}, err
	}
	if err := checkReason("reason", r.Reason); err != nil {
		return Agent{}, err
	}
	a, err := s.st.GetAgent(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Agent{}, newErr(CodeNotFound, "", "no agent %q is enrolled", id)
	}
	if err != nil {
		return Agent{}, AsError(err)
	}
	if a.State != store.AgentActive {
		return Agent{}, newErr(CodeConflict, "", "agent %s is %s: only an active agent has broker credentials to rotate", id, a.State)
	}
	why := "rotated"
	if reason := strings.TrimSpace(r.Reason); reason != "" {
		why += ": " + reason
	}
	if err := s.provisionFor(ctx, by, a, why); err != nil {
		return Agent{}, err
	}
	if a, err = s.st.GetAgent(ctx, id); err != nil {
		return Agent{}, AsError(err)
	}
	return agentOf(a), nil
}

// provisionFor provisions an agent's broker identity on an administrator's behalf.
func (s *Service) provisionFor(ctx context.Context, by Actor, a store.Agent, why string) error {
	if s.broker == nil {
		return newErr(CodeUnavailable, "", "the coordinator has no broker management configured (broker.management): create the agent's broker user by hand")
	}
	key, err := seal.ParsePublicKey(a.PublicKey)
	if err != nil {
		// An agent enrolled by an administrator presents its key at its first hello; its
		// broker user is then made by hand, as before self-enrolment.
		return newErr(CodeConflict, "", "agent %s has not registered a seal key yet, so its credentials cannot be sealed to it", a.ID)
	}
	if _, err := s.provision(ctx, a, key, by.user.ID, why); err != nil {
		return &Error{Code: CodeUnavailable, Msg: fmt.Sprintf("agent %s is %s, but its broker identity could not be provisioned: %v; the agent's next credentials request tries again", a.ID, a.State, err), Err: err}
	}
	return nil
}

// moveAgent moves an agent to state to from one of from (admin), audited as action.
func (s *Service) moveAgent(ctx context.Context, by Actor, id, op, reason string, to store.AgentState, action string, from ...store.AgentState) (store.Agent, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, op, jobs.PermManageAgents, ""); err != nil {
		return store.Agent{}, err
	}
	if err := checkReason("reason", reason); err != nil {
		return store.Agent{}, err
	}
	reason = strings.TrimSpace(reason)
	var out store.Agent
	err := s.update(ctx, func(t *txn) error {
		var err error
		out, err = t.SetAgentState(ctx, id, store.AgentStateChange{State: to, Reason: reason, By: actor.ID, At: t.now}, from...)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return newErr(CodeNotFound, "", "no agent %q is enrolled", id)
		case errors.Is(err, store.ErrConflict):
			return newErr(CodeConflict, "", "cannot %s: agent %s is %s", op, id, out.State)
		case err != nil:
			return err
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: action, Target: "agent:" + id, Reason: reason,
			Details: audit.Details("state", string(to), "username", actor.Username)})
	})
	return out, err
}

// retireAgent disables or removes an agent: its state and its open jobs' ends in one
// transaction, then its broker identity deleted with its connections.
func (s *Service) retireAgent(ctx context.Context, by Actor, id, op, reason string, to store.AgentState, action string, from ...store.AgentState) (Agent, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, op, jobs.PermManageAgents, ""); err != nil {
		return Agent{}, err
	}
	if strings.TrimSpace(reason) == "" {
		return Agent{}, newErr(CodeReasonRequired, "reason", "say why the agent is %s: it ends the agent's open jobs with that reason", to)
	}
	if err := checkReason("reason", reason); err != nil {
		return Agent{}, err
	}
	reason = strings.TrimSpace(reason)
	var out store.Agent
	err := s.update(ctx, func(t *txn) error {
		var err error
		out, err = t.SetAgentState(ctx, id, store.AgentStateChange{State: to, Reason: reason, By: actor.ID, At: t.now}, from...)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return newErr(CodeNotFound, "", "no agent %q is enrolled", id)
		case errors.Is(err, store.ErrConflict):
			return newErr(CodeConflict, "", "cannot %s: agent %s is %s", op, id, out.State)
		case err != nil:
			return err
		}
		ended, err := t.endAgentJobs(ctx, actor, id, to, reason)
		if err != nil {
			return err
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: action, Target: "agent:" + id, Reason: reason,
			Details: audit.Details("state", string(to), "username", actor.Username, "jobs_ended", ended)})
	})
	if err != nil {
		return Agent{}, err
	}
	if s.broker != nil && out.BrokerUser != "" {
		if err := s.broker.RemoveAgent(ctx, out.BrokerUser, fmt.Sprintf("agent %s %s by %s: %s", id, to, actor.Username, reason)); err != nil {
			return agentOf(out), &Error{Code: CodeUnavailable, Err: err,
				Msg: fmt.Sprintf("agent %s is %s and its messages are refused, but its broker user %s could not be deleted: %v; run the same command again", id, to, out.BrokerUser, err)}
		}
	}
	return agentOf(out), nil
}

// endAgentJobs ends an agent's open jobs: cancelled when they have not started running,
// failed (agent_disabled, agent_removed) when they have.
func (t *txn) endAgentJobs(ctx context.Context, actor store.User, agentID string, to store.AgentState, reason string) (int, error) {
	var open []jobs.State
	for _, st := range jobs.States() {
		if !jobs.Terminal(st) {
			open = append(open, st)
		}
	}
	why := fmt.Sprintf("agent %s %s: %s", agentID, to, reason)
	n := 0
	page := store.Page{Limit: 500}
	for {
		js, next, err := t.ListJobs(ctx, store.JobFilter{AgentID: agentID, States: open}, page)
		if err != nil {
			return n, err
		}
		for _, j := range js {
			c := store.JobChange{Actor: actor.ID, Reason: why}
			target, action := jobs.StateCancelled, audit.ActionJobCancelled
			if jobs.CanTransitionKind(j.Kind, j.State, jobs.StateCancelled) != nil {
				target, action = jobs.StateFailed, audit.ActionJobTransition
				c.Error = &store.JobError{Code: "agent_" + string(to), Message: why}
			}
			if _, err := t.transition(ctx, j, target, c, action); err != nil {
				return n, fmt.Errorf("ending job %s: %w", j.ID, err)
			}
			n++
		}
		if next == "" {
			return n, nil
		}
		page.Cursor = next
	}
}
