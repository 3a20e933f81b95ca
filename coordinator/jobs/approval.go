package jobs

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"time"
)

// Role is a user role. Roles are cumulative: a user may hold several.
type Role string

// Roles.
const (
	RoleHelpdesk   Role = "helpdesk"
	RoleApprover   Role = "approver"
	RoleCAOperator Role = "ca_operator"
	RoleAdmin      Role = "admin"
	RoleAuditor    Role = "auditor" // read-only: never decides on anything
	// RoleRolloutOwner creates and steers fleet rollouts (manage_rollouts) and reads.
	RoleRolloutOwner Role = "rollout_owner"
	// RoleKeyRecoveryOfficer approves the recovery of escrowed keys (N of M, never their
	// own request) and, once enough officers approved, opens the archive on their own
	// machine with a recovery private key (recover_keys).
	RoleKeyRecoveryOfficer Role = "key_recovery_officer"
)

var roles = []Role{RoleHelpdesk, RoleApprover, RoleCAOperator, RoleAdmin, RoleAuditor, RoleRolloutOwner, RoleKeyRecoveryOfficer}

// AllRoles lists every role.
func AllRoles() []Role { return slices.Clone(roles) }

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return slices.Contains(roles, r) }

// Scope says which approvers a request gate accepts.
type Scope string

// Scopes.
const (
	// ScopeOrganization: the approver belongs to the holder's organisation.
	ScopeOrganization Scope = "organization"
	// ScopeAny: any approver with a permitted role.
	ScopeAny Scope = "any"
)

// Valid reports whether s is a known scope.
func (s Scope) Valid() bool { return s == ScopeOrganization || s == ScopeAny }

// MaxRequired bounds the number of approvals a policy may ask for.
const MaxRequired = 10

// Policy is a profile's approval policy, the input of every gate decision.
type Policy struct {
	Required           int           // approvals needed at the request gate; 0 = none
	Roles              []Role        // roles whose holders may decide at the request gate (built-in or custom)
	Scope              Scope         // organisation scope of the request gate
	ExpiresAfter       time.Duration // life of a pending request, of one approval, of the CA-operator gate
	CAOperatorRequired bool          // a ca_operator must approve before signing
}

// Validate checks the policy on its own.
func (p Policy) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, errorf(CodeInvalidInput, format, args...)) }
	if p.Required < 0 || p.Required > MaxRequired {
		bad("policy: required approvals %d outside 0..%d", p.Required, MaxRequired)
	}
	if p.Required > 0 && len(p.Roles) == 0 {
		bad("policy: %d approvals required but no role may approve", p.Required)
	}
	for _, r := range p.Roles {
		switch {
		case !r.WellFormed():
			bad("policy: malformed role %q", r)
		case r == RoleAuditor:
			bad("policy: role auditor is read-only and cannot approve")
		}
	}
	if p.Required > 0 && !p.Scope.Valid() {
		bad("policy: scope %q is neither %s nor %s", p.Scope, ScopeOrganization, ScopeAny)
	}
	if (p.Required > 0 || p.CAOperatorRequired) && p.ExpiresAfter <= 0 {
		bad("policy: expires_after must be positive when approvals are needed")
	}
	return errors.Join(errs...)
}

// Gate is one approval gate of a job.
type Gate string

// Gates.
const (
	GateRequest    Gate = "request"     // before dispatch, in pending_approval
	GateCAOperator Gate = "ca_operator" // before signing, in awaiting_certificate
)

// Verdict is an approve or a reject.
type Verdict string

// Verdicts.
const (
	VerdictApprove Verdict = "approve"
	VerdictReject  Verdict = "reject"
)

// Decision is one recorded approval or rejection, as the store keeps it.
type Decision struct {
	ActorID     string    `json:"actor_id"`
	Gate        Gate      `json:"gate"`
	Verdict     Verdict   `json:"verdict"`
	BindingHash string    `json:"binding_hash"` // what the actor saw; a different job hash voids the decision
	Attempt     int       `json:"attempt"`      // the job attempt; CA-operator decisions count for it only
	At          time.Time `json:"at"`
	Reason      string    `json:"reason,omitempty"`
}

