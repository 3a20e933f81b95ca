// Package api holds the JSON types of the coordinator's HTTP API, the schemas of
// openapi.yaml beside it: the server (coordinator/httpapi) encodes them, the Go client
// (coordinator/client) and tokenfleetctl decode them. One definition per type keeps the
// two sides from drifting; TestOpenAPI holds the types to the description.
//
// Responses carry every field the server always sends without omitempty, so that a
// client sees them even when empty; lists are never null. Request types leave out what
// the caller did not set, and never a required field. Changing a JSON name or an
// omitempty here changes the wire: clients in the field depend on it.
//
// The package imports nothing of the coordinator but the domain types its fields use
// (jobs' kinds, states and roles, audit's entries and checkpoints, a rollout's spec).
package api

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// ErrorResponse is the body of every error answer (the Error schema).
type ErrorResponse struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what failed. Code is stable: match on it, never on Message.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"` // the request field at fault, when there is one
	// Entries name each refused entry of a batch request (POST /api/v1/agents/batch),
	// which is refused whole.
	Entries []ErrorEntry `json:"entries,omitempty"`
}

// ErrorEntry is what is wrong with one entry of a batch request.
type ErrorEntry struct {
	Index   int    `json:"index"` // the entry's position in the request, from 0
	ID      string `json:"id"`    // the entry's ID as given
	Code    string `json:"code"`  // bad_request or conflict
	Field   string `json:"field"` // the entry's field at fault
	Message string `json:"message"`
}

// Health is the answer of /healthz.
type Health struct {
	Status string `json:"status"` // "ok" or "unhealthy"
	Store  string `json:"store"`
}

// List is one page of a paginated list: NextCursor continues it, "" on the last page.
type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// The lists of the API.
type (
	OrgList             = List[Org]
	UserList            = List[User]
	JobList             = List[Job]
	AgentList           = List[Agent]
	TokenList           = List[Token]
	CertificateList     = List[Certificate]
	AuditCheckpointList = List[AuditCheckpoint]
)

// Org is an organisation.
type Org struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// OrgCreate is the request to create an organisation.
type OrgCreate struct {
	Name string `json:"name"`
}

// User is a person: a certificate holder, an operator, or both.
type User struct {
	ID           string            `json:"id"`
	Username     string            `json:"username"`
	DisplayName  string            `json:"display_name,omitempty"`
	Email        string            `json:"email,omitempty"`
	UPN          string            `json:"upn,omitempty"`
	Organization string            `json:"organization,omitempty"` // organisation name
	Attributes   map[string]string `json:"attributes,omitempty"`
	Roles        []jobs.Role       `json:"roles"`
	Disabled     bool              `json:"disabled"`
	Created      time.Time         `json:"created"`
	// Language is the language of the person's notifications (fr, en); empty: the
	// coordinator's notifications.language.
	Language string `json:"language,omitempty"`
}

// UserCreate is the request to create a person.
type UserCreate struct {
	Username     string            `json:"username"`
	DisplayName  string            `json:"display_name,omitempty"`
	Email        string            `json:"email,omitempty"`
	UPN          string            `json:"upn,omitempty"`
	Organization string            `json:"organization,omitempty"`
	Attributes   map[string]string `json:"attributes,omitempty"`
	Roles        []jobs.Role       `json:"roles,omitempty"`
	Language     string            `json:"language,omitempty"`
}

// UserUpdate changes a person: a field left out stays as it is; an empty one clears it.
// Roles, when given, replace the person's roles whole.
type UserUpdate struct {
	DisplayName  *string            `json:"display_name,omitempty"`
	Email        *string            `json:"email,omitempty"`
	UPN          *string            `json:"upn,omitempty"`
	Organization *string            `json:"organization,omitempty"`
	Attributes   *map[string]string `json:"attributes,omitempty"`
	Roles        *[]jobs.Role       `json:"roles,omitempty"`
	Language     *string            `json:"language,omitempty"`
}

