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
