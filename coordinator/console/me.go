package console

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

// "My tokens" is every signed-in user's own page: their tokens and certificates, and what
// a profile's self_service lets them do themselves. Each button calls the service
// operation the help desk's page calls; the service decides whether the holder may.

type myTokenRow struct {
	service.MyToken
	Certs []certRow
}

type meData struct {
	Tokens []myTokenRow
	Jobs   []service.Job
	// EncKeys are the holder's encryption keys, for applications to encrypt to.
	EncKeys []service.EncryptionKey
	// Reports is where a holder may move their own token.
	Reports []tokenlife.State
	// Key is the idempotency key of the page's request buttons: a form sent twice makes
	// one job.
	Key string
	// PIN and PINToken: the user PIN just revealed, and its token.
	PIN, PINToken string
	Failed        string // the token whose action was refused
	Reason        string // and the reason typed
}

func (c *Console) me(w http.ResponseWriter, r *http.Request, d meData, e *service.Error) {
	s := session(r)
	d.Reports, d.Key = []tokenlife.State{tokenlife.Suspended, tokenlife.Lost}, newKey()
	mine, err := c.svc.MyTokens(r.Context(), s.Actor)
	if err != nil && e == nil {
		e = service.AsError(err)
	}
	for _, t := range mine.Tokens {
		d.Tokens = append(d.Tokens, myTokenRow{MyToken: t, Certs: c.certRows(t.Certificates)})
	}
	d.Jobs = mine.Jobs
	if ks, err := c.svc.ListEncryptionKeys(r.Context(), s.Actor, s.User.Username, ""); err == nil {
		d.EncKeys = ks
	} else if e == nil {
		e = service.AsError(err)
	}
	c.page(w, r, "me", Page{Title: "My tokens", Section: "me", Data: d, Error: e})
}

// selfJob queues a renewal or an unblock of the holder's own token, at the agent that
// last reported it, with the profile of its newest certificate.
func (c *Console) selfJob(kind jobs.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := session(r)
		serial := r.PathValue("serial")
		j, err := c.svc.CreateJob(r.Context(), s.Actor, service.JobRequest{Kind: kind, Holder: s.User.Username,
			Profile: r.PostFormValue("profile"), Agent: r.PostFormValue("agent"), TokenSerial: serial,
			IdempotencyKey: "console:" + strings.TrimSpace(r.PostFormValue("idempotency_key"))})
		if err != nil {
			c.me(w, r, meData{Failed: serial}, service.AsError(err))
			return
		}
		msg := fmt.Sprintf("Your %s request for token %s is job %s.", kind, serial, j.ID)
		if j.State == jobs.StatePendingApproval {
			msg += " It awaits approval."
		}
		c.setFlash(w, msg)
		http.Redirect(w, r, Prefix+"me", http.StatusSeeOther)
	}
}

// selfReport reports the holder's own token suspended or lost, with a reason.
func (c *Console) selfReport(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	serial := r.PathValue("serial")
	state := tokenlife.State(strings.TrimSpace(r.PostFormValue("state")))
	reason := r.PostFormValue("reason")
	if state == "" {
		c.me(w, r, meData{Failed: serial, Reason: reason}, badFilter("state", "is required: choose suspended or lost"))
		return
	}
	l, err := c.svc.SetTokenState(r.Context(), s.Actor, serial, state, reason)
	if err != nil {
		c.me(w, r, meData{Failed: serial, Reason: reason}, service.AsError(err))
		return
	}
	c.setFlash(w, fmt.Sprintf("Token %s is now %s.", l.Serial, l.State))
	http.Redirect(w, r, Prefix+"me", http.StatusSeeOther)
}

// selfPIN shows, once, the user PIN a job set on the holder's token.
func (c *Console) selfPIN(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	pin, err := c.svc.RevealUserPIN(r.Context(), s.Actor, r.PathValue("id"))
	if err != nil {
		c.me(w, r, meData{}, service.AsError(err))
		return
	}
	d := meData{PIN: string(pin), PINToken: r.PostFormValue("token")}
	clear(pin)
	c.me(w, r, d, nil)
}