// Job is the part of a job the rules look at.
type Job struct {
	ID                 string
	Kind               Kind
	State              State
	Attempt            int
	RequesterID        string
	HolderID           string
	HolderOrganization string
	ProfileName        string
	TargetAgentID      string
	TokenSerial        string
	BindingHash        string    // BindingHash of the job as it stands
	StateSince         time.Time // when the job entered State (an edit in pending_approval resets it)
	Decisions          []Decision
	Progress           Progress // the current attempt's steps, for CanCancel
	// Rollout is the rollout that created the job, "" for none. Such a job's request gate
	// was passed by the rollout's own approval, bound to the hash of the rollout's template
	// and frozen target list (which includes this job's target): it holds no decisions of
	// its own and its approval does not lapse (aborting the rollout ends what has not
	// started). The CA-operator gate applies to it as to any job.
	Rollout string
}

// Actor is the user acting on a job.
type Actor struct {
	ID   string
	Name string // for messages (a username); ID when empty
	// Roles are the built-in roles the actor holds and the custom roles that apply to
	// this job (those not limited to another organisation).
	Roles []Role
	// Permissions are those the custom roles in Roles grant; built-in roles' come with them.
	Permissions  []Permission
	Organization string
}

// name is how messages call the actor.
func (a Actor) name() string {
	if a.Name != "" {
		return a.Name
	}
	return a.ID
}

// HasRole reports whether the actor holds r.
func (a Actor) HasRole(r Role) bool { return slices.Contains(a.Roles, r) }

// Vote is what an actor submits: approve or reject the job as they saw it.
type Vote struct {
	Verdict     Verdict
	BindingHash string // the job's binding hash shown to the actor
	Reason      string // required for a rejection
}

// Status is where a gate stands.
type Status string

// Gate statuses.
const (
	StatusPending  Status = "pending"
	StatusApproved Status = "approved"
	StatusRejected Status = "rejected"
	StatusExpired  Status = "expired"
)

// Outcome is a gate's state at a given time.
type Outcome struct {
	Gate      Gate   `json:"gate"`
	Status    Status `json:"status"`
	Approvals int    `json:"approvals"` // valid approvals counted
	Required  int    `json:"required"`
	// ValidUntil is when an approved gate stops being approved because approvals lapse;
	// for a pending gate, when the request expires. Zero when nothing expires.
	ValidUntil time.Time `json:"valid_until,omitzero"`
}

// gateFor names the gate that applies to the job in its state: the CA-operator gate while
// the job awaits its certificate, or while an approved server_keygen job waits for it (its
// certificate is signed when its dispatch is built), the request gate otherwise.
func gateFor(p Policy, j Job) Gate {
	if j.State == StateAwaitingCertificate || caGateBeforeDispatch(p, j) {
		return GateCAOperator
	}
	return GateRequest
}

// caGateBeforeDispatch reports whether j is a server_keygen job whose CA-operator gate is
// open: approved at the request gate, its key and certificate not made yet.
func caGateBeforeDispatch(p Policy, j Job) bool {
	return j.Kind == KindServerKeygen && j.State == StateApproved && p.CAOperatorRequired
}

// Evaluate computes the gate that applies to the job's current state at time now: the
// request gate (in pending_approval, and afterwards to see whether its approvals still
// hold), or the CA-operator gate in awaiting_certificate. Only decisions bound to the
// job's current binding hash count, one per actor; one rejection rejects.
func Evaluate(p Policy, j Job, now time.Time) (Outcome, error) {
	if err := p.Validate(); err != nil {
		return Outcome{}, err
	}
	if err := j.validate(); err != nil {
		return Outcome{}, err
	}
	gate := gateFor(p, j)
	if gate == GateCAOperator {
		return evaluateCA(p, j, now), nil
	}
	return evaluateRequest(p, j, now), nil
}

