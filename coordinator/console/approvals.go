package console

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// approvalsPageSize is smaller than a list's: each entry shows the whole of what it
// approves.
const approvalsPageSize = 20

// Approval is one job of the approver's queue with everything its approval binds.
type Approval struct {
	service.JobDetail
	// ProfileVersion is the version of the job's profile when its hash is the current
	// version's (0: the job was made with an older version, named by ProfileHash).
	ProfileVersion int64
}

type approvalsData struct {
	List[Approval]
	Reason string // the reason typed before a refusal, kept for a second try
	Failed string // the job the refusal is about
}

// approvals is the approver's queue: the jobs awaiting the signed-in user's decision in
// their scope (the service's list of awaiting jobs, the rule decide applies), each with
// what an approval approves: holder, subject and SANs, profile and version, agent and
// token, binding hash, requester and age.
func (c *Console) approvals(w http.ResponseWriter, r *http.Request) {
	c.approvalsWith(w, r, approvalsData{}, nil)
}

// approvalsWith renders the queue; e, when set, is the refusal of the decision just sent.
func (c *Console) approvalsWith(w http.ResponseWriter, r *http.Request, d approvalsData, e *service.Error) {
	s := session(r)
	ctx := r.Context()
	q := queryOf(r)
	p := q.Page()
	p.Limit = approvalsPageSize
	js, next, err := c.svc.ListJobs(ctx, s.Actor, service.JobQuery{AwaitingMe: true}, p)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	versions := map[string]service.Profile{}
	if ps, err := c.svc.ListProfiles(ctx, s.Actor); err == nil {
		for _, p := range ps {
			versions[p.Name] = p
		}
	}
	rows := make([]Approval, 0, len(js))
	for _, j := range js {
		jd, err := c.svc.GetJob(ctx, s.Actor, j.ID)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		a := Approval{JobDetail: jd}
		if p, ok := versions[j.ProfileName]; ok && p.ContentHash == j.ProfileHash {
			a.ProfileVersion = p.Version
		}
		rows = append(rows, a)
	}
	d.List = listOf(q, rows, next)
	c.page(w, r, "approvals", Page{Title: "Approvals", Section: "approvals", Data: d, Error: e})
}

// decide records the signed-in user's approval or rejection of a job, bound to the
// binding hash the form showed: if the job changed since, the service refuses
// (binding_mismatch) rather than approve something the approver did not see. A refusal
// (self-approval, another organisation, a missing reason) is shown on the queue with the
// service's message.
func (c *Console) decide(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := session(r)
		id := r.PathValue("id")
		req := service.DecisionRequest{Reason: strings.TrimSpace(r.PostFormValue("reason")), BindingHash: r.PostFormValue("binding_hash")}
		var err error
		verb := "approved"
		if approve {
			_, err = c.svc.Approve(r.Context(), s.Actor, id, req)
		} else {
			verb = "rejected"
			_, err = c.svc.Reject(r.Context(), s.Actor, id, req)
		}
		back := Prefix + "approvals"
		if r.PostFormValue("from") == "job" {
			back = Prefix + "jobs/" + id
		}
		if err != nil {
			e := service.AsError(err)
			if back != Prefix+"approvals" {
				c.jobPageWith(w, r, id, e)
				return
			}
			c.approvalsWith(w, r, approvalsData{Reason: req.Reason, Failed: id}, e)
			return
		}
		c.setFlash(w, fmt.Sprintf("Job %s %s.", id, verb))
		http.Redirect(w, r, back, http.StatusSeeOther)
	}
}
