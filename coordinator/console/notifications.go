package console

import (
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/notify"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

type notificationRow struct {
	service.Notification
	// Status is the state as people read it: pending (not tried yet), retrying (an
	// attempt failed, another is due), sent, or given up (failed for good).
	Status string
}

type notificationsData struct {
	List[notificationRow]
	Events []string
}

var notificationFilters = []string{"state", "event", "channel"}

// notifications is what was sent, to whom, and how it went (administrators).
func (c *Console) notifications(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	q := queryOf(r, notificationFilters...)
	d := notificationsData{}
	for _, e := range notify.Events() {
		d.Events = append(d.Events, string(e))
	}
	ns, next, err := c.svc.ListNotifications(r.Context(), s.Actor, service.NotificationQuery{State: q.Get("state"), Event: q.Get("event"),
		Channel: q.Get("channel")}, q.Page())
	rows := make([]notificationRow, len(ns))
	for i, n := range ns {
		rows[i] = notificationRow{Notification: n, Status: notificationStatus(n)}
	}
	d.List = listOf(q, rows, next)
	c.page(w, r, "notifications", Page{Title: "Notifications", Section: "notifications", Data: d, Error: service.AsError(err)})
}

func notificationStatus(n service.Notification) string {
	switch {
	case n.State == "failed":
		return "given up"
	case n.State == "pending" && n.Attempts > 0:
		return "retrying"
	}
	return n.State
}