// APITokenCreate asks for a new API token.
type APITokenCreate struct {
	Name string `json:"name,omitempty"`
	// ExpiresIn is a Go duration or whole days ("90d"), at most the coordinator's
	// api_tokens.max_ttl; empty: its api_tokens.default_ttl.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// APIToken is an API token as listed: never its secret.
type APIToken struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Username string    `json:"username"`
	Created  time.Time `json:"created"`
	// Expires is zero only for the bootstrap token, which never expires (Bootstrap).
	Expires   time.Time `json:"expires,omitzero"`
	LastUsed  time.Time `json:"last_used,omitzero"`
	Revoked   time.Time `json:"revoked,omitzero"`
	Bootstrap bool      `json:"bootstrap"`
}

// APITokenList is a person's API tokens, oldest first (not paginated).
type APITokenList struct {
	Items []APIToken `json:"items"`
}

// CustomRole is a named set of permissions beside the built-in roles.
type CustomRole struct {
	Name         string            `json:"name"`
	Description  string            `json:"description,omitempty"`
	Organization string            `json:"organization,omitempty"` // "" for every organisation
	Permissions  []jobs.Permission `json:"permissions"`
	Created      time.Time         `json:"created"`
	Updated      time.Time         `json:"updated"`
}

// CustomRoleList is every custom role, by name (not paginated).
type CustomRoleList struct {
	Items []CustomRole `json:"items"`
}

// CustomRoleCreate creates a custom role; the same without name replaces one (PUT).
type CustomRoleCreate struct {
	Name         string            `json:"name,omitempty"`
	Description  string            `json:"description,omitempty"`
	Organization string            `json:"organization,omitempty"`
	Permissions  []jobs.Permission `json:"permissions"`
}

