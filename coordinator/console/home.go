package console

import (
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// homeLimit is how many jobs each list of the home page shows.
const homeLimit = 10

type homeData struct {
	ShowAwaiting bool
	Awaiting     []service.Job
	MoreAwaiting bool
	ShowMine     bool
	Mine         []service.Job
	ShowFleet    bool
	Fleet        service.Presence
	Problems     []string // a part that could not be read, and why
}

// home is "what waits for me": the jobs awaiting my decision, my recent requests, and the
// fleet's presence. Each part is asked for only when the user's roles allow it, so that
// opening the home page does not leave refusals in the audit log.
func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	ctx := r.Context()
	var d homeData
	if can(s.User, jobs.PermApprove) || can(s.User, jobs.PermCAOperator) {
		d.ShowAwaiting = true
		js, next, err := c.svc.ListJobs(ctx, s.Actor, service.JobQuery{AwaitingMe: true}, service.Page{Limit: homeLimit})
		if err != nil {
			d.Problems = append(d.Problems, "Jobs awaiting your decision: "+service.AsError(err).Msg)
		}
		d.Awaiting, d.MoreAwaiting = js, next != ""
	}
	if can(s.User, jobs.PermRequest) {
		d.ShowMine = true
		js, _, err := c.svc.ListJobs(ctx, s.Actor, service.JobQuery{Requester: s.User.Username}, service.Page{Limit: homeLimit})
		if err != nil {
			d.Problems = append(d.Problems, "Your requests: "+service.AsError(err).Msg)
		}
		d.Mine = js
	}
	if shows(s.User, "agents") {
		d.ShowFleet = true
		p, err := c.svc.FleetPresence(ctx, s.Actor)
		if err != nil {
			d.Problems = append(d.Problems, "Agents: "+service.AsError(err).Msg)
		}
		d.Fleet = p
	}
	c.page(w, r, "home", Page{Title: "What waits for me", Section: "home", Data: d})
}
