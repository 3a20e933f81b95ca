package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/api/apitest"
	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/httpapi"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// fakeClock is the service's clock in tests: it starts at the real time (the store stamps
// a few rows itself) and only moves when told.
type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// recorder is a Dispatcher and an Issuer that records what it was told, and checks it is
// called inside a transaction that sees the change.
type recorder struct {
	mu        sync.Mutex // guards the fields below
	approved  []string
	withdrawn []string
	caPassed  []string
	enrolled  [][]string // agents the agent hook heard of, each call's
	errs      []error
}

func (r *recorder) AgentEnrolled(_ context.Context, a store.Agent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.enrolled = append(r.enrolled, []string{a.ID})
	return nil
}

func (r *recorder) AgentsEnrolled(_ context.Context, as []store.Agent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, len(as))
	for i, a := range as {
		ids[i] = a.ID
	}
	r.enrolled = append(r.enrolled, ids)
	return nil
}

// hooked returns what the agent hook heard, each call's agents.
func (r *recorder) hooked() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]string(nil), r.enrolled...)
}

func (r *recorder) JobApproved(ctx context.Context, tx *service.JobTx, j store.Job) error {
	got, err := tx.GetJob(ctx, j.ID)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil || got.State != jobs.StateApproved {
		r.errs = append(r.errs, fmt.Errorf("JobApproved(%s): the transaction sees %s: %w", j.ID, got.State, err))
	}
	r.approved = append(r.approved, j.ID)
	return nil
}

func (r *recorder) JobWithdrawn(_ context.Context, _ store.Tx, j store.Job, from jobs.State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.withdrawn = append(r.withdrawn, j.ID+":"+string(from)+"->"+string(j.State))
	return nil
}

func (r *recorder) CAGatePassed(_ context.Context, _ *service.JobTx, j store.Job) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.caPassed = append(r.caPassed, j.ID)
	return nil
}

func (r *recorder) snapshot() (approved, withdrawn, caPassed []string, errs []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.approved...), append([]string(nil), r.withdrawn...),
		append([]string(nil), r.caPassed...), append([]error(nil), r.errs...)
}

// env is a real service over a SQLite store in a temporary directory, behind the API
// handler on a real HTTP server.
type env struct {
	st     store.Store
	svc    *service.Service
	srv    *httptest.Server
	clock  *fakeClock
	rec    *recorder
	reg    *prometheus.Registry
	admin  string            // bootstrap admin token
	tokens map[string]string // username → API token
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(t.TempDir(), "c.db")})
}

// newPostgresEnv is newEnv on a PostgreSQL database of its own.
func newPostgresEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)})
}

// worldOnBothStores runs fn as two parallel subtests, each with an env of its own holding
// the world: one on SQLite, one on PostgreSQL.
func worldOnBothStores(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Helper()
	for name, newEnvFor := range map[string]func(t *testing.T) *env{"sqlite": newEnv, "postgres": newPostgresEnv} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnvFor(t)
			e.world(t)
			fn(t, e)
		})
	}
}