// RecoveryCertificate is one of the organisation's backup keys: escrowed encryption keys
// are sealed to its public key; its private half is held outside the coordinator.
type RecoveryCertificate struct {
	ID           string    `json:"id"`
	KeyID        string    `json:"key_id"` // fingerprint of the public key, as archives name it
	CommonName   string    `json:"common_name"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	Certificate  string    `json:"certificate"` // PEM
	Added        time.Time `json:"added"`
	AddedBy      string    `json:"added_by"` // username
	Retired      time.Time `json:"retired,omitzero"`
	RetiredBy    string    `json:"retired_by,omitempty"`
	RetireReason string    `json:"retire_reason,omitempty"`
}

// RecoveryCertificateList is the recovery certificates, in use first, each by expiry (not
// paginated: an organisation has a handful).
type RecoveryCertificateList struct {
	Items []RecoveryCertificate `json:"items"`
}

// RecoveryCertificateAdd adds a recovery certificate.
type RecoveryCertificateAdd struct {
	Certificate string `json:"certificate"` // PEM
}

// RecoveryCertificateRetire retires one, saying why.
type RecoveryCertificateRetire struct {
	Reason string `json:"reason"`
}

// APITokenIssued is a new API token. Token is the secret: the server shows it this once.
type APITokenIssued struct {
	ID       string    `json:"id"`
	Token    string    `json:"token"`
	Username string    `json:"username"`
	Expires  time.Time `json:"expires,omitzero"`
}

// Profile is an issuance profile as the coordinator stores it.
type Profile struct {
	Name               string    `json:"name"`
	Description        string    `json:"description,omitempty"`
	Version            int64     `json:"version"`
	Hash               string    `json:"hash"`
	ApprovalsRequired  int       `json:"approvals_required"`
	CAOperatorRequired bool      `json:"ca_operator_required"`
	Key                string    `json:"key"` // "rsa2048", "p256", ...
	Updated            time.Time `json:"updated"`
	UpdatedBy          string    `json:"updated_by"`
	YAML               string    `json:"yaml,omitempty"` // only for one profile
}

// ProfileList is the list of profiles (not paginated).
type ProfileList struct {
	Items []Profile `json:"items"`
}

// Headers of job and rollout creation (createJob, createRollout). A request may carry
// IdempotencyKeyHeader: the same key and body from the same user again returns the job (or
// rollout) created the first time, status 200 with ReplayedHeader set to "true", and
// creates nothing.
const (
	IdempotencyKeyHeader = "Idempotency-Key"
	ReplayedHeader       = "Idempotent-Replayed"
)

// JobCreate queues a job.
type JobCreate struct {
	Kind    jobs.Kind `json:"kind"`
	Holder  string    `json:"holder"` // holder username
	Agent   string    `json:"agent"`  // target agent ID
	Profile string    `json:"profile"`
	// TokenSerial is the token to use; empty means any token the profile allows.
	TokenSerial string `json:"token_serial,omitempty"`
	// Deadline defaults to the profile's expires_after from now.
	Deadline time.Time `json:"deadline,omitzero"`
	// Document is the document the issuance is based on, for the crypto-device register:
	// required when the profile says register.document: required.
	Document *Document `json:"document,omitempty"`
	// CertificateID (register_certificate only) is the CKA_ID, in hex, of the certificate on
	// the token to register as the holder's encryption key.
	CertificateID string `json:"certificate_id,omitempty"`
}

// Document is the document (number and date) an issuance is based on.
type Document struct {
	Number string `json:"number"`
	Date   string `json:"date"` // YYYY-MM-DD
}

// Job is a job as listed.
type Job struct {
	ID           string     `json:"id"`
	Kind         jobs.Kind  `json:"kind"`
	State        jobs.State `json:"state"`
	Holder       string     `json:"holder"`
	Profile      string     `json:"profile"`
	ProfileHash  string     `json:"profile_hash"`
	Agent        string     `json:"agent"`
	TokenSerial  string     `json:"token_serial,omitempty"`
	Requester    string     `json:"requester"`
	Organization string     `json:"organization,omitempty"`
	BindingHash  string     `json:"binding_hash"`
	Attempt      int        `json:"attempt"`
	Approvals    string     `json:"approvals"` // progress, e.g. "1/2"
	Deadline     time.Time  `json:"deadline,omitzero"`
	Created      time.Time  `json:"created"`
	Updated      time.Time  `json:"updated"`
	ErrorCode    string     `json:"error_code,omitempty"`
	ErrorMessage string     `json:"error_message,omitempty"`
	SupersededBy string     `json:"superseded_by,omitempty"`
	// Document is the document the request cites; approvers approve it with the rest.
	Document *Document `json:"document,omitempty"`
}

// JobDetail is one job with its approvals, timeline and steps.
type JobDetail struct {
	Job
	ApprovalList []JobApproval `json:"approval_list"`
	Timeline     []JobEvent    `json:"timeline"`
	Steps        []JobStep     `json:"steps"`
	// WaitingReason says why an approved job is not sent to its agent yet.
	WaitingReason string `json:"waiting_reason,omitempty"`
	// AgentResult is what the agent said of the attempt's end, once it did.
	AgentResult string `json:"agent_result,omitempty"`
	// Subject and SANs are the certificate names the profile gives the holder now: what
	// an approver approves, together with the binding hash.
	Subject string   `json:"subject,omitempty"`
	SANs    []string `json:"sans,omitempty"` // "email:…", "upn:…", "dns:…"
	// TokenURI is the PKCS#11 URI (RFC 7512) of the job's token, when the job names one.
	TokenURI string `json:"token_uri,omitempty"`
	// AgentPresence is the presence of the job's agent: online, offline or
	// never_connected; AgentLastSeen is absent when it never connected.
	AgentPresence string    `json:"agent_presence"`
	AgentLastSeen time.Time `json:"agent_last_seen,omitzero"`
}

// JobApproval is one decision at a gate.
type JobApproval struct {
	Gate     jobs.Gate    `json:"gate"`
	Approver string       `json:"approver"`
	Decision jobs.Verdict `json:"decision"`
	Reason   string       `json:"reason,omitempty"`
	At       time.Time    `json:"at"`
	// Valid is false when the approval expired or was bound to another version of the job.
	Valid bool `json:"valid"`
}

// JobEvent is one state transition; From is empty for the job's creation.
type JobEvent struct {
	From    jobs.State `json:"from"`
	To      jobs.State `json:"to"`
	Attempt int        `json:"attempt"`
	Actor   string     `json:"actor"`
	Reason  string     `json:"reason,omitempty"`
	At      time.Time  `json:"at"`
}

// JobStep is progress reported inside the running state.
type JobStep struct {
	Attempt int       `json:"attempt"`
	Step    jobs.Step `json:"step"`
	Detail  string    `json:"detail,omitempty"`
	At      time.Time `json:"at"`
}

// Decision is the body of approve and reject.
type Decision struct {
	Reason string `json:"reason,omitempty"`
	// BindingHash is the job's binding_hash as the approver reviewed it; the decision is
	// refused when the job no longer has it. Empty: the job as it is now.
	BindingHash string `json:"binding_hash,omitempty"`
}

// Reason is the body of the calls that take only a reason: cancel, an agent's key reset.
type Reason struct {
	Reason string `json:"reason,omitempty"`
}

// PasswordSet sets a person's password for signing in to the web console.
type PasswordSet struct {
	Password string `json:"password"`
}

// OIDCUnlinked says how many links to identity providers' subjects were removed.
type OIDCUnlinked struct {
	Removed int `json:"removed"`
}

// Retry asks for a new attempt of a failed job.
type Retry struct {
	Reason string `json:"reason,omitempty"`
	// Deadline is the new attempt's deadline; zero keeps the job's, extended when it has
	// passed.
	Deadline time.Time `json:"deadline,omitzero"`
}

// UserPIN is a job's user PIN, shown once.
type UserPIN struct {
	PIN string `json:"pin"`
}

// Agent is a workstation agent with its presence.
type Agent struct {
	ID       string    `json:"id"`
	Hostname string    `json:"hostname"`
	OS       string    `json:"os"`
	Version  string    `json:"version"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Enrolled time.Time `json:"enrolled"`
	Approved bool      `json:"approved"`
	// LastRefusal is the last message claiming to be this agent that the coordinator
	// refused: why an agent that runs may still show as offline.
	LastRefusal AgentRefusal `json:"last_refusal,omitzero"`
	// State is the agent's place in its life cycle: pending (waiting for an
	// administrator), active, disabled or removed; StateReason, StateBy and StateAt say
	// why, who (a username, or enrolment_key:ID) and when.
	State        string    `json:"state"`
	StateReason  string    `json:"state_reason,omitempty"`
	StateBy      string    `json:"state_by,omitempty"`
	StateAt      time.Time `json:"state_at,omitzero"`
	Organization string    `json:"organization,omitempty"`
	Tags         []string  `json:"tags,omitempty"`
	EnrolledWith string    `json:"enrolled_with,omitempty"`
}

