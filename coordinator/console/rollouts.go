package console

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

type rolloutsData struct {
	List[service.RolloutView]
	States []rollout.State
}

var rolloutFilters = []string{"state", "kind"}

// rollouts lists rollouts, newest first, with their state and progress.
func (c *Console) rollouts(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	q := queryOf(r, rolloutFilters...)
	d := rolloutsData{States: rollout.States()}
	rq := service.RolloutQuery{State: q.Get("state")}
	switch k := q.Get("kind"); k {
	case "":
	case "standing", "once":
		standing := k == "standing"
		rq.Standing = &standing
	default:
		d.List = listOf(q, []service.RolloutView(nil), "")
		c.page(w, r, "rollouts", Page{Title: "Rollouts", Section: "rollouts", Data: d, Error: badFilter("kind", "is %q: want standing or once", k)})
		return
	}
	rs, next, err := c.svc.ListRollouts(r.Context(), s.Actor, rq, q.Page())
	d.List = listOf(q, rs, next)
	c.page(w, r, "rollouts", Page{Title: "Rollouts", Section: "rollouts", Data: d, Error: service.AsError(err)})
}

// rolloutTargets is how many of a rollout's failed targets its page lists.
const rolloutTargets = 20

type rolloutData struct {
	service.RolloutView
	Failed    []service.RolloutTargetView // the latest failures, to look into
	CanDecide bool                        // waits for approvals and the user's roles may give one
	Controls  []verb                      // what the user may do to it now: pause, resume, promote, abort
	Failures  int                         // targets whose jobs failed, as the brake counts them
	ETAText   string
	Reason    string // typed before a refusal, kept
}

// rolloutPage shows a rollout: its waves with their state, the canary, the brake
// (threshold, tripped or not, examples), progress and ETA, approvals; and the decisions
// and controls the user's roles allow, each with what exactly it acts on.
func (c *Console) rolloutPage(w http.ResponseWriter, r *http.Request, id string, e *service.Error) {
	s := session(r)
	ctx := r.Context()
	v, err := c.svc.GetRollout(ctx, s.Actor, id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	d := rolloutData{RolloutView: v, ETAText: etaText(v.ETA)}
	if e != nil {
		d.Reason = r.PostFormValue("reason")
	}
	waiting := v.State == rollout.StatePendingApproval || (v.State == rollout.StatePaused && v.PauseKind == rollout.PauseBrake)
	d.CanDecide = waiting && can(s.User, jobs.PermApprove)
	if can(s.User, jobs.PermManageRollouts) {
		d.Controls = controlsOf(v)
	}
	d.Failures = v.Overall.Failed(v.Spec.Brake.Outcomes)
	if ts, _, err := c.svc.ListRolloutTargets(ctx, s.Actor, id, service.RolloutTargetQuery{Outcome: rollout.OutcomeFailed},
		service.Page{Limit: rolloutTargets}); err == nil {
		d.Failed = ts
	}
	title := "Rollout " + v.Name
	if v.Name == "" {
		title = "Rollout " + v.ID
	}
	c.page(w, r, "rollout", Page{Title: title, Section: "rollouts", Data: d, Error: e})
}

// etaText says when a rollout should end at its recent pace.
func etaText(d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d < time.Minute:
		return "under a minute"
	case d < time.Hour:
		return fmt.Sprintf("about %d min", int(d.Minutes()+0.5))
	case d < 48*time.Hour:
		return fmt.Sprintf("about %.1f h", d.Hours())
	}
	return fmt.Sprintf("about %d days", int(d.Hours()/24+0.5))
}

// rolloutAction approves or rejects a rollout (bound to the binding hash the page
// showed), or pauses, resumes, promotes or aborts it with a reason, through the service
// methods the API calls. A refusal is shown on the rollout's page with its message.
func (c *Console) rolloutAction(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	ctx := r.Context()
	id, action := r.PathValue("id"), r.PathValue("action")
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	var err error
	switch action {
	case "approve", "reject":
		verdict := jobs.VerdictApprove
		if action == "reject" {
			verdict = jobs.VerdictReject
		}
		_, err = c.svc.DecideRollout(ctx, s.Actor, id, service.RolloutVote{Verdict: verdict, BindingHash: r.PostFormValue("binding_hash"), Reason: reason})
	case "pause":
		_, err = c.svc.PauseRollout(ctx, s.Actor, id, reason)
	case "resume":
		_, err = c.svc.ResumeRollout(ctx, s.Actor, id, reason)
	case "promote":
		_, err = c.svc.PromoteRollout(ctx, s.Actor, id, reason)
	case "abort":
		_, err = c.svc.AbortRollout(ctx, s.Actor, id, reason)
	default:
		c.fail(w, r, &service.Error{Code: service.CodeNotFound, Msg: fmt.Sprintf("no rollout action %q: approve, reject, pause, resume, promote or abort", action)})
		return
	}
	if err != nil {
		c.rolloutPage(w, r, id, service.AsError(err))
		return
	}
	done := map[string]string{"approve": "approved", "reject": "rejected", "pause": "paused", "resume": "resumed",
		"promote": "promoted", "abort": "aborted"}[action]
	c.setFlash(w, fmt.Sprintf("Rollout %s %s.", id, done))
	http.Redirect(w, r, Prefix+"rollouts/"+id, http.StatusSeeOther)
}

// controlsOf is what a rollout's state allows an owner to do (the service decides).
func controlsOf(v service.RolloutView) []verb {
	switch {
	case v.State.Final():
		return nil
	case v.State == rollout.StatePaused && v.PauseKind == rollout.PausePromote:
		return verbs("promote", "abort")
	case v.State == rollout.StatePaused && v.PauseKind == rollout.PauseOperator:
		return verbs("resume", "abort")
	case v.State == rollout.StateApproved || v.State == rollout.StateRunning:
		return verbs("pause", "abort")
	}
	return verbs("abort")
}
