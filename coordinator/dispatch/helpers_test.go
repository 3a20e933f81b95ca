package dispatch_test

import (
	"context"
	"crypto/ecdh"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// waitTimeout bounds every wait of these tests for the coordinator.
const waitTimeout = 3 * time.Minute

const profiles = `name: blank-issue
description: Initialise any blank token, no approval.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
  organization: "{{.Organization}}"
sans:
  email: true
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
token:
  initialize: true
  label: "tf {{.ID}}"
  any_blank: true
pin_policy: {min_length: 6, max_length: 16, so_pin_length: 16}
---
name: rsa-blank
description: RSA-2048 on any blank token, no approval.
key: {type: rsa, size: 2048}
subject:
  common_name: "{{.Name}}"
key_usage: [digitalSignature, keyEncipherment]
extended_key_usage: [clientAuth]
validity: 30d
token:
  initialize: true
  label: "tf {{.ID}}"
  any_blank: true
pin_policy: {min_length: 6, max_length: 16, so_pin_length: 16}
---
name: gated
description: One approval, then the CA operator before signing.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
token:
  initialize: true
  label: "tf {{.ID}}"
  any_blank: true
pin_policy: {min_length: 6, max_length: 16, so_pin_length: 16}
approval:
  required: 1
  roles: [approver]
  expires_after: 7d
  ca_operator_required: true
---
name: unblock
description: Unblock the user PIN of a token the coordinator issued.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
pin_policy: {min_length: 6, max_length: 8, digits_only: true}
`

// world is a running coordinator on a private broker vhost, with people, profiles and
// API clients.
type world struct {
	t      *testing.T
	ctx    context.Context
	broker *testenv.Broker
	c      *coordinatortest.Instance
	admin  *client.Client
	desk   *client.Client // helpdesk
	appr   *client.Client // approver
	caop   *client.Client // CA operator
	holder string

	brokerUsers map[string]string // agent ID → its own broker user, made by agentUser
}

func newWorld(t *testing.T, agentUsers string) *world {
	t.Helper()
	return newWorldWith(t, agentUsers, nil)
}

// newWorldWith is newWorld with configure changing the coordinator's configuration.
func newWorldWith(t *testing.T, agentUsers string, configure func(*coordinator.Config)) *world {
	t.Helper()
	b := testenv.NewBroker(t)
	c := coordinatortest.Start(t, coordinatortest.Options{BrokerURL: b.URL, AgentUsers: agentUsers, Configure: configure})
	ctx := testenv.Context(t)
	w := &world{t: t, ctx: ctx, broker: b, c: c, holder: "alice"}
	w.admin = w.client(c.AdminToken)
	if _, err := w.admin.CreateOrg(ctx, "Acme"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []client.UserCreate{
		{Username: "alice", DisplayName: "Alice Martin", Email: "alice@acme.example", Organization: "Acme"},
		{Username: "desk", Organization: "Acme", Roles: []jobs.Role{jobs.RoleHelpdesk}},
		{Username: "boss", Organization: "Acme", Roles: []jobs.Role{jobs.RoleApprover}},
		{Username: "caop", Roles: []jobs.Role{jobs.RoleCAOperator}},
	} {
		if _, err := w.admin.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	w.desk, w.appr, w.caop = w.userClient("desk"), w.userClient("boss"), w.userClient("caop")
	if _, err := w.admin.ApplyProfiles(ctx, []byte(profiles)); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) client(token string) *client.Client {
	w.t.Helper()
	c, err := client.New(w.c.URL, token)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

func (w *world) userClient(username string) *client.Client {
	w.t.Helper()
	tok, err := w.admin.CreateAPIToken(w.ctx, username, client.APITokenCreate{Name: "test"})
	if err != nil {
		w.t.Fatal(err)
	}
	return w.client(tok.Token)
}

// agent enrols agent id and starts it as a scripted agent on url ("": the shared guest
// user).
func (w *world) agent(id, url string) *dispatchtest.Agent {
	w.t.Helper()
	if _, err := w.admin.EnrolAgent(w.ctx, client.AgentEnrolment{ID: id, Hostname: id + ".test", BrokerUser: w.brokerUsers[id]}); err != nil {
		w.t.Fatal(err)
	}
	if url == "" {
		url = w.broker.URL
	}
	return dispatchtest.Start(w.t, url, id)
}

// agentUser creates agent id's own broker user with the protocol's permissions and
// returns its URL; agent enrols id with that user. Users belong to the whole broker: the
// name is unique to this run, so that tests, and runs, never share one.
func (w *world) agentUser(id string) string {
	w.t.Helper()
	base, err := protocol.AgentUser(id)
	if err != nil {
		w.t.Fatal(err)
	}
	user := testenv.UniqueUser(base + "-")
	if w.brokerUsers == nil {
		w.brokerUsers = map[string]string{}
	}
	w.brokerUsers[id] = user
	p, err := protocol.AgentPermissions(id)
	if err != nil {
		w.t.Fatal(err)
	}
	url := w.broker.AddUser(w.t, user, p.Configure, p.Write, p.Read)
	w.broker.SetTopicPermissions(w.t, user, p.TopicExchange, p.TopicWrite, p.TopicRead)
	return url
}

// job queues a job of kind for agent with profile.
func (w *world) job(kind jobs.Kind, agent, profile, serial string) client.Job {
	w.t.Helper()
	j, err := w.desk.CreateJob(w.ctx, client.JobCreate{Kind: kind, Holder: w.holder, Agent: agent, Profile: profile, TokenSerial: serial})
	if err != nil {
		w.t.Fatal(err)
	}
	return j
}

// waitState polls the job until it is in state, failing the test when it ends elsewhere.
func (w *world) waitState(id string, state jobs.State) client.JobDetail {
	w.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		d, err := w.admin.GetJob(w.ctx, id)
		if err != nil {
			w.t.Fatal(err)
		}
		if d.State == state {
			return d
		}
		if (jobs.Terminal(d.State) && d.State != jobs.StateFailed) || time.Now().After(deadline) {
			w.t.Fatalf("job %s is %s (%s: %s), want %s; timeline %+v", id, d.State, d.ErrorCode, d.ErrorMessage, state, d.Timeline)
		}
		<-tick.C
	}
}

// auditOf returns the audit entries of action, of the job when jobID is set.
func (w *world) auditOf(action, jobID string) []audit.Entry {
	w.t.Helper()
	var out []audit.Entry
	for e, err := range w.c.Store.AuditEntries(w.ctx, 1) {
		if err != nil {
			w.t.Fatal(err)
		}
		if e.Action == action && (jobID == "" || e.JobID == jobID) {
			out = append(out, e)
		}
	}
	return out
}

// verifyAudit checks the whole audit chain.
func (w *world) verifyAudit() {
	w.t.Helper()
	var all []audit.Entry
	for e, err := range w.c.Store.AuditEntries(w.ctx, 1) {
		if err != nil {
			w.t.Fatal(err)
		}
		all = append(all, e)
	}
	if err := audit.Verify(all); err != nil {
		w.t.Fatalf("audit chain: %v", err)
	}
}

// waitAudit polls until an entry of action for the job exists, and returns the entries.
func (w *world) waitAudit(action, jobID string) []audit.Entry {
	w.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if es := w.auditOf(action, jobID); len(es) > 0 {
			return es
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("no %s audit entry for job %q within %s", action, jobID, waitTimeout)
		}
		<-tick.C
	}
}

// transitions counts the job's timeline events into state to.
func transitions(d client.JobDetail, to jobs.State) int {
	n := 0
	for _, e := range d.Timeline {
		if e.To == to {
			n++
		}
	}
	return n
}

// steps lists the job's steps of an attempt.
func steps(d client.JobDetail, attempt int) []jobs.Step {
	var out []jobs.Step
	for _, s := range d.Steps {
		if s.Attempt == attempt {
			out = append(out, s.Step)
		}
	}
	return out
}

func containsAll(s string, parts ...string) bool {
	return !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(s, p) })
}