// newEnvOn is newEnv on the store cfg describes.
func newEnvOn(t *testing.T, cfg store.Config) *env {
	t.Helper()
	ctx := context.Background()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st, err := store.Open(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: st, clock: &fakeClock{t: time.Now().UTC().Truncate(time.Microsecond)}, rec: &recorder{},
		reg: prometheus.NewRegistry(), tokens: map[string]string{}}
	m, err := service.NewMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	e.svc, err = service.New(service.Options{Store: st, Logger: log, Now: e.clock.now, Dispatcher: e.rec, Issuer: e.rec, Observer: m,
		AgentHook: e.rec})
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Options{Service: e.svc, Logger: log, Registry: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	// Every response the tests cause is held to openapi.yaml.
	e.srv = httptest.NewServer(apitest.Handler(t, h))
	t.Cleanup(func() {
		e.srv.Close()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
		if _, _, _, errs := e.rec.snapshot(); len(errs) > 0 {
			t.Errorf("dispatcher: %v", errs)
		}
	})
	created, err := e.svc.Bootstrap(ctx, func(tok string) error { e.admin = tok; return nil })
	if err != nil || !created {
		t.Fatalf("bootstrap: %v, %v", created, err)
	}
	e.tokens["admin"] = e.admin
	return e
}

// response is one HTTP exchange's result.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// do sends a request; body is nil, a []byte or string sent as it is, or a value sent as
// JSON. A token "" sends no Authorization header.
func (e *env) do(t *testing.T, method, path, token string, body any) response {
	t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd, ct = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(context.Background(), method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// as sends a request as a named user.
func (e *env) as(t *testing.T, user, method, path string, body any) response {
	t.Helper()
	tok, ok := e.tokens[user]
	if !ok {
		t.Fatalf("no token for %s", user)
	}
	return e.do(t, method, path, tok, body)
}

// ok decodes a successful response into T.
func ok[T any](t *testing.T, r response, status int) T {
	t.Helper()
	if r.status != status {
		t.Fatalf("got %s, want status %d", r, status)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("content type %q", ct)
	}
	var v T
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields() // the API sends what the OpenAPI file says, nothing else
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
		Entries []struct {
			Index   int    `json:"index"`
			ID      string `json:"id"`
			Code    string `json:"code"`
			Field   string `json:"field"`
			Message string `json:"message"`
		} `json:"entries"`
	} `json:"error"`
}

// wantErr checks an error response's status, code and field ("-" skips the field).
func wantErr(t *testing.T, r response, status int, code, field string) apiError {
	t.Helper()
	if r.status != status {
		t.Fatalf("got %s, want %d %s", r, status, code)
	}
	var e apiError
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body %s: %v", r.body, err)
	}
	if e.Error.Code != code {
		t.Fatalf("got code %q (%s), want %q", e.Error.Code, e.Error.Message, code)
	}
	if field != "-" && e.Error.Field != field {
		t.Fatalf("got field %q (%s), want %q", e.Error.Field, e.Error.Message, field)
	}
	if e.Error.Message == "" {
		t.Fatal("error without message")
	}
	return e
}

// auditAll returns the whole audit log, read through the store.
func (e *env) auditAll(t *testing.T) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	for en, err := range e.st.AuditEntries(context.Background(), 1) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, en)
	}
	if err := audit.Verify(out); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	return out
}

// auditSince returns the entries after seq with the given action.
func (e *env) auditSince(t *testing.T, seq int64, action string) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	for _, en := range e.auditAll(t) {
		if en.Seq > seq && (action == "" || en.Action == action) {
			out = append(out, en)
		}
	}
	return out
}

func (e *env) auditHead(t *testing.T) int64 {
	t.Helper()
	h, err := e.st.AuditHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h.Seq
}

