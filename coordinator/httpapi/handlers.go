package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

func (a *server) fail(w http.ResponseWriter, err error) { writeError(w, a.log, err) }

// noQuery refuses any query parameter on endpoints that take none.
func noQuery(r *http.Request) error {
	_, err := parseQuery(r)
	return err
}

func (a *server) whoami(w http.ResponseWriter, r *http.Request, u service.Actor) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, userOut(a.svc.Whoami(r.Context(), u)))
}

func (a *server) listOrgs(w http.ResponseWriter, r *http.Request, u service.Actor) {
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
	orgs, next, err := a.svc.ListOrganizations(r.Context(), u, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, listOf(orgs, next, orgOut))
}

func (a *server) createOrg(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.OrgCreate
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	o, err := a.svc.CreateOrganization(r.Context(), u, in.Name)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, orgOut(o))
}

func (a *server) listUsers(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "limit", "cursor", "organization", "role", "q")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	users, next, err := a.svc.ListUsers(r.Context(), u, service.UserQuery{Organization: q.get("organization"), Role: jobs.Role(q.get("role")), Search: q.get("q")}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, listOf(users, next, userOut))
}

func (a *server) createUser(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.UserCreate
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	v, err := a.svc.CreateUser(r.Context(), u, service.UserRequest{Username: in.Username, DisplayName: in.DisplayName,
		Email: in.Email, UPN: in.UPN, Organization: in.Organization, Attributes: in.Attributes, Roles: in.Roles, Language: in.Language})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, userOut(v))
}

func (a *server) getUser(w http.ResponseWriter, r *http.Request, u service.Actor) {
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

func (a *server) issueToken(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.APITokenCreate
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, false)); err != nil {
		a.fail(w, err)
		return
	}
	t, err := a.svc.IssueAPIToken(r.Context(), u, r.PathValue("username"), in.Name, in.ExpiresIn)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.APITokenIssued{ID: t.ID, Token: t.Token, Username: t.Username, Expires: t.Expires})
}

func (a *server) listProfiles(w http.ResponseWriter, r *http.Request, u service.Actor) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	ps, err := a.svc.ListProfiles(r.Context(), u)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, profilesOut(ps))
}

func (a *server) applyProfiles(w http.ResponseWriter, r *http.Request, u service.Actor) {
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
	writeJSON(w, http.StatusOK, profilesOut(ps))
}

func (a *server) getProfile(w http.ResponseWriter, r *http.Request, u service.Actor) {
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

func (a *server) listJobs(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "limit", "cursor", "state", "organization", "holder", "agent", "kind", "awaiting_me")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	awaiting, err := q.boolean("awaiting_me")
	if err != nil {
		a.fail(w, err)
		return
	}
	js, next, err := a.svc.ListJobs(r.Context(), u, service.JobQuery{State: jobs.State(q.get("state")), Kind: jobs.Kind(q.get("kind")),
		Organization: q.get("organization"), Holder: q.get("holder"), Agent: q.get("agent"), AwaitingMe: awaiting}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, listOf(js, next, jobOut))
}

