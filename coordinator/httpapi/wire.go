package httpapi

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// The JSON shapes of coordinator/api/openapi.yaml. Lists are never null.

type healthJSON struct {
	Status string `json:"status"`
	Store  string `json:"store"`
}

type orgJSON struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

type orgCreateJSON struct {
	Name string `json:"name"`
}

type listJSON[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

type userJSON struct {
	ID           string            `json:"id"`
	Username     string            `json:"username"`
	DisplayName  string            `json:"display_name,omitempty"`
	Email        string            `json:"email,omitempty"`
	UPN          string            `json:"upn,omitempty"`
	Organization string            `json:"organization,omitempty"`
	Attributes   map[string]string `json:"attributes,omitempty"`
	Roles        []string          `json:"roles"`
	Disabled     bool              `json:"disabled"`
	Created      time.Time         `json:"created"`
}

type userCreateJSON struct {
	Username     string            `json:"username"`
	DisplayName  string            `json:"display_name"`
	Email        string            `json:"email"`
	UPN          string            `json:"upn"`
	Organization string            `json:"organization"`
	Attributes   map[string]string `json:"attributes"`
	Roles        []string          `json:"roles"`
}

type tokenCreateJSON struct {
	Name      string `json:"name"`
	ExpiresIn string `json:"expires_in"`
}

type tokenIssuedJSON struct {
	ID       string    `json:"id"`
	Token    string    `json:"token"`
	Username string    `json:"username"`
	Expires  time.Time `json:"expires,omitzero"`
}

type profileJSON struct {
	Name               string    `json:"name"`
	Description        string    `json:"description,omitempty"`
	Version            int64     `json:"version"`
	Hash               string    `json:"hash"`
	ApprovalsRequired  int       `json:"approvals_required"`
	CAOperatorRequired bool      `json:"ca_operator_required"`
	Key                string    `json:"key"`
	Updated            time.Time `json:"updated"`
	UpdatedBy          string    `json:"updated_by"`
	YAML               string    `json:"yaml,omitempty"`
}

type profileListJSON struct {
	Items []profileJSON `json:"items"`
}

type jobCreateJSON struct {
	Kind        string `json:"kind"`
	Holder      string `json:"holder"`
	Agent       string `json:"agent"`
	Profile     string `json:"profile"`
	TokenSerial string `json:"token_serial"`
	Deadline    string `json:"deadline"`
}

type decisionJSON struct {
	Reason      string `json:"reason"`
	BindingHash string `json:"binding_hash"`
}

type jobJSON struct {
	ID           string    `json:"id"`
	Kind         string    `json:"kind"`
	State        string    `json:"state"`
	Holder       string    `json:"holder"`
	Profile      string    `json:"profile"`
	ProfileHash  string    `json:"profile_hash"`
	Agent        string    `json:"agent"`
	TokenSerial  string    `json:"token_serial,omitempty"`
	Requester    string    `json:"requester"`
	Organization string    `json:"organization,omitempty"`
	BindingHash  string    `json:"binding_hash"`
	Attempt      int       `json:"attempt"`
	Approvals    string    `json:"approvals"`
	Deadline     time.Time `json:"deadline,omitzero"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
	ErrorCode    string    `json:"error_code,omitempty"`
	ErrorMessage string    `json:"error_message,omitempty"`
	SupersededBy string    `json:"superseded_by,omitempty"`
}

type approvalJSON struct {
	Gate     string    `json:"gate"`
	Approver string    `json:"approver"`
	Decision string    `json:"decision"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
	Valid    bool      `json:"valid"`
}

type eventJSON struct {
	From    string    `json:"from"`
	To      string    `json:"to"`
	Attempt int       `json:"attempt"`
	Actor   string    `json:"actor"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

type stepJSON struct {
	Attempt int       `json:"attempt"`
	Step    string    `json:"step"`
	Detail  string    `json:"detail,omitempty"`
	At      time.Time `json:"at"`
}

type jobDetailJSON struct {
	jobJSON
	ApprovalList  []approvalJSON `json:"approval_list"`
	Timeline      []eventJSON    `json:"timeline"`
	Steps         []stepJSON     `json:"steps"`
	WaitingReason string         `json:"waiting_reason,omitempty"`
	AgentResult   string         `json:"agent_result,omitempty"`
}

type agentJSON struct {
	ID       string    `json:"id"`
	Hostname string    `json:"hostname"`
	OS       string    `json:"os"`
	Version  string    `json:"version"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Enrolled time.Time `json:"enrolled"`
	Approved bool      `json:"approved"`
}

type tokenJSON struct {
	Serial       string          `json:"serial"`
	Agent        string          `json:"agent,omitempty"`
	Label        string          `json:"label"`
	Manufacturer string          `json:"manufacturer"`
	Model        string          `json:"model"`
	Flags        json.RawMessage `json:"flags,omitempty"`
	LastSeen     time.Time       `json:"last_seen,omitzero"`
}

type certificateJSON struct {
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

type auditEntryJSON struct {
	Seq      int64           `json:"seq"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor"`
	Action   string          `json:"action"`
	Job      string          `json:"job,omitempty"`
	Target   string          `json:"target,omitempty"`
	Reason   string          `json:"reason,omitempty"`
	Details  json.RawMessage `json:"details,omitempty"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
	// Unreadable: the stored row was changed into something the store cannot read; the
	// fields it names are left empty.
	Unreadable string `json:"unreadable,omitempty"`
}

type auditPageJSON struct {
	Items        []auditEntryJSON `json:"items"`
	NextAfterSeq int64            `json:"next_after_seq"`
}

func orgOut(o store.Organisation) orgJSON { return orgJSON{ID: o.ID, Name: o.Name, Created: o.Created} }

func userOut(u service.User) userJSON {
	roles := make([]string, len(u.Roles))
	for i, r := range u.Roles {
		roles[i] = string(r)
	}
	return userJSON{ID: u.ID, Username: u.Username, DisplayName: u.DisplayName, Email: u.Email, UPN: u.UPN,
		Organization: u.Organization, Attributes: u.Attributes, Roles: roles, Disabled: u.Disabled, Created: u.Created}
}

func profileOut(p service.Profile, withText bool) profileJSON {
	out := profileJSON{Name: p.Name, Description: p.Parsed.Description, Version: p.Version, Hash: p.ContentHash,
		ApprovalsRequired: p.Parsed.Approval.Required, CAOperatorRequired: p.Parsed.Approval.CAOperatorRequired,
		Key: p.Parsed.Key.String(), Updated: p.Updated, UpdatedBy: p.UpdatedByName}
	if withText {
		out.YAML = string(p.Content)
	}
	return out
}

func jobOut(j service.Job) jobJSON {
	return jobJSON{ID: j.ID, Kind: string(j.Kind), State: string(j.State), Holder: j.Holder, Profile: j.ProfileName,
		ProfileHash: j.ProfileHash, Agent: j.AgentID, TokenSerial: j.TokenSerial, Requester: j.Requester,
		Organization: j.Organization, BindingHash: j.BindingHash, Attempt: j.Attempt,
		Approvals: fmt.Sprintf("%d/%d", j.Approvals, j.Required), Deadline: j.Deadline, Created: j.Created,
		Updated: j.Updated, ErrorCode: j.ErrorCode, ErrorMessage: j.ErrorMessage, SupersededBy: j.SupersededBy}
}

func jobDetailOut(d service.JobDetail) jobDetailJSON {
	out := jobDetailJSON{jobJSON: jobOut(d.Job), ApprovalList: []approvalJSON{}, Timeline: []eventJSON{}, Steps: []stepJSON{},
		WaitingReason: d.WaitingReason, AgentResult: d.AgentResult}
	for _, a := range d.Decisions {
		out.ApprovalList = append(out.ApprovalList, approvalJSON{Gate: string(a.Gate), Approver: a.Approver,
			Decision: string(a.Verdict), Reason: a.Reason, At: a.At, Valid: a.Valid})
	}
	for _, e := range d.Timeline {
		out.Timeline = append(out.Timeline, eventJSON{From: string(e.From), To: string(e.To), Attempt: e.Attempt,
			Actor: e.ActorName, Reason: e.Reason, At: e.At})
	}
	for _, s := range d.Steps {
		out.Steps = append(out.Steps, stepJSON{Attempt: s.Attempt, Step: string(s.Step), Detail: s.Detail, At: s.At})
	}
	return out
}

func agentOut(a store.Agent) agentJSON {
	return agentJSON{ID: a.ID, Hostname: a.Hostname, OS: a.OS, Version: a.Version, Online: a.Online,
		LastSeen: a.LastSeen, Enrolled: a.Enrolled, Approved: !a.Approved.IsZero()}
}

func tokenOut(t store.Token) tokenJSON {
	out := tokenJSON{Serial: t.Serial, Agent: t.AgentID, Label: t.Label, Manufacturer: t.Manufacturer, Model: t.Model,
		LastSeen: t.LastSeen}
	if json.Valid(t.Flags) {
		out.Flags = t.Flags
	}
	return out
}

func certificateOut(c service.Certificate) certificateJSON {
	out := certificateJSON{Serial: c.Serial, Job: c.JobID, Holder: c.Holder, Profile: c.Profile, TokenSerial: c.TokenSerial,
		Agent: c.AgentID, Subject: c.Subject, Issuer: c.Issuer, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		RevokedAt: c.RevokedAt}
	if len(c.DER) > 0 {
		out.PEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER}))
	}
	return out
}

func auditOut(e audit.Entry) auditEntryJSON {
	return auditEntryJSON{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Job: e.JobID, Target: e.Target,
		Reason: e.Reason, Details: e.Details, PrevHash: e.PrevHash, Hash: e.Hash, Unreadable: e.Unreadable}
}