// EnrolmentKeyCreate asks for one-off activation codes (kind code) or a reusable
// enrolment key (kind key).
type EnrolmentKeyCreate struct {
	Kind         string   `json:"kind"`
	Count        int      `json:"count,omitempty"`
	Name         string   `json:"name,omitempty"`
	Organization string   `json:"organization,omitempty"`
	Tags         []string `json:"tags,omitempty"`
	AgentID      string   `json:"agent_id,omitempty"`
	PreApproved  bool     `json:"pre_approved,omitempty"`
	MaxUses      int      `json:"max_uses,omitempty"`
	ExpiresIn    string   `json:"expires_in,omitempty"` // a Go duration: 15m, 72h
}

// EnrolmentKey is a code or key as listed; Secret only in the answer that created it.
type EnrolmentKey struct {
	ID           string    `json:"id"`
	Kind         string    `json:"kind"`
	Name         string    `json:"name,omitempty"`
	Organization string    `json:"organization,omitempty"`
	Tags         []string  `json:"tags,omitempty"`
	AgentID      string    `json:"agent_id,omitempty"`
	PreApproved  bool      `json:"pre_approved"`
	MaxUses      int       `json:"max_uses"`
	Uses         int       `json:"uses"`
	Created      time.Time `json:"created"`
	CreatedBy    string    `json:"created_by"`
	Expires      time.Time `json:"expires"`
	LastUsed     time.Time `json:"last_used,omitzero"`
	Revoked      time.Time `json:"revoked,omitzero"`
	Secret       string    `json:"secret,omitempty"`
}

// EnrolmentKeys is the answer of a creation: the codes or key, each with its secret.
type EnrolmentKeys struct {
	Items []EnrolmentKey `json:"items"`
}

// Enrol and Enrolled are the agent's side of the API: shared with the agent through the
// protocol package, since agent and coordinator meet only on the wire.
type (
	Enrol    = protocol.EnrolRequest
	Enrolled = protocol.EnrolAnswer
)

