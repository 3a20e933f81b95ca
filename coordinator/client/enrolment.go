package client

import (
	"context"
	"iter"
	"net/http"
	"net/url"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// Enrolment: activation codes and enrolment keys, and the agents' life cycle.
type (
	EnrolmentKeyCreate = api.EnrolmentKeyCreate
	EnrolmentKey       = api.EnrolmentKey
	EnrolmentKeys      = api.EnrolmentKeys
	EnrolmentKeyList   = api.List[api.EnrolmentKey]
)

// Kinds of EnrolmentKey.
const (
	KindCode = "code" // one-off activation code: enrols one agent
	KindKey  = "key"  // reusable enrolment key: enrols agents up to its use limit
)

// Agent states, as Agent.State and AgentFilter.State name them.
const (
	AgentPending  = "pending"
	AgentActive   = "active"
	AgentDisabled = "disabled"
	AgentRemoved  = "removed"
)

// EnrolmentKeyFilter narrows a list of codes and keys; empty fields do not filter.
type EnrolmentKeyFilter struct {
	Kind   string // KindCode or KindKey
	Usable bool   // only those that could enrol an agent now
}

// AgentFilter narrows a list of agents; empty fields do not filter.
type AgentFilter struct {
	State  string // AgentPending, AgentActive, AgentDisabled or AgentRemoved
	Online *bool  // nil: both
	Search string // text in the ID or hostname, ignoring case
}

// CreateEnrolmentKeys creates one-off activation codes or a reusable enrolment key
// (admin). Each returned item carries its Secret: the coordinator keeps only a hash and
// never shows it again.
func (c *Client) CreateEnrolmentKeys(ctx context.Context, k EnrolmentKeyCreate) (EnrolmentKeys, error) {
	var out EnrolmentKeys
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/enrolment-keys", body: k,
		want: []int{http.StatusCreated}, out: &out})
	return out, err
}

// ListEnrolmentKeys returns one page of codes and keys, oldest first, without secrets
// (admin, auditor).
func (c *Client) ListEnrolmentKeys(ctx context.Context, f EnrolmentKeyFilter, p Page) (EnrolmentKeyList, error) {
	q := p.values()
	set(q, "kind", f.Kind)
	if f.Usable {
		q.Set("usable", "true")
	}
	var l EnrolmentKeyList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/enrolment-keys", query: q, out: &l})
	return l, err
}

// AllEnrolmentKeys yields every code and key f selects (see the All* methods).
func (c *Client) AllEnrolmentKeys(ctx context.Context, f EnrolmentKeyFilter, pageSize int) iter.Seq2[EnrolmentKey, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]EnrolmentKey, string, error) {
		l, err := c.ListEnrolmentKeys(ctx, f, p)
		return l.Items, l.NextCursor, err
	})
}

// RevokeEnrolmentKey revokes a code or key (admin): it enrols no more agents; the agents
// it enrolled stay. Revoking it again changes nothing.
func (c *Client) RevokeEnrolmentKey(ctx context.Context, id, reason string) (EnrolmentKey, error) {
	if err := needID("enrolment key ID", id); err != nil {
		return EnrolmentKey{}, err
	}
	var out EnrolmentKey
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/enrolment-keys/" + url.PathEscape(id) + "/revoke",
		body: api.Reason{Reason: reason}, out: &out})
	return out, err
}

// ListAgentsBy returns one page of the agents f selects, with their presence and state.
// ListAgents is ListAgentsBy with no filter.
func (c *Client) ListAgentsBy(ctx context.Context, f AgentFilter, p Page) (AgentList, error) {
	q := p.values()
	set(q, "state", f.State)
	setBool(q, "online", f.Online)
	set(q, "q", f.Search)
	var l AgentList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/agents", query: q, out: &l})
	return l, err
}

// AllAgentsBy yields every agent f selects.
func (c *Client) AllAgentsBy(ctx context.Context, f AgentFilter, pageSize int) iter.Seq2[Agent, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]Agent, string, error) {
		l, err := c.ListAgentsBy(ctx, f, p)
		return l.Items, l.NextCursor, err
	})
}

// ApproveAgent activates a pending agent (admin); the coordinator creates its broker user
// and the agent, polling, fetches its credentials. With no broker management configured
// the agent is active but the answer is an *Error of code unavailable.
func (c *Client) ApproveAgent(ctx context.Context, id, reason string) (Agent, error) {
	return c.agentState(ctx, id, "approve", reason)
}

// RejectAgent refuses a pending agent (admin): it is removed, with the reason.
func (c *Client) RejectAgent(ctx context.Context, id, reason string) (Agent, error) {
	return c.agentState(ctx, id, "reject", reason)
}

// DisableAgent disables an agent (admin; the server requires a reason, code
// reason_required): its open jobs end, its broker user is deleted with its connections,
// and what it still sends is refused.
func (c *Client) DisableAgent(ctx context.Context, id, reason string) (Agent, error) {
	return c.agentState(ctx, id, "disable", reason)
}

// EnableAgent makes a disabled agent active again (admin), with a new broker password.
func (c *Client) EnableAgent(ctx context.Context, id, reason string) (Agent, error) {
	return c.agentState(ctx, id, "enable", reason)
}

// RemoveAgent removes an agent for good (admin; a reason is required), as DisableAgent
// does; its record stays and its ID stays taken.
func (c *Client) RemoveAgent(ctx context.Context, id, reason string) (Agent, error) {
	return c.agentState(ctx, id, "remove", reason)
}

// RotateAgentCredentials gives an active agent a new broker password (admin); its open
// connections stay up, and it fetches the new password when the broker refuses the old.
func (c *Client) RotateAgentCredentials(ctx context.Context, id, reason string) (Agent, error) {
	return c.agentState(ctx, id, "rotate-credentials", reason)
}

func (c *Client) agentState(ctx context.Context, id, verb, reason string) (Agent, error) {
	if err := needID("agent ID", id); err != nil {
		return Agent{}, err
	}
	var a Agent
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/agents/" + url.PathEscape(id) + "/" + verb,
		body: api.Reason{Reason: reason}, out: &a})
	return a, err
}
