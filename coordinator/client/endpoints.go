package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// Health reports the coordinator's liveness and store reachability; it needs no token. An
// unhealthy coordinator (503) gives its Health together with an *Error of code
// "unhealthy".
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	status, err := c.do(ctx, request{method: http.MethodGet, path: "/healthz", noAuth: true,
		want: []int{http.StatusOK, http.StatusServiceUnavailable}, out: &h})
	if err != nil {
		return Health{}, err
	}
	if status != http.StatusOK || h.Status != "ok" {
		msg := "the coordinator reports itself unhealthy"
		if h.Store != "" {
			msg += ": store: " + h.Store
		}
		return h, &Error{Status: status, Code: "unhealthy", Message: msg}
	}
	return h, nil
}

// WhoAmI returns the caller's user.
func (c *Client) WhoAmI(ctx context.Context) (User, error) {
	var u User
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/whoami", out: &u})
	return u, err
}

// ListOrgs returns one page of organisations.
func (c *Client) ListOrgs(ctx context.Context, p Page) (OrgList, error) {
	var l OrgList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/orgs", query: p.values(), out: &l})
	return l, err
}

// CreateOrg creates an organisation (admin).
func (c *Client) CreateOrg(ctx context.Context, name string) (Org, error) {
	var o Org
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/orgs",
		body: api.OrgCreate{Name: name}, want: []int{http.StatusCreated}, out: &o})
	return o, err
}

// ListUsers returns one page of people.
func (c *Client) ListUsers(ctx context.Context, f UserFilter, p Page) (UserList, error) {
	q := p.values()
	set(q, "organization", f.Organization)
	set(q, "role", string(f.Role))
	set(q, "q", f.Search)
	var l UserList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/users", query: q, out: &l})
	return l, err
}

// CreateUser creates a person (admin).
func (c *Client) CreateUser(ctx context.Context, u UserCreate) (User, error) {
	var out User
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/users", body: u,
		want: []int{http.StatusCreated}, out: &out})
	return out, err
}

// GetUser returns one person.
func (c *Client) GetUser(ctx context.Context, username string) (User, error) {
	if err := needID("username", username); err != nil {
		return User{}, err
	}
	var u User
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/users/" + url.PathEscape(username), out: &u})
	return u, err
}

// CreateAPIToken issues an API token for a person (admin). The returned Token is the
// secret; the server never shows it again.
func (c *Client) CreateAPIToken(ctx context.Context, username string, t APITokenCreate) (APITokenIssued, error) {
	if err := needID("username", username); err != nil {
		return APITokenIssued{}, err
	}
	var out APITokenIssued
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/users/" + url.PathEscape(username) + "/tokens",
		body: t, want: []int{http.StatusCreated}, out: &out})
	return out, err
}

// ListProfiles returns every profile.
func (c *Client) ListProfiles(ctx context.Context) (ProfileList, error) {
	var l ProfileList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/profiles", out: &l})
	return l, err
}

// ApplyProfiles creates or replaces the profiles of a YAML document (admin). The server
// refuses the whole document when one profile is invalid, naming the field.
func (c *Client) ApplyProfiles(ctx context.Context, yamlDoc []byte) (ProfileList, error) {
	if len(yamlDoc) == 0 {
		return ProfileList{}, errors.New("apply profiles: the document is empty")
	}
	var l ProfileList
	_, err := c.do(ctx, request{method: http.MethodPut, path: "/api/v1/profiles",
		rawBody: yamlDoc, rawType: "application/yaml", out: &l})
	return l, err
}

// GetProfile returns one profile with its YAML text.
func (c *Client) GetProfile(ctx context.Context, name string) (Profile, error) {
	if err := needID("profile name", name); err != nil {
		return Profile{}, err
	}
	var p Profile
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/profiles/" + url.PathEscape(name), out: &p})
	return p, err
}

// ListJobs returns one page of jobs, newest first.
func (c *Client) ListJobs(ctx context.Context, f JobFilter, p Page) (JobList, error) {
	q := p.values()
	set(q, "state", string(f.State))
	set(q, "organization", f.Organization)
	set(q, "holder", f.Holder)
	set(q, "agent", f.Agent)
	set(q, "kind", string(f.Kind))
	if f.AwaitingMe {
		q.Set("awaiting_me", "true")
	}
	var l JobList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/jobs", query: q, out: &l})
	return l, err
}

// CreateJob queues a job (helpdesk, admin). It supersedes an open job for the same
// holder, profile and target. Each call sends a fresh random idempotency key, and sends
// the request again with the same key when the connection closes before the answer: the
// coordinator then answers with the job the first request created, never a second one.
func (c *Client) CreateJob(ctx context.Context, j JobCreate) (Job, error) {
	out, _, err := c.CreateJobWithKey(ctx, j, "")
	return out, err
}

// createResends is how many more times CreateJobWithKey sends a request lost in transport.
const createResends = 3

// CreateJobWithKey is CreateJob with the caller's idempotency key (1 to 255 printable
// ASCII characters; "" draws a random one): a script that runs again with the same key
// and request gets the job its first run created. replayed says the coordinator had
// created the job for an earlier request with the key; the same key with another
// request is refused with the code idempotency_key_reused.
func (c *Client) CreateJobWithKey(ctx context.Context, j JobCreate, key string) (job Job, replayed bool, err error) {
	if key == "" {
		key = NewIdempotencyKey()
	}
	var got http.Header
	status, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/jobs", body: j,
		header: http.Header{api.IdempotencyKeyHeader: {key}}, resend: createResends, got: &got,
		want: []int{http.StatusCreated, http.StatusOK}, out: &job})
	if err != nil {
		return Job{}, false, err
	}
	return job, status == http.StatusOK && got.Get(api.ReplayedHeader) == "true", nil
}

