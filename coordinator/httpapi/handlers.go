package httpapi

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func (a *api) fail(w http.ResponseWriter, err error) { writeError(w, a.log, err) }

// noQuery refuses any query parameter on endpoints that take none.
func noQuery(r *http.Request) error {
	_, err := parseQuery(r)
	return err
}

func (a *api) whoami(w http.ResponseWriter, r *http.Request, u store.User) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, userOut(a.svc.Whoami(r.Context(), u)))
}

func (a *api) listOrgs(w http.ResponseWriter, r *http.Request, u store.User) {
	q, err := parseQuery(r, "limit", "cursor")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	orgs, next, err := a.svc.ListOrganisations(r.Context(), u, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := listJSON[orgJSON]{Items: make([]orgJSON, len(orgs)), NextCursor: next}
	for i, o := range orgs {
		out.Items[i] = orgOut(o)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) createOrg(w http.ResponseWriter, r *http.Request, u store.User) {
	var in orgCreateJSON
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	o, err := a.svc.CreateOrganisation(r.Context(), u, in.Name)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, orgOut(o))
}

func (a *api) listUsers(w http.ResponseWriter, r *http.Request, u store.User) {
	q, err := parseQuery(r, "limit", "cursor", "organization", "role")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	users, next, err := a.svc.ListUsers(r.Context(), u, service.UserQuery{Organization: q.get("organization"), Role: jobs.Role(q.get("role"))}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := listJSON[userJSON]{Items: make([]userJSON, len(users)), NextCursor: next}
	for i, v := range users {
		out.Items[i] = userOut(v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) createUser(w http.ResponseWriter, r *http.Request, u store.User) {
	var in userCreateJSON
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	roles := make([]jobs.Role, len(in.Roles))
	for i, role := range in.Roles {
		roles[i] = jobs.Role(role)
	}
	v, err := a.svc.CreateUser(r.Context(), u, service.UserRequest{Username: in.Username, DisplayName: in.DisplayName,
		Email: in.Email, UPN: in.UPN, Organization: in.Organization, Attributes: in.Attributes, Roles: roles})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, userOut(v))
}

func (a *api) getUser(w http.ResponseWriter, r *http.Request, u store.User) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	v, err := a.svc.GetUser(r.Context(), u, r.PathValue("username"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, userOut(v))
}

func (a *api) issueToken(w http.ResponseWriter, r *http.Request, u store.User) {
	var in tokenCreateJSON
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, false)); err != nil {
		a.fail(w, err)
		return
	}
	t, err := a.svc.IssueAPIToken(r.Context(), u, r.PathValue("username"), in.Name, in.ExpiresIn)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, tokenIssuedJSON{ID: t.ID, Token: t.Token, Username: t.Username, Expires: t.Expires})
}

func (a *api) listProfiles(w http.ResponseWriter, r *http.Request, u store.User) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	ps, err := a.svc.ListProfiles(r.Context(), u)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := profileListJSON{Items: make([]profileJSON, len(ps))}
	for i, p := range ps {
		out.Items[i] = profileOut(p, false)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) applyProfiles(w http.ResponseWriter, r *http.Request, u store.User) {
	if err := firstErr(noQuery(r), checkMediaType(r, "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain", "application/json")); err != nil {
		a.fail(w, err)
		return
	}
	text, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxProfileBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			a.fail(w, tooLarge(mbe.Limit))
			return
		}
		a.fail(w, bad("", "reading the request body: %v", err))
		return
	}
	if len(text) == 0 {
		a.fail(w, bad("", "the request body is empty; send the profiles as YAML"))
		return
	}
	ps, err := a.svc.ApplyProfiles(r.Context(), u, text)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := profileListJSON{Items: make([]profileJSON, len(ps))}
	for i, p := range ps {
		out.Items[i] = profileOut(p, false)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) getProfile(w http.ResponseWriter, r *http.Request, u store.User) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	p, err := a.svc.GetProfile(r.Context(), u, r.PathValue("name"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, profileOut(p, true))
}