func evaluateRequest(p Policy, j Job, now time.Time) Outcome {
	out := Outcome{Gate: GateRequest, Required: p.Required}
	if rejected(j, GateRequest) {
		out.Status = StatusRejected
		return out
	}
	if p.Required == 0 || j.Rollout != "" {
		out.Status = StatusApproved
		return out
	}
	// Each actor counts once, with their latest approval.
	latest := map[string]time.Time{}
	for _, d := range j.Decisions {
		if d.Gate == GateRequest && d.Verdict == VerdictApprove && d.BindingHash == j.BindingHash && now.Before(d.At.Add(p.ExpiresAfter)) {
			if d.At.After(latest[d.ActorID]) {
				latest[d.ActorID] = d.At
			}
		}
	}
	var until []time.Time
	for _, at := range latest {
		until = append(until, at.Add(p.ExpiresAfter))
	}
	out.Approvals = len(until)
	if out.Approvals >= p.Required {
		// The gate holds until fewer than Required approvals remain valid.
		sort.Slice(until, func(a, b int) bool { return until[a].After(until[b]) })
		out.Status, out.ValidUntil = StatusApproved, until[p.Required-1]
		return out
	}
	switch j.State {
	case StatePendingApproval:
		out.ValidUntil = j.StateSince.Add(p.ExpiresAfter)
		out.Status = StatusPending
		if !now.Before(out.ValidUntil) {
			out.Status = StatusExpired
		}
	default:
		// The job was approved once; its approvals have lapsed since.
		out.Status = StatusExpired
	}
	return out
}

func evaluateCA(p Policy, j Job, now time.Time) Outcome {
	out := Outcome{Gate: GateCAOperator}
	if !p.CAOperatorRequired {
		out.Status = StatusApproved
		return out
	}
	out.Required = 1
	if rejected(j, GateCAOperator) {
		out.Status = StatusRejected
		return out
	}
	out.ValidUntil = j.StateSince.Add(p.ExpiresAfter)
	for _, d := range j.Decisions {
		if d.Gate == GateCAOperator && d.Verdict == VerdictApprove && d.Attempt == j.Attempt && d.BindingHash == j.BindingHash {
			// Signing follows at once, so a CA-operator approval does not lapse on its own.
			out.Approvals = 1
			out.Status = StatusApproved
			out.ValidUntil = time.Time{}
			return out
		}
	}
	out.Status = StatusPending
	if !now.Before(out.ValidUntil) {
		out.Status = StatusExpired
	}
	return out
}

func rejected(j Job, g Gate) bool {
	for _, d := range j.Decisions {
		if d.Gate == g && d.Verdict == VerdictReject && d.BindingHash == j.BindingHash && (g == GateRequest || d.Attempt == j.Attempt) {
			return true
		}
	}
	return false
}

