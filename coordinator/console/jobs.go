package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// jobData is the job page's.
type jobData struct {
	service.JobDetail
	ProfileVersion int64
	Steps          []stepView
	CanDecide      bool                  // the job waits at a gate and the user's roles may decide
	CanReveal      bool                  // the job succeeded and the user is its requester or may manage jobs
	CanCancel      bool                  // the job may still be cancelled and the user is its requester or may manage jobs
	CanRetry       bool                  // the job failed and the user is its requester or may request
	PIN            string                // the user PIN, revealed just now
	Certificates   []service.Certificate // issued by this job (to readers of certificates)
	Events         string                // the live stream's URL
}

// stepView is one step of the job's kind, as far as the current attempt got.
type stepView struct {
	Step    jobs.Step
	Done    bool
	Current bool
}

func (c *Console) jobPage(w http.ResponseWriter, r *http.Request) {
	c.jobPageWith(w, r, r.PathValue("id"), nil)
}

// jobPageWith renders the job's page; e, when set, is the refusal of what was just asked
// on it (shown in role="alert").
func (c *Console) jobPageWith(w http.ResponseWriter, r *http.Request, id string, e *service.Error) {
	c.renderJob(w, r, id, e, "")
}

func (c *Console) renderJob(w http.ResponseWriter, r *http.Request, id string, e *service.Error, pin string) {
	s := session(r)
	d, err := c.svc.GetJob(r.Context(), s.Actor, id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	jd := c.jobData(r, d)
	jd.PIN = pin
	c.page(w, r, "job", Page{Title: "Job " + d.ID, Section: "jobs", Data: jd, Error: e})
}

func (c *Console) jobData(r *http.Request, d service.JobDetail) jobData {
	s := session(r)
	jd := jobData{JobDetail: d, Events: Prefix + "jobs/" + d.ID + "/events"}
	if p, err := c.svc.GetProfile(r.Context(), s.Actor, d.ProfileName); err == nil && p.ContentHash == d.ProfileHash {
		jd.ProfileVersion = p.Version
	}
	steps := jobs.KindSteps(d.Kind)
	reached := slices.Index(steps, d.Progress.Highest)
	for i, st := range steps {
		jd.Steps = append(jd.Steps, stepView{Step: st, Done: i <= reached || d.State == jobs.StateSucceeded, Current: st == d.Progress.Current})
	}
	if d.TokenSerial != "" && jobs.NeedsCertificate(d.Kind) && shows(s.User, "certificates") {
		// Certificates are found by token; the job's are those it issued.
		cs, _, err := c.svc.ListCertificates(r.Context(), s.Actor, service.CertificateQuery{Holder: d.Holder, TokenSerial: d.TokenSerial}, service.Page{Limit: PageSize})
		if err != nil {
			c.log.Warn().Err(err).Str("job", d.ID).Msg("console: listing a job's certificates")
		}
		for _, cert := range cs {
			if cert.JobID == d.ID {
				jd.Certificates = append(jd.Certificates, cert)
			}
		}
	}
	mine := d.Requester == s.User.Username
	jd.CanCancel = jobs.Cancellable(d.State, d.Progress) && (mine || can(s.User, jobs.PermManageJobs))
	jd.CanRetry = d.State == jobs.StateFailed && (mine || can(s.User, jobs.PermRequest))
	switch d.State {
	case jobs.StatePendingApproval:
		jd.CanDecide = can(s.User, jobs.PermApprove)
	case jobs.StateAwaitingCertificate:
		jd.CanDecide = can(s.User, jobs.PermCAOperator)
	case jobs.StateSucceeded:
		jd.CanReveal = d.TokenSerial != "" && d.PINRevealed.IsZero() && (mine || can(s.User, jobs.PermManageJobs))
	}
	return jd
}

// jobEvents streams the job's changes as Server-Sent Events: the current state first,
// then one event per change, each with the state and the live part of the page rendered
// as a refresh would show it. The stream ends when the browser leaves, when the server
// stops, when the session ends (signed out elsewhere, user disabled), and when the session
// would have gone idle: a page left open must not keep a session alive (the browser
// reconnects, and is then asked to sign in).
func (c *Console) jobEvents(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	if c.stopping() {
		c.fail(w, r, &service.Error{Code: service.CodeUnavailable, Msg: "the coordinator is shutting down; the page reconnects to it when it is back"})
		return
	}
	ctx, cancel := c.stopped(r.Context())
	defer cancel()
	if !s.IdleExpires.IsZero() {
		var stop context.CancelFunc
		ctx, stop = context.WithDeadline(ctx, s.IdleExpires)
		defer stop()
	}
	ch, err := c.svc.WatchJob(ctx, s.Actor, r.PathValue("id"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // a buffering proxy in front would hold events back
	w.WriteHeader(http.StatusOK)
	send := func(b []byte) bool {
		// The server's write timeout is for pages; a stream sets its own per write.
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send([]byte("retry: 5000\n\n")) {
		return
	}
	keepalive := time.NewTicker(streamKeepalive)
	defer keepalive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-keepalive.C:
			if c.svc.SessionLive(ctx, s.Actor) != nil || !send([]byte(": keepalive\n\n")) {
				return
			}
		case d, ok := <-ch:
			if !ok || c.svc.SessionLive(ctx, s.Actor) != nil {
				return // a session signed out in another tab follows the job no more
			}
			b, err := c.jobEvent(r, d)
			if err != nil {
				c.log.Error().Err(err).Str("job", d.ID).Msg("console: rendering a job event")
				return
			}
			if !send(b) {
				return
			}
		}
	}
}

// Stream timings: a keepalive comment finds dead connections and keeps proxies from
// closing an idle stream; a write that takes longer than streamWriteTimeout ends it.
const (
	streamKeepalive    = 25 * time.Second
	streamWriteTimeout = 30 * time.Second
)

// jobEvent is one SSE event: the job's state and the live part of its page.
func (c *Console) jobEvent(r *http.Request, d service.JobDetail) ([]byte, error) {
	s := session(r)
	var buf bytes.Buffer
	p := Page{SignedIn: true, Session: s, User: s.User, CSRF: s.CSRF, Data: c.jobData(r, d)}
	if err := c.pages["job"].ExecuteTemplate(&buf, "job-live", p); err != nil {
		return nil, err
	}
	data, err := json.Marshal(struct {
		State      jobs.State `json:"state"`
		StateLabel string     `json:"state_label"`
		HTML       string     `json:"html"`
	}{d.State, stateLabel(d.State), buf.String()})
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "event: job\nid: %d\ndata: %s\n\n", d.Version, data), nil
}

// revealPIN shows the user PIN the job set, once (service.RevealUserPIN). The page is not
// stored by the browser (no-store), and the PIN is never logged; a second reveal shows the
// service's refusal.
func (c *Console) revealPIN(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	id := r.PathValue("id")
	pin, err := c.svc.RevealUserPIN(r.Context(), s.Actor, id)
	if err != nil {
		c.jobPageWith(w, r, id, service.AsError(err))
		return
	}
	shown := string(pin)
	clear(pin)
	c.renderJob(w, r, id, nil, shown)
}

// cancel cancels the job (service.Cancel: its requester or an administrator, before it
// runs), with the reason the form gives.
func (c *Console) cancel(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	id := r.PathValue("id")
	if _, err := c.svc.Cancel(r.Context(), s.Actor, id, r.PostFormValue("reason")); err != nil {
		c.jobPageWith(w, r, id, service.AsError(err))
		return
	}
	c.setFlash(w, "Job "+id+" cancelled.")
	http.Redirect(w, r, Prefix+"jobs/"+id, http.StatusSeeOther)
}

// retry starts a new attempt of a failed job (service.RetryJob), while its approvals hold.
func (c *Console) retry(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	id := r.PathValue("id")
	if _, err := c.svc.RetryJob(r.Context(), s.Actor, id, service.RetryRequest{Reason: strings.TrimSpace(r.PostFormValue("reason"))}); err != nil {
		c.jobPageWith(w, r, id, service.AsError(err))
		return
	}
	c.setFlash(w, "Job "+id+" is tried again.")
	http.Redirect(w, r, Prefix+"jobs/"+id, http.StatusSeeOther)
}

// jobListFilters are the job list's query fields.
var jobListFilters = []string{"q", "state", "kind", "profile", "holder", "agent"}

type jobListData struct {
	List[service.Job]
	States   []jobs.State
	Kinds    []jobs.Kind
	Profiles []string
}

// jobList lists jobs, newest first, with filters (state, kind, profile, holder, agent) and
// a search by job ID; cursor pagination.
func (c *Console) jobList(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	ctx := r.Context()
	q := queryOf(r, jobListFilters...)
	if id := q.Get("q"); id != "" {
		// A job ID goes straight to its page; anything else searches as a holder.
		if _, err := c.svc.GetJob(ctx, s.Actor, id); err == nil {
			http.Redirect(w, r, Prefix+"jobs/"+id, http.StatusSeeOther)
			return
		}
	}
	jq := service.JobQuery{State: jobs.State(q.Get("state")), Kind: jobs.Kind(q.Get("kind")), Profile: q.Get("profile"),
		Holder: q.Get("holder"), Agent: q.Get("agent")}
	if v := q.Get("q"); v != "" && jq.Holder == "" {
		jq.Holder = v
	}
	d := jobListData{States: jobs.States(), Kinds: jobs.Kinds()}
	d.Profiles = c.profileNames(ctx, s.Actor)
	js, next, err := c.svc.ListJobs(ctx, s.Actor, jq, q.Page())
	var e *service.Error
	if err != nil {
		e = service.AsError(err)
		if strings.TrimSpace(q.Get("q")) != "" && e.Field == "holder" {
			e = &service.Error{Code: e.Code, Field: "q", Msg: fmt.Sprintf("no job with ID %q, and no holder of that username", q.Get("q"))}
		}
	}
	d.List = listOf(q, js, next)
	c.page(w, r, "jobs", Page{Title: "Jobs", Section: "jobs", Data: d, Error: e})
}
