package store

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// All times the store returns are UTC with microsecond precision, the precision both back
// ends keep; times passed in are converted the same way. A zero time means "none" and is
// stored as NULL.

// Organization scopes approvers and jobs.
type Organization struct {
	ID      string
	Name    string // unique, compared case-insensitively
	Created time.Time
}

// User is a person: a certificate holder, an operator, or both.
type User struct {
	ID             string
	Username       string // unique, compared case-insensitively
	DisplayName    string
	Email          string
	UPN            string
	OrganizationID string // "" for none
	Attributes     map[string]string
	Roles          []jobs.Role // cumulative, sorted, no duplicates; a holder may have none
	Disabled       bool
	Created        time.Time
	// Language is the language of the user's notifications ("fr", "en"); "" for the
	// coordinator's default.
	Language string
}

// HasRole reports whether u holds r.
func (u User) HasRole(r jobs.Role) bool { return slices.Contains(u.Roles, r) }

// APIToken is the stored side of an API token: never the token itself, which the store
// hands out once, when it is created.
type APIToken struct {
	ID       string // public part of the token, used for lookup
	UserID   string
	Name     string
	Created  time.Time
	Expires  time.Time // zero: never
	LastUsed time.Time
	Revoked  time.Time
	// Bootstrap marks the first administrator's token, made at the first start: the only
	// token that may never expire.
	Bootstrap bool
}

// CustomRole is a named set of permissions an administrator defines beside the built-in
// roles. Users hold it by name, like a built-in role.
type CustomRole struct {
	Name        string // jobs.ValidCustomRoleName
	Description string
	// OrganizationID limits the role to one organisation's jobs, holders and agents; ""
	// for every organisation.
	OrganizationID string
	Permissions    []jobs.Permission // sorted, no duplicates
	Created        time.Time
	Updated        time.Time
}

// Agent is an enrolled workstation agent.
type Agent struct {
	ID            string // chosen by the agent; unique
	Hostname      string
	OS            string
	Version       string
	PublicKey     []byte // the agent's key (DER SubjectPublicKeyInfo)
	BrokerUser    string // its own broker user, unique when set
	Enrolled      time.Time
	Approved      time.Time // zero until an administrator approves it
	ApprovedBy    string
	LastSeen      time.Time // last message of any kind
	LastHeartbeat time.Time
	Online        bool
	// LastRefusal is the last message claiming to be this agent that the coordinator
	// refused; zero At when there was none.
	LastRefusal AgentRefusal
	// State is where the agent is in its life cycle; StateReason, StateBy and StateAt say
	// who moved it there, when and why (empty for an agent enrolled active).
	State       AgentState
	StateReason string
	StateBy     string
	StateAt     time.Time
	// OrganizationID and Tags come from the enrolment key the agent enrolled with.
	OrganizationID string
	Tags           []string
	EnrolledWith   string    // the enrolment key's ID; "" when an administrator enrolled it
	CredentialsAt  time.Time // when its broker credentials were last sealed to it; zero: none
}

// AgentState is an agent's place in its life cycle.
type AgentState string

// Agent states. Pending agents wait for an administrator's approval and have no broker
// identity; active ones work; disabled ones have lost their broker identity and may be
// enabled again; removed is final (the record stays for its history).
const (
	AgentPending  AgentState = "pending"
	AgentActive   AgentState = "active"
	AgentDisabled AgentState = "disabled"
	AgentRemoved  AgentState = "removed"
)

// Valid reports whether s is one of the states.
func (s AgentState) Valid() bool {
	switch s {
	case AgentPending, AgentActive, AgentDisabled, AgentRemoved:
		return true
	}
	return false
}

// AgentStateChange moves an agent to State, said by By at At for Reason.
type AgentStateChange struct {
	State  AgentState
	Reason string
	By     string
	At     time.Time
}

// EnrolmentKind tells a one-off activation code from a reusable enrolment key.
type EnrolmentKind string

// Enrolment kinds.
const (
	EnrolmentCode     EnrolmentKind = "code" // one use, possibly for one named agent
	EnrolmentReusable EnrolmentKind = "key"  // reusable, up to MaxUses (0: no limit)
)