// certificates lists the job's certificates.
func (w *world) certificates(jobID string) []store.Certificate {
	w.t.Helper()
	cs, _, err := w.c.Store.ListCertificates(w.ctx, store.CertificateFilter{JobID: jobID}, store.Page{})
	if err != nil {
		w.t.Fatal(err)
	}
	return cs
}

// apiCode is the API error code of err.
func apiCode(err error) string {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// signers makes what a dispatcher signs with, in dir: a CA on st (P-256, its CRL at
// pki.test) and the result key agents seal their PINs to.
func signers(tb testing.TB, ctx context.Context, st store.Store, dir string, log zerolog.Logger) (ca.CA, *ecdh.PrivateKey) {
	tb.Helper()
	authority, err := ca.New(ctx, ca.Options{DataDir: filepath.Join(dir, "ca"), Revocations: dispatch.Revocations{Store: st}, Logger: log,
		Builtin: ca.BuiltinOptions{CRLURL: "http://pki.test/crl", KeyType: protocol.KeyP256}})
	if err != nil {
		tb.Fatal(err)
	}
	key, _, err := dispatch.LoadOrCreateResultKey(filepath.Join(dir, dispatch.ResultKeyFile))
	if err != nil {
		tb.Fatal(err)
	}
	return authority, key
}