// NewIdempotencyKey returns a random idempotency key: 128 bits, URL-safe.
func NewIdempotencyKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// GetJob returns one job with its approvals, timeline and steps.
func (c *Client) GetJob(ctx context.Context, id string) (JobDetail, error) {
	if err := needID("job ID", id); err != nil {
		return JobDetail{}, err
	}
	var d JobDetail
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/jobs/" + url.PathEscape(id), out: &d})
	return d, err
}

// Approve records the caller's approval at the gate the job waits at.
func (c *Client) Approve(ctx context.Context, id, reason string) (JobDetail, error) {
	return c.decide(ctx, id, "approve", Decision{Reason: reason})
}

// ApproveReviewed records the caller's approval of the job as they reviewed it: d's
// BindingHash is the job's binding_hash they saw, and the server refuses the approval
// (binding_mismatch) when the job has changed since.
func (c *Client) ApproveReviewed(ctx context.Context, id string, d Decision) (JobDetail, error) {
	return c.decide(ctx, id, "approve", d)
}

// Reject rejects the job; the server requires a reason.
func (c *Client) Reject(ctx context.Context, id, reason string) (JobDetail, error) {
	return c.decide(ctx, id, "reject", Decision{Reason: reason})
}

// Cancel cancels a job that is not yet running (its requester or an admin).
func (c *Client) Cancel(ctx context.Context, id, reason string) (JobDetail, error) {
	return c.decide(ctx, id, "cancel", api.Reason{Reason: reason})
}

func (c *Client) decide(ctx context.Context, id, verb string, body any) (JobDetail, error) {
	if err := needID("job ID", id); err != nil {
		return JobDetail{}, err
	}
	var d JobDetail
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/jobs/" + url.PathEscape(id) + "/" + verb,
		body: body, out: &d})
	return d, err
}

// ListAgents returns one page of agents, of every state, with their presence.
func (c *Client) ListAgents(ctx context.Context, p Page) (AgentList, error) {
	return c.ListAgentsBy(ctx, AgentFilter{}, p)
}

// ListTokens returns one page of tokens as last reported by agents.
func (c *Client) ListTokens(ctx context.Context, f TokenFilter, p Page) (TokenList, error) {
	q := p.values()
	set(q, "agent", f.Agent)
	set(q, "holder", f.Holder)
	set(q, "model", f.Model)
	set(q, "q", f.Search)
	var l TokenList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/tokens", query: q, out: &l})
	return l, err
}

// ListCertificates returns one page of certificates issued or installed.
func (c *Client) ListCertificates(ctx context.Context, f CertificateFilter, p Page) (CertificateList, error) {
	q := p.values()
	set(q, "holder", f.Holder)
	set(q, "agent", f.Agent)
	set(q, "token", f.Token)
	set(q, "profile", f.Profile)
	setBool(q, "revoked", f.Revoked)
	if !f.ExpiresBefore.IsZero() {
		q.Set("expires_before", f.ExpiresBefore.UTC().Format(time.RFC3339))
	}
	var l CertificateList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/certificates", query: q, out: &l})
	return l, err
}

// ListAudit returns up to limit audit entries after afterSeq, in sequence order, as stored
// (limit 0: the server's default). See AuditEntries and VerifyAudit to walk and check the
// whole log.
func (c *Client) ListAudit(ctx context.Context, afterSeq int64, limit int) (AuditPage, error) {
	q := url.Values{}
	if afterSeq > 0 {
		q.Set("after_seq", strconv.FormatInt(afterSeq, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p AuditPage
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/audit", query: q, out: &p})
	return p, err
}

func (p Page) values() url.Values {
	q := url.Values{}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	set(q, "cursor", p.Cursor)
	return q
}

func set(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

// setBool sets an optional true or false; nil leaves it out.
func setBool(q url.Values, k string, v *bool) {
	if v != nil {
		q.Set(k, strconv.FormatBool(*v))
	}
}

// needID refuses an empty path parameter, which would address another endpoint.
func needID(what, v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New(what + " is empty")
	}
	return nil
}

// EnrolAgent records a new agent (admin), so that jobs can be queued for it.
func (c *Client) EnrolAgent(ctx context.Context, e AgentEnrolment) (Agent, error) {
	var a Agent
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/agents", body: e,
		want: []int{http.StatusCreated}, out: &a})
	return a, err
}

// MaxAgentBatch is how many agents one EnrolAgents call may enrol.
const MaxAgentBatch = api.MaxAgentBatch

// EnrolAgents records up to MaxAgentBatch new agents (admin) in one request, all or
// nothing, and returns them in the order given. When any entry is refused, none is
// enrolled and the *Error's Entries name each refused entry by its index in es.
func (c *Client) EnrolAgents(ctx context.Context, es []AgentEnrolment) ([]Agent, error) {
	var out AgentBatch
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/agents/batch", body: api.AgentBatchEnrol{Agents: es},
		want: []int{http.StatusCreated}, out: &out})
	return out.Items, err
}

// RevealUserPIN returns the user PIN a job set on its token. The coordinator shows it
// once, to the job's requester or an administrator.
func (c *Client) RevealUserPIN(ctx context.Context, jobID string) (string, error) {
	var out api.UserPIN
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/jobs/" + url.PathEscape(jobID) + "/pin", out: &out})
	return out.PIN, err
}