func (e *env) user(t *testing.T, username string) store.User {
	t.Helper()
	u, err := e.st.GetUserByUsername(context.Background(), username)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Test profiles.
const (
	// one approver of the holder's organisation
	profileEmail = `name: email-signing
description: S/MIME signing.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
  organization: "{{.Organization}}"
sans:
  email: true
key_usage: [digitalSignature, nonRepudiation]
extended_key_usage: [emailProtection]
validity: 365d
token: {initialize: true, label: "{{.ID}}"}
pin_policy: {min_length: 6, max_length: 16, so_pin_length: 16}
approval:
  required: 1
  roles: [approver]
  scope: organization
  expires_after: 7d
`
	// no approval at all
	profileOpen = `name: open-client
description: Client authentication without approval.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
pin_policy: {min_length: 6, max_length: 8}
`
	// two approvers, then a CA operator
	profileDual = `name: dual
description: Dual approval and CA-operator gate.
key: {type: rsa, size: 3072}
subject:
  common_name: "{{.Name}}"
  organization: "{{.Organization}}"
key_usage: [digitalSignature, keyEncipherment]
extended_key_usage: [clientAuth]
validity: 397d
pin_policy: {min_length: 12, max_length: 32}
approval:
  required: 2
  roles: [approver]
  scope: organization
  expires_after: 48h
  ca_operator_required: true
`
)

type userSpec struct {
	name, org, display, email, upn string
	roles                          []string
	attrs                          map[string]string
}

// world creates two organisations, operators and holders with API tokens, the test
// profiles and two enrolled agents.
func (e *env) world(t *testing.T) {
	t.Helper()
	for _, o := range []string{"Acme", "Globex"} {
		ok[map[string]any](t, e.as(t, "admin", "POST", "/api/v1/orgs", map[string]string{"name": o}), 201)
	}
	for _, u := range []userSpec{
		{name: "hd", org: "Acme", roles: []string{"helpdesk"}},
		{name: "hd2", org: "Acme", roles: []string{"helpdesk", "approver"}},
		{name: "ap1", org: "Acme", roles: []string{"approver"}},
		{name: "ap2", org: "Acme", roles: []string{"approver"}},
		{name: "ap3", org: "Acme", roles: []string{"approver"}},
		{name: "apg", org: "Globex", roles: []string{"approver"}},
		{name: "ca", roles: []string{"ca_operator"}},
		{name: "aud", roles: []string{"auditor"}},
		{name: "ann", org: "Acme", display: "Ann Martin", email: "ann@acme.example", upn: "ann@acme.example"},
		{name: "bob", org: "Acme", display: "Bob Noemail"},
		{name: "gina", org: "Globex", display: "Gina Globex", email: "gina@globex.example"},
	} {
		body := map[string]any{"username": u.name, "organization": u.org, "display_name": u.display,
			"email": u.email, "upn": u.upn, "roles": u.roles, "attributes": u.attrs}
		ok[map[string]any](t, e.as(t, "admin", "POST", "/api/v1/users", body), 201)
		tok := ok[struct {
			ID, Token, Username string
			Expires             time.Time
		}](t, e.as(t, "admin", "POST", "/api/v1/users/"+u.name+"/tokens", nil), 201)
		e.tokens[u.name] = tok.Token
	}
	for _, p := range []string{profileEmail, profileOpen, profileDual} {
		ok[map[string]any](t, e.as(t, "admin", "PUT", "/api/v1/profiles", p), 200)
	}
	for _, id := range []string{"ws-1", "ws-2"} {
		ok[map[string]any](t, e.as(t, "admin", "POST", "/api/v1/agents", map[string]string{"id": id, "hostname": id + ".acme.example"}), 201)
	}
}

// job is the Job schema.
type job struct {
	ID           string    `json:"id"`
	Kind         string    `json:"kind"`
	State        string    `json:"state"`
	Holder       string    `json:"holder"`
	Profile      string    `json:"profile"`
	ProfileHash  string    `json:"profile_hash"`
	Agent        string    `json:"agent"`
	TokenSerial  string    `json:"token_serial"`
	Requester    string    `json:"requester"`
	Organization string    `json:"organization"`
	BindingHash  string    `json:"binding_hash"`
	Attempt      int       `json:"attempt"`
	Approvals    string    `json:"approvals"`
	Deadline     time.Time `json:"deadline"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
	ErrorCode    string    `json:"error_code"`
	ErrorMessage string    `json:"error_message"`
	SupersededBy string    `json:"superseded_by"`
}

// jobDetail is the JobDetail schema.
type jobDetail struct {
	job
	ApprovalList []struct {
		Gate     string    `json:"gate"`
		Approver string    `json:"approver"`
		Decision string    `json:"decision"`
		Reason   string    `json:"reason"`
		At       time.Time `json:"at"`
		Valid    bool      `json:"valid"`
	} `json:"approval_list"`
	Timeline []struct {
		From    string    `json:"from"`
		To      string    `json:"to"`
		Attempt int       `json:"attempt"`
		Actor   string    `json:"actor"`
		Reason  string    `json:"reason"`
		At      time.Time `json:"at"`
	} `json:"timeline"`
	Steps []struct {
		Attempt int       `json:"attempt"`
		Step    string    `json:"step"`
		Detail  string    `json:"detail"`
		At      time.Time `json:"at"`
	} `json:"steps"`
	WaitingReason string    `json:"waiting_reason"`
	AgentResult   string    `json:"agent_result"`
	Subject       string    `json:"subject"`
	SANs          []string  `json:"sans"`
	TokenURI      string    `json:"token_uri"`
	AgentPresence string    `json:"agent_presence"`
	AgentLastSeen time.Time `json:"agent_last_seen"`
}

type list[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// newJob queues a job as user and returns it.
func (e *env) newJob(t *testing.T, user string, body map[string]any) job {
	t.Helper()
	return ok[job](t, e.as(t, user, "POST", "/api/v1/jobs", body), 201)
}

func issue(holder, profile, agent string) map[string]any {
	return map[string]any{"kind": "issue", "holder": holder, "profile": profile, "agent": agent}
}

// doCT sends a raw body with a content type.
func (e *env) doCT(t *testing.T, method, path, token, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}
