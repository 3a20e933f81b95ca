package httpapi

import (
	"context"
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

// getTokenLife shows where a token is in its life cycle.
func (a *server) getTokenLife(w http.ResponseWriter, r *http.Request, u service.Actor) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	l, err := a.svc.GetTokenLife(r.Context(), u, r.PathValue("serial"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, tokenLifeOut(l))
}

// setTokenState moves a token in its life cycle (manage_tokens).
func (a *server) setTokenState(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.TokenStateChange
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	l, err := a.svc.SetTokenState(r.Context(), u, r.PathValue("serial"), tokenlife.State(in.State), in.Reason)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, tokenLifeOut(l))
}

// tokenIssue queues a temporary token for a suspended token, or a replacement: request is
// the service's method, (*service.Service).RequestTemporaryToken or RequestReplacement.
func (a *server) tokenIssue(request func(*service.Service, context.Context, service.Actor, string, service.JobRequest) (service.Job, error)) func(http.ResponseWriter, *http.Request, service.Actor) {
	return func(w http.ResponseWriter, r *http.Request, u service.Actor) {
		// The deadline is read as text, so that a malformed one is refused naming the field.
		var in struct {
			api.TokenIssue
			Deadline string `json:"deadline"`
		}
		if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
			a.fail(w, err)
			return
		}
		deadline, err := parseDeadline(in.Deadline)
		if err != nil {
			a.fail(w, err)
			return
		}
		j, err := request(a.svc, r.Context(), u, r.PathValue("serial"), service.JobRequest{Holder: in.Holder, Agent: in.Agent,
			Profile: in.Profile, TokenSerial: in.TokenSerial, Deadline: deadline})
		if err != nil {
			a.fail(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, jobOut(j))
	}
}

func tokenLifeOut(l service.TokenLife) api.TokenLife {
	out := api.TokenLife{Serial: l.Serial, State: string(l.State), Holder: l.Holder, Reason: l.Reason, ChangedBy: l.ChangedByName,
		ChangedAt: l.ChangedAt, TemporaryFor: l.TemporaryFor, ReplacedBy: l.ReplacedBy,
		Temporary: make([]api.TokenLifeBrief, len(l.Temporary)), History: make([]api.TokenLifeEvent, len(l.History))}
	for i, t := range l.Temporary {
		out.Temporary[i] = api.TokenLifeBrief{Serial: t.Serial, State: string(t.State)}
	}
	for i, e := range l.History {
		out.History[i] = api.TokenLifeEvent{From: string(e.From), To: string(e.To), Actor: e.ActorName, Reason: e.Reason,
			JobID: e.JobID, At: e.At}
	}
	return out
}
