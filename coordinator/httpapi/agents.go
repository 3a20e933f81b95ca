package httpapi

import (
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

type agentEnrolJSON struct {
	ID         string `json:"id"`
	Hostname   string `json:"hostname"`
	BrokerUser string `json:"broker_user"`
}

func (a *api) enrolAgent(w http.ResponseWriter, r *http.Request, u store.User) {
	var in agentEnrolJSON
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
