package httpapi

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/register"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// The service's views as the API's types (package api). Lists are never null.

func listOf[V, T any](items []V, next string, f func(V) T) api.List[T] {
	out := api.List[T]{Items: make([]T, len(items)), NextCursor: next}
	for i, v := range items {
		out.Items[i] = f(v)
	}
	return out
}

func orgOut(o service.Organization) api.Org {
	return api.Org{ID: o.ID, Name: o.Name, Created: o.Created}
}

func userOut(u service.User) api.User {
	roles := u.Roles
	if roles == nil {
		roles = []jobs.Role{}
	}
	return api.User{ID: u.ID, Username: u.Username, DisplayName: u.DisplayName, Email: u.Email, UPN: u.UPN,
		Organization: u.Organization, Attributes: u.Attributes, Roles: roles, Disabled: u.Disabled, Created: u.Created, Language: u.Language}
}

func profileOut(p service.Profile, withText bool) api.Profile {
	out := api.Profile{Name: p.Name, Description: p.Parsed.Description, Version: p.Version, Hash: p.ContentHash,
		ApprovalsRequired: p.Parsed.Approval.Required, CAOperatorRequired: p.Parsed.Approval.CAOperatorRequired,
		Key: p.Parsed.Key.String(), Updated: p.Updated, UpdatedBy: p.UpdatedByName}
	if withText {
		out.YAML = string(p.Content)
	}
	return out
}

func profilesOut(ps []service.Profile) api.ProfileList {
	out := api.ProfileList{Items: make([]api.Profile, len(ps))}
	for i, p := range ps {
		out.Items[i] = profileOut(p, false)
	}
	return out
}

func jobOut(j service.Job) api.Job {
	return api.Job{ID: j.ID, Kind: j.Kind, State: j.State, Holder: j.Holder, Profile: j.ProfileName,
		ProfileHash: j.ProfileHash, Agent: j.AgentID, TokenSerial: j.TokenSerial, Requester: j.Requester,
		Organization: j.Organization, BindingHash: j.BindingHash, Attempt: j.Attempt,
		Approvals: fmt.Sprintf("%d/%d", j.Approvals, j.Required), Deadline: j.Deadline, Created: j.Created,
		Updated: j.Updated, ErrorCode: j.ErrorCode, ErrorMessage: j.ErrorMessage, SupersededBy: j.SupersededBy,
		Document: register.DocumentOut(j.Document)}
}

func jobDetailOut(d service.JobDetail) api.JobDetail {
	out := api.JobDetail{Job: jobOut(d.Job), ApprovalList: []api.JobApproval{}, Timeline: []api.JobEvent{}, Steps: []api.JobStep{},
		WaitingReason: d.WaitingReason, AgentResult: d.AgentResult, Subject: d.Subject, SANs: d.SANs, TokenURI: d.TokenURI,
		AgentPresence: presence(d.AgentOnline, d.AgentLastSeen), AgentLastSeen: d.AgentLastSeen}
	for _, a := range d.Decisions {
		out.ApprovalList = append(out.ApprovalList, api.JobApproval{Gate: a.Gate, Approver: a.Approver,
			Decision: a.Verdict, Reason: a.Reason, At: a.At, Valid: a.Valid})
	}
	for _, e := range d.Timeline {
		out.Timeline = append(out.Timeline, api.JobEvent{From: e.From, To: e.To, Attempt: e.Attempt,
			Actor: e.ActorName, Reason: e.Reason, At: e.At})
	}
	for _, s := range d.Steps {
		out.Steps = append(out.Steps, api.JobStep{Attempt: s.Attempt, Step: s.Step, Detail: s.Detail, At: s.At})
	}
	return out
}

// presence names an agent's presence for a job's detail.
func presence(online bool, lastSeen time.Time) string {
	switch {
	case online:
		return "online"
	case lastSeen.IsZero():
		return "never_connected"
	}
	return "offline"
}

func agentOut(a service.Agent) api.Agent {
	out := api.Agent{ID: a.ID, Hostname: a.Hostname, OS: a.OS, Version: a.Version, Online: a.Online,
		LastSeen: a.LastSeen, Enrolled: a.Enrolled, Approved: !a.Approved.IsZero(), State: string(a.State),
		StateReason: a.StateReason, StateBy: a.StateBy, StateAt: a.StateAt, Organization: a.Organization, Tags: a.Tags,
		EnrolledWith: a.EnrolledWith}
	if r := a.LastRefusal; !r.At.IsZero() {
		out.LastRefusal = api.AgentRefusal{At: r.At, Code: r.Code, Sender: r.Sender, Reason: r.Reason}
	}
	return out
}

func tokenOut(t service.Token) api.Token {
	out := api.Token{Serial: t.Serial, Agent: t.AgentID, Label: t.Label, Manufacturer: t.Manufacturer, Model: t.Model,
		URI: t.URI, LastSeen: t.LastSeen, State: string(t.State)}
	if json.Valid(t.Flags) {
		out.Flags = t.Flags
	}
	return out
}

func certificateOut(c service.Certificate) api.Certificate {
	out := api.Certificate{Serial: c.Serial, Job: c.JobID, Holder: c.Holder, Profile: c.Profile, TokenSerial: c.TokenSerial,
		Agent: c.AgentID, Subject: c.Subject, Issuer: c.Issuer, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		RevokedAt: c.RevokedAt}
	if len(c.DER) > 0 {
		out.PEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER}))
	}
	return out
}