func (a *api) listJobs(w http.ResponseWriter, r *http.Request, u store.User) {
	q, err := parseQuery(r, "limit", "cursor", "state", "organization", "holder", "agent", "kind")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	js, next, err := a.svc.ListJobs(r.Context(), u, service.JobQuery{State: jobs.State(q.get("state")), Kind: jobs.Kind(q.get("kind")),
		Organization: q.get("organization"), Holder: q.get("holder"), Agent: q.get("agent")}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := listJSON[jobJSON]{Items: make([]jobJSON, len(js)), NextCursor: next}
	for i, j := range js {
		out.Items[i] = jobOut(j)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) createJob(w http.ResponseWriter, r *http.Request, u store.User) {
	var in jobCreateJSON
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	req := service.JobRequest{Kind: jobs.Kind(in.Kind), Holder: in.Holder, Agent: in.Agent, Profile: in.Profile, TokenSerial: in.TokenSerial}
	if in.Deadline != "" {
		t, err := time.Parse(time.RFC3339, in.Deadline)
		if err != nil {
			a.fail(w, bad("deadline", "%q is not an RFC 3339 date-time such as 2026-01-31T18:00:00Z", in.Deadline))
			return
		}
		req.Deadline = t
	}
	j, err := a.svc.CreateJob(r.Context(), u, req)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, jobOut(j))
}

func (a *api) getJob(w http.ResponseWriter, r *http.Request, u store.User) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	d, err := a.svc.GetJob(r.Context(), u, r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, jobDetailOut(d))
}

func (a *api) approve(w http.ResponseWriter, r *http.Request, u store.User) {
	a.decide(w, r, u, false)
}

func (a *api) reject(w http.ResponseWriter, r *http.Request, u store.User) {
	a.decide(w, r, u, true)
}

func (a *api) decide(w http.ResponseWriter, r *http.Request, u store.User, reject bool) {
	var in decisionJSON
	// A rejection needs a reason, so its body is required.
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, reject)); err != nil {
		a.fail(w, err)
		return
	}
	req := service.DecisionRequest{Reason: in.Reason, BindingHash: in.BindingHash}
	var (
		d   service.JobDetail
		err error
	)
	if reject {
		d, err = a.svc.Reject(r.Context(), u, r.PathValue("id"), req)
	} else {
		d, err = a.svc.Approve(r.Context(), u, r.PathValue("id"), req)
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, jobDetailOut(d))
}

func (a *api) cancel(w http.ResponseWriter, r *http.Request, u store.User) {
	var in struct {
		Reason string `json:"reason"`
	}
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, false)); err != nil {
		a.fail(w, err)
		return
	}
	d, err := a.svc.Cancel(r.Context(), u, r.PathValue("id"), in.Reason)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, jobDetailOut(d))
}

func (a *api) listAgents(w http.ResponseWriter, r *http.Request, u store.User) {
	q, err := parseQuery(r, "limit", "cursor")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	as, next, err := a.svc.ListAgents(r.Context(), u, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := listJSON[agentJSON]{Items: make([]agentJSON, len(as)), NextCursor: next}
	for i, v := range as {
		out.Items[i] = agentOut(v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) listTokens(w http.ResponseWriter, r *http.Request, u store.User) {
	q, err := parseQuery(r, "limit", "cursor", "agent")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	ts, next, err := a.svc.ListTokens(r.Context(), u, q.get("agent"), p)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := listJSON[tokenJSON]{Items: make([]tokenJSON, len(ts)), NextCursor: next}
	for i, v := range ts {
		out.Items[i] = tokenOut(v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) listCertificates(w http.ResponseWriter, r *http.Request, u store.User) {
	q, err := parseQuery(r, "limit", "cursor", "holder", "agent", "token")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	cs, next, err := a.svc.ListCertificates(r.Context(), u, service.CertificateQuery{Holder: q.get("holder"), Agent: q.get("agent"), TokenSerial: q.get("token")}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := listJSON[certificateJSON]{Items: make([]certificateJSON, len(cs)), NextCursor: next}
	for i, v := range cs {
		out.Items[i] = certificateOut(v)
	}
	writeJSON(w, http.StatusOK, out)
}

// Audit page sizes (the API's, not the store's).
const (
	defaultAuditLimit = 500
	maxAuditLimit     = service.MaxAuditPage
)

func (a *api) listAudit(w http.ResponseWriter, r *http.Request, u store.User) {
	q, err := parseQuery(r, "after_seq", "limit")
	if err != nil {
		a.fail(w, err)
		return
	}
	after, err := q.integer("after_seq", 0, 0, 1<<62)
	if err != nil {
		a.fail(w, err)
		return
	}
	limit, err := q.integer("limit", defaultAuditLimit, 1, maxAuditLimit)
	if err != nil {
		a.fail(w, err)
		return
	}
	es, next, err := a.svc.ListAudit(r.Context(), u, after, int(limit))
	if err != nil {
		a.fail(w, err)
		return
	}
	out := auditPageJSON{Items: make([]auditEntryJSON, len(es)), NextAfterSeq: next}
	for i, e := range es {
		out.Items[i] = auditOut(e)
	}
	writeJSON(w, http.StatusOK, out)
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