// EnrolmentKey is the stored side of an activation code or enrolment key: never the
// secret itself, only its hash.
type EnrolmentKey struct {
	ID             string // public part of the secret, used for lookup
	Kind           EnrolmentKind
	Name           string
	OrganizationID string // given to the agents it enrols; "" for none
	Tags           []string
	AgentID        string // a code for this agent ID only; "" for any
	PreApproved    bool   // its agents are active at once; else pending an administrator
	MaxUses        int    // 0: no limit
	Uses           int
	Created        time.Time
	CreatedBy      string
	Expires        time.Time
	LastUsed       time.Time
	Revoked        time.Time
	RevokedBy      string
}

// EnrolmentKeyFilter selects enrolment keys; they are listed oldest first.
type EnrolmentKeyFilter struct {
	Kind EnrolmentKind // "" for both
	// Usable keeps only keys that could enrol an agent at this time: not revoked, not
	// expired, not used up. Zero: every key.
	Usable time.Time
}

// KeyUnusableError is an enrolment key whose secret matched but which may not be used:
// Reason is "revoked", "expired" or "used" (a one-off code used, or a key past its limit).
type KeyUnusableError struct {
	Key    EnrolmentKey
	Reason string
}

func (e *KeyUnusableError) Error() string {
	return fmt.Sprintf("store: enrolment %s %s: %s", e.Key.Kind, e.Key.ID, e.Reason)
}

// Unwrap makes it match ErrConflict: the key exists, its state forbids the use.
func (e *KeyUnusableError) Unwrap() error { return ErrConflict }

// Heartbeat is an agent's heartbeat as received, for RecordHeartbeats.
type Heartbeat struct {
	AgentID string
	At      time.Time
}

// AgentRefusal is a message the coordinator refused that claimed to come from an agent.
// Anyone who may publish events can claim any agent ID: Sender, the broker user that
// published it (as the broker vouches for it), says who it really came from.
type AgentRefusal struct {
	At     time.Time
	Code   string // the protocol error code it was dead-lettered with
	Sender string // the publishing broker user; "" when the message carried none
	Reason string
}

// Token is a hardware token as last reported by an agent.
type Token struct {
	Serial       string
	AgentID      string // agent it was last seen on; "" when unknown
	Label        string
	Manufacturer string
	Model        string
	Firmware     string          // "major.minor", as CK_TOKEN_INFO gives it; "" when not reported
	Flags        json.RawMessage // as reported; compared as JSON, not byte for byte
	LastSeen     time.Time
}

// Certificate is a certificate the coordinator issued or installed.
type Certificate struct {
	Serial           string // lower-case hex without leading zeros; input is normalised
	JobID            string
	HolderID         string
	Profile          string
	TokenSerial      string
	AgentID          string
	Subject          string
	Issuer           string
	NotBefore        time.Time
	NotAfter         time.Time
	DER              []byte
	Created          time.Time
	RevokedAt        time.Time // zero while valid
	RevocationReason int       // RFC 5280 CRLReason code
}

// Profile is a named issuance profile, kept as the text it was given.
type Profile struct {
	Name        string
	Content     []byte // YAML or JSON text, byte for byte
	ContentHash string // the profile's hash as the profile package computes it (required)
	Version     int64  // 1 for the first version, +1 per change
	Updated     time.Time
	UpdatedBy   string
}

// Job is one unit of work for an agent or the coordinator. Which transitions and steps
// are legal is decided by package jobs before the store is called; the store makes each
// change atomic and refuses lost updates.
type Job struct {
	ID             string // random and URL-safe; generated when empty
	Kind           jobs.Kind
	State          jobs.State
	StateSince     time.Time // when the job entered State; an edit resets it
	HolderID       string
	ProfileName    string
	ProfileHash    string
	AgentID        string // target agent
	TokenSerial    string // target token, when known
	RequesterID    string
	OrganizationID string
	BindingHash    string        // hash of what approvers approve; an edit changes it
	Attempt        int           // starts at 1; a fencing token for results
	Progress       jobs.Progress // steps of the current attempt
	Deadline       time.Time
	Created        time.Time
	Updated        time.Time
	ErrorCode      string // last error
	ErrorMessage   string
	SupersededBy   string
	Version        int64 // row version for compare-and-set; 1 on creation, +1 per change
	// IdempotencyKey is the key the requester's create request carried ("" for none):
	// unique per requester, so a repeated request finds this job instead of making one.
	IdempotencyKey string
	// RequestHash identifies the create request the key was used with.
	RequestHash string
	// RolloutID is the rollout that made the job ("" for none): its approval is the
	// job's request approval.
	RolloutID string
	// Document is the document the request cites, for the crypto-device register; zero
	// for none.
	Document Document
}

