package console

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Bounds of the request form's choices: the holder and agent searches look at this many
// people or agents at most (a search narrows them further), and the form shows
// at most choicesShown of each.
const (
	searchScan   = 5000
	choicesShown = 200
)

// requestForm is what the request form was filled in with (field names are the API's).
type requestForm struct {
	Kind, Holder, Profile, Agent, TokenSerial string
	HolderQuery, AgentQuery                   string // the searches
	IdempotencyKey                            string
	DocumentNumber, DocumentDate              string // the document the issuance is based on
}

type agentChoice struct {
	service.Agent
	Tokens []service.Token
}

type requestData struct {
	Form          requestForm
	Kinds         []jobs.Kind
	Holders       []service.User
	MoreHolders   bool // the search found more than it shows
	Profiles      []service.Profile
	Agents        []agentChoice
	MoreAgents    bool
	TokensUnknown bool // the fleet (and so the tokens) cannot be read with these roles
}

func formOf(r *http.Request) requestForm {
	v := func(k string) string { return strings.TrimSpace(r.FormValue(k)) }
	f := requestForm{Kind: v("kind"), Holder: v("holder"), Profile: v("profile"), Agent: v("agent"), TokenSerial: v("token_serial"),
		HolderQuery: v("holder_q"), AgentQuery: v("agent_q"), IdempotencyKey: v("idempotency_key"),
		DocumentNumber: v("document_number"), DocumentDate: v("document_date")}
	if f.Kind == "" {
		f.Kind = string(jobs.KindIssue)
	}
	return f
}

// requestPage is the form to request a token: holder search, profile, agent (online or
// offline, with the tokens it sees) and token. It works as a plain GET form: a search
// reloads it with the choices narrowed.
func (c *Console) requestPage(w http.ResponseWriter, r *http.Request) {
	f := formOf(r)
	c.requestWith(w, r, f, nil)
}

func (c *Console) requestWith(w http.ResponseWriter, r *http.Request, f requestForm, e *service.Error) {
	s := session(r)
	ctx := r.Context()
	if f.IdempotencyKey == "" {
		f.IdempotencyKey = newKey()
	}
	d := requestData{Form: f}
	for _, k := range jobs.Kinds() {
		if jobs.OnAgent(k) {
			d.Kinds = append(d.Kinds, k)
		}
	}
	var problems []string
	var err error
	if d.Holders, d.MoreHolders, err = c.searchHolders(r, f.HolderQuery, f.Holder); err != nil {
		problems = append(problems, "people: "+service.AsError(err).Msg)
	}
	if d.Profiles, err = c.svc.ListProfiles(ctx, s.Actor); err != nil {
		problems = append(problems, "profiles: "+service.AsError(err).Msg)
	}
	if d.Agents, d.MoreAgents, err = c.searchAgents(r, f.AgentQuery, f.Agent); err != nil {
		d.TokensUnknown = true
		problems = append(problems, "agents: "+service.AsError(err).Msg)
	}
	p := Page{Title: "Request a token", Section: "request", Data: d, Error: e}
	if len(problems) > 0 {
		// Not an error of this page: the form still works with the values typed in.
		p.Flash = "Some choices cannot be listed (" + strings.Join(problems, "; ") + "): type them instead."
	}
	c.page(w, r, "request", p)
}

// request creates the job through service.CreateJob, as the API does, and shows its page.
// The form carries an idempotency key made when it was shown: sent twice (a double click,
// a reload), it creates one job.
func (c *Console) request(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	f := formOf(r)
	j, err := c.svc.CreateJob(r.Context(), s.Actor, service.JobRequest{Kind: jobs.Kind(f.Kind), Holder: f.Holder, Profile: f.Profile,
		Agent: f.Agent, TokenSerial: f.TokenSerial, IdempotencyKey: "console:" + f.IdempotencyKey,
		Document: service.Document{Number: f.DocumentNumber, Date: f.DocumentDate}})
	if err != nil {
		c.requestWith(w, r, f, service.AsError(err))
		return
	}
	msg := "Job " + j.ID + " created."
	switch {
	case j.Replayed:
		msg = "This request was already sent: here is the job it created."
	case j.State == jobs.StatePendingApproval:
		msg += " It awaits approval."
	}
	c.setFlash(w, msg)
	http.Redirect(w, r, Prefix+"jobs/"+j.ID, http.StatusSeeOther)
}

// searchHolders lists the people whose username, name or e-mail contains q (all of
// them when q is empty), the chosen one first.
func (c *Console) searchHolders(r *http.Request, q, chosen string) ([]service.User, bool, error) {
	s := session(r)
	q = strings.ToLower(q)
	out, more, err := search(func(p service.Page) ([]service.User, string, error) {
		return c.svc.ListUsers(r.Context(), s.Actor, service.UserQuery{}, p)
	}, func(u service.User) bool {
		return !u.Disabled && (u.Username == chosen || q == "" || strings.Contains(strings.ToLower(u.Username+" "+u.DisplayName+" "+u.Email), q))
	})
	if err != nil {
		return nil, false, err
	}
	slices.SortStableFunc(out, func(a, b service.User) int {
		return boolOrder(a.Username == chosen, b.Username == chosen)
	})
	return out, more, nil
}

// searchAgents lists the active agents whose ID or host name contains q, with the tokens
// each last reported, online ones first.
func (c *Console) searchAgents(r *http.Request, q, chosen string) ([]agentChoice, bool, error) {
	s := session(r)
	ctx := r.Context()
	q = strings.ToLower(q)
	as, more, err := search(func(p service.Page) ([]service.Agent, string, error) {
		return c.svc.ListAgents(ctx, s.Actor, store.AgentActive, p)
	}, func(a service.Agent) bool {
		return a.ID == chosen || q == "" || strings.Contains(strings.ToLower(a.ID+" "+a.Hostname), q)
	})
	if err != nil {
		return nil, false, err
	}
	out := make([]agentChoice, len(as))
	for i, a := range as {
		ts, _, err := c.svc.ListTokens(ctx, s.Actor, a.ID, service.Page{Limit: 50})
		if err != nil {
			return nil, false, err
		}
		out[i] = agentChoice{Agent: a, Tokens: ts}
	}
	slices.SortStableFunc(out, func(a, b agentChoice) int {
		if o := boolOrder(a.ID == chosen, b.ID == chosen); o != 0 {
			return o
		}
		return boolOrder(a.Online, b.Online)
	})
	return out, more, nil
}

// search pages through a list, searchScan rows at most, and keeps the rows match takes:
// choicesShown of them at most, more reporting that there were others.
func search[T any](list func(service.Page) ([]T, string, error), match func(T) bool) (out []T, more bool, err error) {
	p := service.Page{Limit: 1000}
	for scanned := 0; scanned < searchScan; {
		rows, next, err := list(p)
		if err != nil {
			return nil, false, err
		}
		scanned += len(rows)
		for _, row := range rows {
			if !match(row) {
				continue
			}
			if len(out) == choicesShown {
				more = true
				continue
			}
			out = append(out, row)
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	return out, more, nil
}

// boolOrder sorts true before false.
func boolOrder(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

// newKey is a random idempotency key for a form.
func newKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return hex.EncodeToString(b)
}
