package console

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// agentTokens is how many of an agent's tokens its row names.
const agentTokens = 5

type agentRow struct {
	service.Agent
	Tokens     []service.Token
	MoreTokens bool
	Actions    []verb // what its state allows (the service still decides)
}

// verb is an action of a form: its path segment and its button's text.
type verb struct{ Name, Label string }

func verbs(names ...string) []verb {
	out := make([]verb, len(names))
	for i, n := range names {
		out[i] = verb{Name: n, Label: strings.ToUpper(n[:1]) + n[1:]}
	}
	return out
}

// agentActions is what an agent's state allows, as the service's life cycle has it.
func agentActions(st store.AgentState) []verb {
	switch st {
	case store.AgentPending:
		return verbs("approve", "reject")
	case store.AgentActive:
		return verbs("disable", "remove")
	case store.AgentDisabled:
		return verbs("enable", "remove")
	}
	return nil
}

type agentsData struct {
	List[agentRow]
	States    []store.AgentState
	CanManage bool
	Back      string
	Failed    string // the agent whose action was refused
	Reason    string // the reason typed before the refusal
}

var agentFilters = []string{"q", "state", "presence"}

// agents lists agents with their presence (online or offline, last seen), version,
// state, host and the tokens they see; an administrator moves them through their life
// cycle from here, with a reason, through the service methods the API calls.
func (c *Console) agents(w http.ResponseWriter, r *http.Request, failed string, e *service.Error) {
	s := session(r)
	ctx := r.Context()
	q := listQuery(r, Prefix+"agents", agentFilters...)
	aq := service.AgentQuery{State: store.AgentState(q.Get("state")), Search: q.Get("q")}
	d := agentsData{States: []store.AgentState{store.AgentPending, store.AgentActive, store.AgentDisabled, store.AgentRemoved},
		CanManage: can(s.User, jobs.PermManageAgents), Back: q.here(), Failed: failed}
	if failed != "" {
		d.Reason = r.PostFormValue("reason")
	}
	switch p := q.Get("presence"); p {
	case "":
	case "online", "offline":
		online := p == "online"
		aq.Online = &online
	default:
		c.agentsPage(w, r, d, q, badFilter("presence", "is %q: want online or offline", p))
		return
	}
	as, next, err := c.svc.SearchAgents(ctx, s.Actor, aq, q.Page())
	if err != nil {
		c.agentsPage(w, r, d, q, service.AsError(err))
		return
	}
	rows := make([]agentRow, len(as))
	for i, a := range as {
		rows[i] = agentRow{Agent: a, Actions: agentActions(a.State)}
		rows[i].Tokens, rows[i].MoreTokens = c.tokensOf(ctx, s.Actor, a.ID)
	}
	d.List = listOf(q, rows, next)
	c.agentsPage(w, r, d, q, e)
}

func (c *Console) agentsPage(w http.ResponseWriter, r *http.Request, d agentsData, q Query, e *service.Error) {
	if d.Query.Values == nil {
		d.List = listOf(q, []agentRow(nil), "")
	}
	c.page(w, r, "agents", Page{Title: "Agents", Section: "agents", Data: d, Error: e})
}

// tokensOf is the first tokens an agent last reported.
func (c *Console) tokensOf(ctx context.Context, by service.Actor, agentID string) ([]service.Token, bool) {
	ts, next, err := c.svc.SearchTokens(ctx, by, service.TokenQuery{Agent: agentID}, service.Page{Limit: agentTokens})
	if err != nil {
		return nil, false
	}
	return ts, next != ""
}

// agentAction approves, rejects, disables, enables or removes an agent with a reason. A
// refusal is shown on the list with the service's message.
func (c *Console) agentAction(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	id, action := r.PathValue("id"), r.PathValue("action")
	// Each is the service method the API calls.
	var move func(context.Context, service.Actor, string, service.AgentStateRequest) (service.Agent, error)
	var done string
	switch action {
	case "approve":
		move, done = c.svc.ApproveAgent, "approved"
	case "reject":
		move, done = c.svc.RejectAgent, "rejected"
	case "disable":
		move, done = c.svc.DisableAgent, "disabled"
	case "enable":
		move, done = c.svc.EnableAgent, "enabled"
	case "remove":
		move, done = c.svc.RemoveAgent, "removed"
	default:
		c.fail(w, r, &service.Error{Code: service.CodeNotFound, Msg: fmt.Sprintf("no agent action %q: approve, reject, disable, enable or remove", action)})
		return
	}
	if _, err := move(r.Context(), s.Actor, id, service.AgentStateRequest{Reason: strings.TrimSpace(r.PostFormValue("reason"))}); err != nil {
		c.agents(w, r, id, service.AsError(err))
		return
	}
	c.setFlash(w, fmt.Sprintf("Agent %s %s.", id, done))
	http.Redirect(w, r, backTo(r, Prefix+"agents"), http.StatusSeeOther)
}