// Document is the document (number and date) an issuance is based on. Date is a calendar
// date, YYYY-MM-DD.
type Document struct {
	Number string
	Date   string
}

// IsZero reports whether no document is cited.
func (d Document) IsZero() bool { return d == Document{} }

// Rules returns the job as package jobs reads it, with the organisation of its holder and
// the decisions recorded on it.
func (j Job) Rules(holderOrganization string, approvals []Approval) jobs.Job {
	decisions := make([]jobs.Decision, len(approvals))
	for i, a := range approvals {
		decisions[i] = a.Decision()
	}
	return jobs.Job{ID: j.ID, Kind: j.Kind, State: j.State, Attempt: j.Attempt, RequesterID: j.RequesterID,
		HolderID: j.HolderID, HolderOrganization: holderOrganization, ProfileName: j.ProfileName,
		TargetAgentID: j.AgentID, TokenSerial: j.TokenSerial, BindingHash: j.BindingHash,
		StateSince: j.StateSince, Decisions: decisions, Progress: j.Progress, Rollout: j.RolloutID}
}

// JobEdit replaces what a pending request asks for. Approvals bound to the old binding hash
// no longer count (package jobs ignores them), and the request's expiry starts again.
type JobEdit struct {
	HolderID    string
	ProfileName string
	ProfileHash string
	AgentID     string
	TokenSerial string
	BindingHash string
	At          time.Time // zero: now
}

// JobChange is what accompanies a state change besides the new state.
type JobChange struct {
	Actor  string // who made the change: a user ID, "system", an agent ID
	Reason string
	At     time.Time // zero: now

	NewAttempt   bool      // start a new attempt (attempt+1, progress reset): older results are void
	Error        *JobError // nil leaves the last error as it is; a zero JobError clears it
	SupersededBy string    // set when not empty
	TokenSerial  string    // set when not empty (the token became known)
	Deadline     time.Time // set when not zero
}

// JobError is the last error a job met.
type JobError struct {
	Code    string
	Message string
}

// JobEvent is one state transition in a job's timeline.
type JobEvent struct {
	ID      int64
	JobID   string
	From    jobs.State // "" for the creation
	To      jobs.State
	Attempt int
	Actor   string
	Reason  string
	At      time.Time
}

// JobStep is progress reported inside the running state.
type JobStep struct {
	ID      int64
	JobID   string
	Attempt int
	Step    jobs.Step
	Detail  string
	At      time.Time
}

// JobAttempt records when an attempt started and what the dispatcher learnt of it.
type JobAttempt struct {
	JobID   string
	Attempt int
	Started time.Time

	// DispatchMessageID is the message ID of the dispatch written to the outbox for this
	// attempt; empty until then.
	DispatchMessageID string
	// WaitingReason says why the attempt is not dispatched yet (no seal key from the
	// agent, a PIN the coordinator does not hold, ...); empty once dispatched.
	WaitingReason string
	// PublicKey is the key (PKIX DER) the agent reported at key_generated.
	PublicKey []byte
	// CSR is the one CSR (DER) accepted for the attempt, at CSRAccepted.
	CSR         []byte
	CSRAccepted time.Time
	// TokenSerial is the token the agent reported working on (token_found, or the CSR's
	// token): the only token the attempt's later reports may name.
	TokenSerial string
	// Reinitialised: the agent reported initialising that token in this attempt, so the
	// PINs its result carries replace the token's kept ones.
	Reinitialised bool
	// ResultMessageID is the one result taken for the attempt; empty until then.
	ResultMessageID string
	// ResultSummary is what that result said ("failed: job_cancelled: ...").
	ResultSummary string
}

// PIN purposes of TokenPIN, as the protocol names them.
const (
	PINPurposeUser = jobs.PINUser
	PINPurposeSO   = jobs.PINSO
)

// TokenPIN is a PIN an agent set on a token, kept as the agent sealed it to the
// coordinator's result key: never in clear. Opening it needs that key and the binding it
// was sealed with (JobID, Attempt, Purpose).
type TokenPIN struct {
	ID          int64
	TokenSerial string
	Purpose     string // PINPurposeUser or PINPurposeSO
	JobID       string // the job and attempt whose result carried it
	Attempt     int
	Sealed      json.RawMessage // protocol.Sealed, as received
	Recorded    time.Time
	Revealed    time.Time // zero until the PIN was shown to its holder (at most once)
}