func (a *server) createJob(w http.ResponseWriter, r *http.Request, u service.Actor) {
	// The deadline is read as text, so that a malformed one is refused naming the field.
	var in struct {
		api.JobCreate
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
	key, err := idempotencyKey(r)
	if err != nil {
		a.fail(w, err)
		return
	}
	req := service.JobRequest{Kind: in.Kind, Holder: in.Holder, Agent: in.Agent, Profile: in.Profile, TokenSerial: in.TokenSerial,
		Deadline: deadline, IdempotencyKey: key, CertificateID: in.CertificateID}
	if in.Document != nil {
		req.Document = service.Document{Number: in.Document.Number, Date: in.Document.Date}
	}
	j, err := a.svc.CreateJob(r.Context(), u, req)
	if err != nil {
		a.fail(w, err)
		return
	}
	if j.Replayed {
		w.Header().Set(api.ReplayedHeader, "true")
		writeJSON(w, http.StatusOK, jobOut(j))
		return
	}
	writeJSON(w, http.StatusCreated, jobOut(j))
}

// idempotencyKey reads the Idempotency-Key header: "" when absent. The service checks
// what the key holds; an empty or repeated header is refused here, where it is seen.
func idempotencyKey(r *http.Request) (string, error) {
	vs := r.Header.Values(api.IdempotencyKeyHeader)
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", &service.Error{Code: service.CodeBadRequest, Field: service.IdempotencyKeyField,
			Msg: fmt.Sprintf("given %d times; send one key of 1 to %d printable ASCII characters", len(vs), service.MaxIdempotencyKey)}
	case vs[0] == "":
		return "", &service.Error{Code: service.CodeBadRequest, Field: service.IdempotencyKeyField,
			Msg: fmt.Sprintf("is empty; send 1 to %d printable ASCII characters, or no header", service.MaxIdempotencyKey)}
	}
	return vs[0], nil
}

func (a *server) getJob(w http.ResponseWriter, r *http.Request, u service.Actor) {
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

func (a *server) approve(w http.ResponseWriter, r *http.Request, u service.Actor) {
	a.decide(w, r, u, false)
}

func (a *server) reject(w http.ResponseWriter, r *http.Request, u service.Actor) {
	a.decide(w, r, u, true)
}

func (a *server) decide(w http.ResponseWriter, r *http.Request, u service.Actor, reject bool) {
	var in api.Decision
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

func (a *server) cancel(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.Reason
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

func (a *server) listAgents(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "limit", "cursor", "state", "online", "q")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	online, err := q.optBool("online")
	if err != nil {
		a.fail(w, err)
		return
	}
	as, next, err := a.svc.SearchAgents(r.Context(), u, service.AgentQuery{State: service.AgentState(q.get("state")), Online: online, Search: q.get("q")}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, listOf(as, next, agentOut))
}

func (a *server) listTokens(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "limit", "cursor", "agent", "holder", "model", "q")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	ts, next, err := a.svc.SearchTokens(r.Context(), u, service.TokenQuery{Agent: q.get("agent"), Holder: q.get("holder"), Model: q.get("model"), Search: q.get("q")}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, listOf(ts, next, tokenOut))
}

func (a *server) listCertificates(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "limit", "cursor", "holder", "agent", "token", "profile", "revoked", "expires_before")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	revoked, err := q.optBool("revoked")
	if err != nil {
		a.fail(w, err)
		return
	}
	before, err := q.timeParam("expires_before")
	if err != nil {
		a.fail(w, err)
		return
	}
	cs, next, err := a.svc.ListCertificates(r.Context(), u, service.CertificateQuery{Holder: q.get("holder"), Agent: q.get("agent"),
		TokenSerial: q.get("token"), Profile: q.get("profile"), Revoked: revoked, ExpiresBefore: before}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, listOf(cs, next, certificateOut))
}

// Audit page sizes (the API's, not the store's).
const (
	defaultAuditLimit = 500
	maxAuditLimit     = service.MaxAuditPage
)

func (a *server) listAudit(w http.ResponseWriter, r *http.Request, u service.Actor) {
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
	out := api.AuditPage{Items: make([]api.AuditEntry, len(es)), NextAfterSeq: next}
	for i, e := range es {
		out.Items[i] = api.AuditEntryOf(e.Entry)
		out.Items[i].ActorName = e.ActorName
	}
	writeJSON(w, http.StatusOK, out)
}

// parseDeadline reads an optional RFC 3339 deadline; "" is the zero time.
func parseDeadline(s string) (time.Time, error) { return parseTime("deadline", s) }

// parseTime reads the optional RFC 3339 time of field; "" is the zero time.
func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, bad(field, "%q is not an RFC 3339 date-time such as 2026-01-31T18:00:00Z", s)
	}
	return t, nil
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