// Decide checks whether actor a may cast vote v on job j at time now and, if so, returns
// the decision to record and the gate's outcome with it counted. The gate is the one the
// job's state holds open: the request gate in pending_approval, the CA-operator gate in
// awaiting_certificate. A denial is an *Error with one of the codes not_pending,
// approval_expired, self_approval, role_not_permitted, out_of_scope, already_decided,
// binding_mismatch, reason_required, checked in that order.
func Decide(p Policy, j Job, a Actor, v Vote, now time.Time) (Decision, Outcome, error) {
	if err := p.Validate(); err != nil {
		return Decision{}, Outcome{}, err
	}
	if err := j.validate(); err != nil {
		return Decision{}, Outcome{}, err
	}
	if a.ID == "" {
		return Decision{}, Outcome{}, errorf(CodeInvalidInput, "actor has no ID")
	}
	if v.Verdict != VerdictApprove && v.Verdict != VerdictReject {
		return Decision{}, Outcome{}, errorf(CodeInvalidInput, "verdict %q is neither %s nor %s", v.Verdict, VerdictApprove, VerdictReject)
	}
	if v.BindingHash == "" {
		return Decision{}, Outcome{}, errorf(CodeInvalidInput, "vote names no binding hash: the actor must say which version of job %s they decide on", j.ID)
	}

	var gate Gate
	switch {
	case j.State == StatePendingApproval:
		gate = GateRequest
	case j.State == StateAwaitingCertificate && p.CAOperatorRequired, caGateBeforeDispatch(p, j):
		gate = GateCAOperator
	case j.State == StateAwaitingCertificate:
		return Decision{}, Outcome{}, errorf(CodeNotPending, "job %s awaits its certificate but its profile has no CA-operator gate", j.ID)
	default:
		return Decision{}, Outcome{}, errorf(CodeNotPending, "job %s is %s; nothing awaits a decision", j.ID, j.State)
	}
	before, _ := Evaluate(p, j, now) // inputs already validated
	switch before.Status {
	case StatusExpired:
		return Decision{}, before, errorf(CodeApprovalExpired, "the %s gate of job %s expired at %s", gate, j.ID, before.ValidUntil.UTC().Format(time.RFC3339))
	case StatusApproved, StatusRejected:
		return Decision{}, before, errorf(CodeNotPending, "the %s gate of job %s is already %s", gate, j.ID, before.Status)
	}
	if a.ID == j.RequesterID {
		return Decision{}, before, errorf(CodeSelfApproval, "%s requested job %s and may not decide on it (the requester may cancel it instead)", a.name(), j.ID)
	}
	if a.ID == j.HolderID {
		return Decision{}, before, errorf(CodeSelfApproval, "%s is the holder of job %s and may not decide on it", a.name(), j.ID)
	}
	if gate == GateCAOperator && !a.Can(PermCAOperator) {
		return Decision{}, before, errorf(CodeRoleNotPermitted, "%s holds no role with the %s permission, which the %s gate needs", a.name(), PermCAOperator, gate)
	}
	if gate == GateRequest && !slices.ContainsFunc(p.Roles, a.HasRole) {
		return Decision{}, before, errorf(CodeRoleNotPermitted, "%s holds none of the roles that decide at the %s gate (%s)", a.name(), gate, joinRoles(p.Roles))
	}
	if gate == GateRequest && p.Scope == ScopeOrganization && (a.Organization == "" || a.Organization != j.HolderOrganization) {
		return Decision{}, before, errorf(CodeOutOfScope, "%s may not decide for a holder of another organisation", a.name())
	}
	for _, d := range j.Decisions {
		if d.ActorID != a.ID || d.BindingHash != j.BindingHash {
			continue // voided decisions do not stop anyone deciding again
		}
		// Request-gate decisions count across gates (one person never passes both
		// gates); CA-operator decisions belong to their attempt.
		if d.Gate == GateRequest || d.Attempt == j.Attempt {
			return Decision{}, before, errorf(CodeAlreadyDecided, "%s already decided (%s at the %s gate) on job %s", a.name(), d.Verdict, d.Gate, j.ID)
		}
	}
	if v.BindingHash != j.BindingHash {
		return Decision{}, before, errorf(CodeBindingMismatch, "job %s changed since %s saw it; review it again", j.ID, a.name())
	}
	if v.Verdict == VerdictReject && strings.TrimSpace(v.Reason) == "" {
		return Decision{}, before, errorf(CodeReasonRequired, "a rejection needs a reason")
	}
	d := Decision{ActorID: a.ID, Gate: gate, Verdict: v.Verdict, BindingHash: v.BindingHash, Attempt: j.Attempt, At: now, Reason: v.Reason}
	j.Decisions = append(slices.Clone(j.Decisions), d)
	after, _ := Evaluate(p, j, now)
	return d, after, nil
}

// DueForExpiry reports whether the job should move to expired at time now: a pending
// request past its life, an approved or dispatched job whose approvals lapsed before it
// started, or a CA-operator gate left undecided too long.
func DueForExpiry(p Policy, j Job, now time.Time) (bool, error) {
	switch j.State {
	case StatePendingApproval, StateApproved, StateDispatched, StateAwaitingCertificate:
	default:
		return false, nil
	}
	out, err := Evaluate(p, j, now)
	if err != nil {
		return false, err
	}
	return out.Status == StatusExpired, nil
}

func (j Job) validate() error {
	var errs []error
	if !KnownKind(j.Kind) {
		errs = append(errs, errorf(CodeInvalidInput, "job %s: unknown kind %q (known: %s)", j.ID, j.Kind, joinKinds()))
	}
	if err := knownStates(j.State); err != nil {
		errs = append(errs, err)
	}
	if j.RequesterID == "" {
		errs = append(errs, errorf(CodeInvalidInput, "job %s has no requester", j.ID))
	}
	if j.BindingHash == "" {
		errs = append(errs, errorf(CodeInvalidInput, "job %s has no binding hash", j.ID))
	}
	return errors.Join(errs...)
}

func joinRoles(rs []Role) string {
	var names []string
	for _, r := range rs {
		names = append(names, string(r))
	}
	return strings.Join(names, ", ")
}
