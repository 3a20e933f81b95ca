package httpapi

import (
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

func (a *server) enrolAgent(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.AgentEnrol
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	ag, err := a.svc.EnrolAgent(r.Context(), u, service.AgentEnrolment{ID: in.ID, Hostname: in.Hostname, BrokerUser: in.BrokerUser})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, agentOut(ag))
}

// enrolAgents enrols a batch of agents, all or nothing (service.EnrolAgents).
func (a *server) enrolAgents(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.AgentBatchEnrol
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	es := make([]service.AgentEnrolment, len(in.Agents))
	for i, e := range in.Agents {
		es[i] = service.AgentEnrolment{ID: e.ID, Hostname: e.Hostname, BrokerUser: e.BrokerUser}
	}
	as, err := a.svc.EnrolAgents(r.Context(), u, es)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := api.AgentBatch{Items: make([]api.Agent, len(as))}
	for i, ag := range as {
		out.Items[i] = agentOut(ag)
	}
	writeJSON(w, http.StatusCreated, out)
}