// AgentRefusal is a message the coordinator refused that claimed to come from an agent.
// Sender is the broker user that published it, which is not necessarily the agent's: it
// says who really sent it.
type AgentRefusal struct {
	At     time.Time `json:"at"`
	Code   string    `json:"code"`
	Sender string    `json:"sender"`
	Reason string    `json:"reason"`
}

// AgentEnrol enrols an agent before it first connects.
type AgentEnrol struct {
	ID         string `json:"id"`
	Hostname   string `json:"hostname,omitempty"`
	BrokerUser string `json:"broker_user,omitempty"`
}

// MaxAgentBatch is how many agents one AgentBatchEnrol may hold.
const MaxAgentBatch = 1000

// AgentBatchEnrol enrols up to MaxAgentBatch agents at once, all or nothing.
type AgentBatchEnrol struct {
	Agents []AgentEnrol `json:"agents"`
}

// AgentBatch is the agents a batch enrolled, in the order given.
type AgentBatch struct {
	Items []Agent `json:"items"`
}

// Token is a hardware token as last reported by an agent.
type Token struct {
	Serial       string `json:"serial"`
	Agent        string `json:"agent,omitempty"`
	Label        string `json:"label"`
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	// URI is the token's PKCS#11 URI (RFC 7512): token label, manufacturer, serial, model.
	URI string `json:"uri"`
	// Flags are the token's PKCS#11 flags as the agent reported them.
	Flags    json.RawMessage `json:"flags,omitempty"`
	LastSeen time.Time       `json:"last_seen,omitzero"`
	// State is where the token is in its life cycle: active, suspended, lost, stolen,
	// damaged, retired or replaced.
	State string `json:"state"`
}

// Certificate is a certificate the coordinator issued or installed.
type Certificate struct {
	Serial      string    `json:"serial"`
	Job         string    `json:"job,omitempty"`
	Holder      string    `json:"holder,omitempty"`
	Profile     string    `json:"profile"`
	TokenSerial string    `json:"token_serial,omitempty"`
	Agent       string    `json:"agent,omitempty"`
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	RevokedAt   time.Time `json:"revoked_at,omitzero"`
	PEM         string    `json:"pem"`
}

// Revoke is the request to revoke a certificate.
type Revoke struct {
	// Reason is an RFC 5280 reason name such as key_compromise or superseded.
	Reason  string `json:"reason"`
	Comment string `json:"comment,omitempty"` // kept in the audit log
}

// TokenStateChange moves a token in its life cycle.
type TokenStateChange struct {
	// State is suspended, active (reinstate a suspended token), lost, stolen, damaged or
	// retired; replaced comes from a replacement's success.
	State  string `json:"state"`
	Reason string `json:"reason"` // required; kept in the audit log
}

// TokenIssue requests a temporary token for a suspended token, or a replacement: an issue
// job for the holder on agent, with profile, on token_serial (empty: any token the
// profile allows).
type TokenIssue struct {
	Holder      string    `json:"holder"`
	Agent       string    `json:"agent"`
	Profile     string    `json:"profile"`
	TokenSerial string    `json:"token_serial,omitempty"`
	Deadline    time.Time `json:"deadline,omitzero"`
}

// TokenLife is where a token is in its life cycle, with its history.
type TokenLife struct {
	Serial string `json:"serial"`
	State  string `json:"state"`
	Holder string `json:"holder,omitempty"` // username, when known
	// Reason, ChangedBy and ChangedAt are the last change's; absent for a token never moved.
	Reason       string    `json:"reason,omitempty"`
	ChangedBy    string    `json:"changed_by,omitempty"`
	ChangedAt    time.Time `json:"changed_at,omitzero"`
	TemporaryFor string    `json:"temporary_for,omitempty"` // the suspended token this one stands in for
	ReplacedBy   string    `json:"replaced_by,omitempty"`
	// Temporary lists the temporary tokens standing in for this one, by serial.
	Temporary []TokenLifeBrief `json:"temporary"`
	History   []TokenLifeEvent `json:"history"`
}

// TokenLifeBrief is a token's serial and state.
type TokenLifeBrief struct {
	Serial string `json:"serial"`
	State  string `json:"state"`
}

