package client

import (
	"encoding/json"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// The types below are the schemas of coordinator/api/openapi.yaml, field for field. Times
// left out by the server (or null) stay zero.

// Health is the answer of /healthz.
type Health struct {
	Status string `json:"status"` // "ok" or "unhealthy"
	Store  string `json:"store,omitempty"`
}

// Page asks for one page of a list: at most Limit items (0: the server's default) after
// the position Cursor names (a previous page's NextCursor; "" for the first page).
type Page struct {
	Limit  int
	Cursor string
}

// Org is an organisation.
type Org struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created,omitzero"`
}

// OrgList is one page of organisations.
type OrgList struct {
	Items      []Org  `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
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
	Roles        []jobs.Role       `json:"roles,omitempty"`
	Disabled     bool              `json:"disabled,omitempty"`
	Created      time.Time         `json:"created,omitzero"`
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
}

// UserFilter narrows a list of people.
type UserFilter struct {
	Organization string // organisation name
	Role         jobs.Role
}

// UserList is one page of people.
type UserList struct {
	Items      []User `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// APITokenCreate asks for a new API token.
type APITokenCreate struct {
	Name string `json:"name,omitempty"`
	// ExpiresIn is a Go duration or whole days ("90d"); empty: the token never expires.
	ExpiresIn string `json:"expires_in,omitempty"`
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
	Key                string    `json:"key,omitempty"` // "rsa2048", "p256", ...
	Updated            time.Time `json:"updated,omitzero"`
	UpdatedBy          string    `json:"updated_by,omitempty"`
	YAML               string    `json:"yaml,omitempty"`
}

// ProfileList is the list of profiles.
type ProfileList struct {
	Items []Profile `json:"items"`
}

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
}

// Job is a job as listed.
type Job struct {
	ID           string     `json:"id"`
	Kind         jobs.Kind  `json:"kind"`
	State        jobs.State `json:"state"`
	Holder       string     `json:"holder"`
	Profile      string     `json:"profile"`
	ProfileHash  string     `json:"profile_hash,omitempty"`
	Agent        string     `json:"agent"`
	TokenSerial  string     `json:"token_serial,omitempty"`
	Requester    string     `json:"requester"`
	Organization string     `json:"organization,omitempty"`
	BindingHash  string     `json:"binding_hash,omitempty"`
	Attempt      int        `json:"attempt"`
	Approvals    string     `json:"approvals,omitempty"` // progress, e.g. "1/2"
	Deadline     time.Time  `json:"deadline,omitzero"`
	Created      time.Time  `json:"created,omitzero"`
	Updated      time.Time  `json:"updated,omitzero"`
	ErrorCode    string     `json:"error_code,omitempty"`
	ErrorMessage string     `json:"error_message,omitempty"`
	SupersededBy string     `json:"superseded_by,omitempty"`
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
}

// JobApproval is one decision at a gate.
type JobApproval struct {
	Gate     jobs.Gate    `json:"gate"`
	Approver string       `json:"approver"`
	Decision jobs.Verdict `json:"decision"`
	Reason   string       `json:"reason,omitempty"`
	At       time.Time    `json:"at,omitzero"`
	// Valid is false when the approval expired or was bound to another version of the job.
	Valid bool `json:"valid"`
}

// JobEvent is one state transition.
type JobEvent struct {
	From    jobs.State `json:"from"`
	To      jobs.State `json:"to"`
	Attempt int        `json:"attempt"`
	Actor   string     `json:"actor"`
	Reason  string     `json:"reason,omitempty"`
	At      time.Time  `json:"at,omitzero"`
}

// JobStep is progress reported inside the running state.
type JobStep struct {
	Attempt int       `json:"attempt"`
	Step    jobs.Step `json:"step"`
	Detail  string    `json:"detail,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// JobFilter narrows a list of jobs; empty fields do not filter.
type JobFilter struct {
	State        jobs.State
	Organization string
	Holder       string // holder username
	Agent        string
	Kind         jobs.Kind
}

// JobList is one page of jobs, newest first.
type JobList struct {
	Items      []Job  `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// Decision is the body of approve, reject and cancel.
type Decision struct {
	Reason string `json:"reason,omitempty"`
}

// Agent is a workstation agent with its presence.
type Agent struct {
	ID       string    `json:"id"`
	Hostname string    `json:"hostname,omitempty"`
	OS       string    `json:"os,omitempty"`
	Version  string    `json:"version,omitempty"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Enrolled time.Time `json:"enrolled,omitzero"`
	Approved bool      `json:"approved"`
}

// AgentList is one page of agents.
type AgentList struct {
	Items      []Agent `json:"items"`
	NextCursor string  `json:"next_cursor,omitempty"`
}

// Token is a hardware token as last reported by an agent.
type Token struct {
	Serial       string          `json:"serial"`
	Agent        string          `json:"agent,omitempty"`
	Label        string          `json:"label,omitempty"`
	Manufacturer string          `json:"manufacturer,omitempty"`
	Model        string          `json:"model,omitempty"`
	Flags        json.RawMessage `json:"flags,omitempty"`
	LastSeen     time.Time       `json:"last_seen,omitzero"`
}

// TokenFilter narrows a list of tokens.
type TokenFilter struct {
	Agent string
}

// TokenList is one page of tokens.
type TokenList struct {
	Items      []Token `json:"items"`
	NextCursor string  `json:"next_cursor,omitempty"`
}

// Certificate is a certificate the coordinator issued or installed.
type Certificate struct {
	Serial      string    `json:"serial"`
	Job         string    `json:"job,omitempty"`
	Holder      string    `json:"holder,omitempty"`
	Profile     string    `json:"profile,omitempty"`
	TokenSerial string    `json:"token_serial,omitempty"`
	Agent       string    `json:"agent,omitempty"`
	Subject     string    `json:"subject,omitempty"`
	Issuer      string    `json:"issuer,omitempty"`
	NotBefore   time.Time `json:"not_before,omitzero"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	RevokedAt   time.Time `json:"revoked_at,omitzero"`
	PEM         string    `json:"pem,omitempty"`
}

// CertificateFilter narrows a list of certificates.
type CertificateFilter struct {
	Holder string
	Agent  string
	Token  string // token serial
}

// CertificateList is one page of certificates.
type CertificateList struct {
	Items      []Certificate `json:"items"`
	NextCursor string        `json:"next_cursor,omitempty"`
}
