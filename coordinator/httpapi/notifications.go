package httpapi

import (
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

func notificationOut(n service.Notification) api.Notification {
	return api.Notification{ID: n.ID, Event: n.Event, Channel: n.Channel, Recipient: n.Recipient, Username: n.Username,
		Language: n.Language, Subject: n.Subject, State: n.State, Attempts: n.Attempts, NextAttempt: n.NextAttempt,
		LastError: n.LastError, Held: n.Held, Created: n.Created, SentAt: n.SentAt}
}

func (a *server) listNotifications(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "limit", "cursor", "state", "event", "channel")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	ns, next, err := a.svc.ListNotifications(r.Context(), u, service.NotificationQuery{State: q.get("state"), Event: q.get("event"),
		Channel: q.get("channel")}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, listOf(ns, next, notificationOut))
}