// TokenLifeEvent is one change of a token's state.
type TokenLifeEvent struct {
	From   string    `json:"from,omitempty"` // absent for the token's first record
	To     string    `json:"to"`
	Actor  string    `json:"actor"`
	Reason string    `json:"reason"`
	JobID  string    `json:"job_id,omitempty"`
	At     time.Time `json:"at"`
}

// CAChain is the coordinator's CA certificates, the issuing CA first.
type CAChain struct {
	PEM          string          `json:"pem"`
	Certificates []CACertificate `json:"certificates"`
}

// CACertificate is one certificate of the CA's chain.
type CACertificate struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	SHA256    string    `json:"sha256"`
}

// AuditEntry is an audit log entry as the API sends it. Entry turns it into the
// audit.Entry whose hash it carries.
type AuditEntry struct {
	Seq   int64     `json:"seq"`
	Time  time.Time `json:"time"`
	Actor string    `json:"actor"`
	// ActorName is the actor's username, or the actor as recorded when it is not a user
	// (system:expiry, agent:ws-01). It is not part of the hashed entry.
	ActorName string `json:"actor_name"`
	Action    string `json:"action"`
	Job       string `json:"job,omitempty"`
	Target    string `json:"target,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Details are kept as received: they are hashed byte for byte.
	Details  json.RawMessage `json:"details,omitempty"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
	// Unreadable: the coordinator could not read the stored row (it was changed behind
	// its back); the fields it names are empty, and verifiers report the entry.
	Unreadable string `json:"unreadable,omitempty"`
}

// AuditEntryOf is e as the API sends it.
func AuditEntryOf(e audit.Entry) AuditEntry {
	return AuditEntry{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Job: e.JobID, Target: e.Target,
		Reason: e.Reason, Details: e.Details, PrevHash: e.PrevHash, Hash: e.Hash, Unreadable: e.Unreadable}
}

// Entry returns the entry as the audit package hashes it. The time is read back in UTC
// (the hash covers whole microseconds, which RFC 3339 carries) and the details in the
// compact form the log sealed them in: the server's JSON encoder may re-space them,
// which changes no byte of the compact form.
func (e AuditEntry) Entry() audit.Entry {
	return audit.Entry{
		Seq:        e.Seq,
		Time:       e.Time.UTC(),
		Actor:      e.Actor,
		Action:     e.Action,
		JobID:      e.Job,
		Target:     e.Target,
		Reason:     e.Reason,
		Details:    compactDetails(e.Details),
		PrevHash:   e.PrevHash,
		Hash:       e.Hash,
		Unreadable: e.Unreadable,
	}
}

// compactDetails undoes what a JSON encoder may do to a raw object in transit: spacing and
// HTML escaping. It maps absent and null to nil, as the log stores them, and leaves every
// other value, including an empty object, as a value whose hash the log checks.
func compactDetails(d json.RawMessage) json.RawMessage {
	if len(d) == 0 || string(d) == "null" {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, d); err != nil {
		return d
	}
	var out bytes.Buffer
	json.HTMLEscape(&out, buf.Bytes())
	return out.Bytes()
}

// AuditPage is one page of the audit log.
type AuditPage struct {
	Items []AuditEntry `json:"items"`
	// NextAfterSeq is the after_seq of the next page; 0 when this was the last page.
	NextAfterSeq int64 `json:"next_after_seq"`
}

// AuditCheckpoint travels as audit.Checkpoint's own JSON: its signature covers exactly
// those fields, and a verifier needs the audit type anyway.
type AuditCheckpoint = audit.Checkpoint

// AuditCheckpointKey is the public key audit checkpoints verify with.
type AuditCheckpointKey struct {
	Algorithm string `json:"algorithm"` // "ed25519"
	KeyID     string `json:"key_id"`
	PEM       string `json:"pem"`
}

// PublicKey parses the key and checks that it is the one its ID names.
func (k AuditCheckpointKey) PublicKey() (ed25519.PublicKey, error) {
	pub, err := audit.ParseCheckpointPublicKey([]byte(k.PEM))
	if err != nil {
		return nil, err
	}
	if id := audit.CheckpointKeyID(pub); id != k.KeyID {
		return nil, fmt.Errorf("the coordinator's checkpoint key has ID %s but is named %s", id, k.KeyID)
	}
	return pub, nil
}