// Approval is one approver's decision at one gate, bound to the hash of what was
// approved and to the job's attempt.
type Approval struct {
	ID         int64
	JobID      string
	Gate       jobs.Gate
	ApproverID string
	Verdict    jobs.Verdict
	BoundHash  string
	Attempt    int
	Reason     string
	At         time.Time
	Expires    time.Time // zero: does not expire
}

// Decision is the approval as package jobs reads it.
func (a Approval) Decision() jobs.Decision {
	return jobs.Decision{ActorID: a.ApproverID, Gate: a.Gate, Verdict: a.Verdict, BindingHash: a.BoundHash,
		Attempt: a.Attempt, At: a.At, Reason: a.Reason}
}

// SealFunc chains e to prev (nil for the first entry) and returns the entry to store, with
// Seq, PrevHash and Hash set: audit.Seal. The store calls it while it holds the chain head,
// so the chain has no forks, and checks that the result links where it must.
type SealFunc func(prev *audit.Entry, e audit.Entry) (audit.Entry, error)

// OutboxMessage is a message written in the same transaction as the change that caused it,
// sent later by the publisher.
type OutboxMessage struct {
	ID            int64
	MessageID     string // generated when empty; receivers dedupe on it
	Exchange      string
	RoutingKey    string
	Type          string
	CorrelationID string // the job ID, when there is one
	Body          []byte
	Headers       json.RawMessage // kept byte for byte
	Created       time.Time
	SentAt        time.Time // zero until the broker confirmed it
	Attempts      int
	LastError     string
}

// InboxEntry records a processed message, for deduplication.
type InboxEntry struct {
	MessageID string
	Received  time.Time
	JobID     string
	Result    string
}

// Page asks for one page of a list. Lists have a stable order; Cursor is the opaque value a
// previous call returned as next.
type Page struct {
	Limit  int // 0: DefaultPageLimit; at most MaxPageLimit
	Cursor string
}

// Page sizes.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// UserFilter selects users; empty fields match everything. Users are listed by username.
type UserFilter struct {
	OrganizationID string
	Role           jobs.Role
	Disabled       *bool
	// Search keeps users whose username, display name or e-mail address contains it,
	// ignoring case.
	Search string
}

// AgentFilter selects agents; nil fields match everything. Agents are listed by ID.
type AgentFilter struct {
	Online   *bool
	Approved *bool
	State    AgentState // "" for every state
	// Search keeps agents whose ID or hostname contains it, ignoring case.
	Search string
}

// TokenFilter selects tokens. Tokens are listed by serial.
type TokenFilter struct {
	AgentID string
	// HolderID keeps tokens that carry a certificate of this user.
	HolderID string
	// Model keeps tokens whose model or manufacturer contains it, ignoring case.
	Model string
	// Search keeps tokens whose serial or label contains it, ignoring case.
	Search string
}

// CertificateFilter selects certificates; empty fields match everything. Certificates are
// listed newest (not before) first.
type CertificateFilter struct {
	HolderID    string
	TokenSerial string
	AgentID     string
	JobID       string
	Profile     string
	Revoked     *bool
	// ExpiresBefore keeps certificates whose NotAfter is before it; zero: any.
	ExpiresBefore time.Time
}

// JobFilter selects jobs; empty fields match everything. Jobs are listed newest first.
type JobFilter struct {
	States         []jobs.State
	Kinds          []jobs.Kind
	OrganizationID string
	HolderID       string
	AgentID        string
	RequesterID    string
	ProfileName    string
	TokenSerial    string
	RolloutID      string
	DeadlineBefore time.Time // jobs with a deadline before this time
	// Undispatched: only jobs whose current attempt has no dispatch written yet
	// (JobAttempt.DispatchMessageID empty).
	Undispatched bool
}

// AuditFilter selects audit entries, listed by sequence number.
type AuditFilter struct {
	FromSeq int64 // first sequence number, inclusive; 0: from the start
	ToSeq   int64 // last sequence number, inclusive; 0: to the end
	JobID   string
	Action  string // exact action name
	Actor   string // exact actor as recorded (a user ID, or system:… )
	// Newest lists newest first (the page cursor then continues downwards).
	Newest bool
}
