package service_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

const registerProfile = `name: qualified-signature
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 365d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], expires_after: 72h}
register: {document: required}
`

const plainProfile = `name: plain
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 365d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], expires_after: 72h}
`

// registerEnv is a coordinator with two organisations, a help desk, an approver in each,
// a holder with an accented name, an agent and both profiles, at a fixed time.
type registerEnv struct {
	ctx                     context.Context
	s                       *service.Service
	st                      store.Store
	now                     time.Time
	admin, hd, acmeAp, gxAp service.Actor
	holder                  service.Actor
}

func newRegisterEnv(t *testing.T, cfg store.Config) *registerEnv {
	t.Helper()
	e := &registerEnv{ctx: context.Background(), now: time.Date(2026, 3, 14, 10, 0, 0, 0, time.UTC)}
	e.s, e.st = openWith(t, cfg, service.Options{Now: func() time.Time { return e.now }})
	e.admin = bootstrapAdmin(t, e.s, e.st)
	for _, o := range []string{"Acme", "Globex"} {
		if _, err := e.s.CreateOrganization(e.ctx, e.admin, o); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(name, display, org string, roles ...jobs.Role) service.Actor {
		u, err := e.s.CreateUser(e.ctx, e.admin, service.UserRequest{Username: name, DisplayName: display, Organization: org, Roles: roles})
		if err != nil {
			t.Fatal(err)
		}
		return service.ActorFor(u.User)
	}
	e.hd = mk("olga", "Olga", "Acme", jobs.RoleHelpdesk)
	e.acmeAp = mk("arne", "Arne", "Acme", jobs.RoleApprover)
	e.gxAp = mk("gina", "Gina", "Globex", jobs.RoleApprover)
	e.holder = mk("eloise", "Éloïse Lefèvre", "Acme")
	if _, err := e.s.ApplyProfiles(e.ctx, e.admin, []byte(registerProfile+"---\n"+plainProfile)); err != nil {
		t.Fatal(err)
	}
	if err := e.st.InTx(e.ctx, func(tx store.Tx) error {
		if _, err := tx.CreateAgent(e.ctx, store.Agent{ID: "ws-1", Hostname: "ws-1"}); err != nil {
			return err
		}
		_, err := tx.UpsertToken(e.ctx, store.Token{Serial: "RT0001", AgentID: "ws-1", Manufacturer: "Aktiv", Model: "Rutoken ECP", LastSeen: e.now})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *registerEnv) request(profile string, d store.Document) service.JobRequest {
	return service.JobRequest{Kind: jobs.KindIssue, Holder: "eloise", Profile: profile, Agent: "ws-1", Document: d}
}

func wantBadField(t *testing.T, err error, field, msg string) {
	t.Helper()
	var se *service.Error
	if !errors.As(err, &se) || se.Code != service.CodeBadRequest || se.Field != field || !strings.Contains(se.Msg, msg) {
		t.Fatalf("got %v, want bad_request on %s saying %q", err, field, msg)
	}
}

func TestDocumentRefusals(t *testing.T) {
	t.Parallel()
	e := newRegisterEnv(t, sqlite(t))
	ok := store.Document{Number: "Arrêté n° 117", Date: "2026-03-01"}
	for _, tc := range []struct {
		name, profile string
		d             store.Document
		field, msg    string
	}{
		{"required and missing", "qualified-signature", store.Document{}, "document", "profile qualified-signature requires the document"},
		{"date in the future", "qualified-signature", store.Document{Number: "A-1", Date: "2026-03-16"}, "document.date", "2026-03-16 is in the future"},
		{"not a real date", "qualified-signature", store.Document{Number: "A-1", Date: "2026-02-30"}, "document.date", `"2026-02-30" is not a date`},
		{"not ISO", "qualified-signature", store.Document{Number: "A-1", Date: "14/03/2026"}, "document.date", "YYYY-MM-DD"},
		{"number without date", "qualified-signature", store.Document{Number: "A-1"}, "document.date", "is required with document.number"},
		{"date without number", "qualified-signature", store.Document{Date: "2026-03-01"}, "document.number", "is required with document.date"},
		{"number too long", "qualified-signature", store.Document{Number: strings.Repeat("é", 65), Date: "2026-03-01"}, "document.number", "65 characters long; at most 64"},
		{"control character", "qualified-signature", store.Document{Number: "A\x1b[31m", Date: "2026-03-01"}, "document.number", "control or invisible"},
		{"profile records none", "plain", ok, "document", "profile plain records no document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.s.CreateJob(e.ctx, e.hd, e.request(tc.profile, tc.d))
			wantBadField(t, err, tc.field, tc.msg)
		})
	}
	// Today where it is already tomorrow (UTC+14) is not the future.
	if _, err := e.s.CreateJob(e.ctx, e.hd, e.request("qualified-signature", store.Document{Number: "A-2", Date: "2026-03-15"})); err != nil {
		t.Fatalf("a document dated today at UTC+14: %v", err)
	}
	// A renew under the profile may go without (a standing renewal has nobody to ask).
	r := e.request("qualified-signature", store.Document{})
	r.Kind = jobs.KindRenew
	if _, err := e.s.CreateJob(e.ctx, e.hd, r); err != nil {
		t.Fatalf("renew without a document: %v", err)
	}
}

// The document is part of what is approved: the approver sees it, another document is
// another binding hash, and an approval bound to the old one does not count.
func TestDocumentShownAndBound(t *testing.T) {
	t.Parallel()
	e := newRegisterEnv(t, sqlite(t))
	first := store.Document{Number: "Arrêté n° 117", Date: "2026-03-01"}
	j, err := e.s.CreateJob(e.ctx, e.hd, e.request("qualified-signature", first))
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.s.GetJob(e.ctx, e.acmeAp, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Document != first {
		t.Fatalf("the approver sees document %+v, want %+v", d.Document, first)
	}
	again, err := e.s.CreateJob(e.ctx, e.hd, e.request("qualified-signature", store.Document{Number: "Arrêté n° 118", Date: "2026-03-01"}))
	if err != nil {
		t.Fatal(err)
	}
	if again.BindingHash == j.BindingHash {
		t.Fatal("another document keeps the binding hash")
	}
	// Approving with the hash of the first document's request fails on the second.
	if _, err := e.s.Approve(e.ctx, e.acmeAp, again.ID, service.DecisionRequest{BindingHash: j.BindingHash}); !errors.Is(err, &service.Error{Code: service.CodeBindingMismatch}) {
		t.Fatalf("approval bound to the old document: %v", err)
	}
	if _, err := e.s.Approve(e.ctx, e.acmeAp, again.ID, service.DecisionRequest{BindingHash: again.BindingHash}); err != nil {
		t.Fatalf("approval of what the approver saw: %v", err)
	}
	// The audit entry of the request names the document.
	found := false
	for a, err := range e.st.AuditEntries(e.ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if a.JobID == again.ID && strings.Contains(string(a.Details), `"document_number":"Arrêté n° 118"`) {
			found = true
		}
	}
	if !found {
		t.Error("no audit entry names the document")
	}
}

// succeed moves a job to succeeded on token serial, as the dispatcher would at the end.
func (e *registerEnv) succeed(t *testing.T, id, serial string, at time.Time) {
	t.Helper()
	if err := e.st.InTx(e.ctx, func(tx store.Tx) error {
		j, err := tx.GetJob(e.ctx, id)
		if err != nil {
			return err
		}
		_, err = tx.UpdateJobState(e.ctx, id, j.State, jobs.StateSucceeded, j.Version,
			store.JobChange{Actor: "agent:ws-1", At: at, TokenSerial: serial})
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	e := newRegisterEnv(t, sqlite(t))
	doc := store.Document{Number: "Arrêté n° 117", Date: "2026-03-01"}
	j, err := e.s.CreateJob(e.ctx, e.hd, e.request("qualified-signature", doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Approve(e.ctx, e.acmeAp, j.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	e.succeed(t, j.ID, "RT0001", e.now.Add(time.Hour))

	reg, err := e.s.ReadRegister(e.ctx, e.acmeAp, service.RegisterQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if reg.Organization != "Acme" || len(reg.Entries) != 1 {
		t.Fatalf("register %+v", reg)
	}
	got := reg.Entries[0]
	if got.TokenSerial != "RT0001" || got.Model != "Rutoken ECP" || got.Holder != "eloise" || got.HolderName != "Éloïse Lefèvre" ||
		got.Document != doc || !got.Issued.Equal(e.now.Add(time.Hour)) || got.State != service.DeviceIssued || !got.Returned.IsZero() {
		t.Fatalf("entry %+v", got)
	}
	var states []string
	for _, h := range got.History {
		states = append(states, h.State+"/"+h.Actor)
	}
	if want := "pending_approval/olga approved/arne succeeded/agent:ws-1"; strings.Join(states, " ") != want {
		t.Fatalf("history %v, want %s", states, want)
	}

	// Globex's approver reads Globex's register only: asking for Acme's is refused.
	if reg, err := e.s.ReadRegister(e.ctx, e.gxAp, service.RegisterQuery{}); err != nil || len(reg.Entries) != 0 || reg.Organization != "Globex" {
		t.Fatalf("Globex's register: %+v, %v", reg, err)
	}
	if _, err := e.s.ReadRegister(e.ctx, e.gxAp, service.RegisterQuery{Organization: "Acme"}); !errors.Is(err, &service.Error{Code: service.CodeOutOfScope}) {
		t.Fatalf("Globex's approver reads Acme's register: %v", err)
	}
	// A holder without a role reads none.
	if _, err := e.s.ReadRegister(e.ctx, e.holder, service.RegisterQuery{}); !errors.Is(err, &service.Error{Code: service.CodeForbidden}) {
		t.Fatalf("a holder reads the register: %v", err)
	}
	if _, err := e.s.ReadRegister(e.ctx, e.admin, service.RegisterQuery{Organization: "Nowhere"}); err == nil {
		t.Fatal("an unknown organisation is not refused")
	}

	// A wipe of the token takes the device back.
	// (Made in the store: a wipe needs the token's SO PIN, which only a real issue records.)
	var w store.Job
	if err := e.st.InTx(e.ctx, func(tx store.Tx) error {
		w, err = tx.CreateJob(e.ctx, store.Job{Kind: jobs.KindWipe, State: jobs.StateApproved, AgentID: "ws-1", TokenSerial: "RT0001",
			RequesterID: e.hd.ID(), Created: e.now.Add(47 * time.Hour)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	e.succeed(t, w.ID, "RT0001", e.now.Add(48*time.Hour))
	reg, err = e.s.ReadRegister(e.ctx, e.admin, service.RegisterQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if reg.Organization != "" || len(reg.Entries) != 1 {
		t.Fatalf("every organisation's register: %+v", reg)
	}
	got = reg.Entries[0]
	last := got.History[len(got.History)-1]
	if got.State != service.DeviceReturned || !got.Returned.Equal(e.now.Add(48*time.Hour)) || got.ReturnReason != "token wiped by job "+w.ID ||
		last.State != service.DeviceReturned || !last.At.Equal(got.Returned) {
		t.Fatalf("returned entry %+v", got)
	}
}

// A rollout of issues under a profile that requires a document is refused: each issuance
// cites its own.
func TestRegisterRolloutRefused(t *testing.T) {
	t.Parallel()
	e := newRegisterEnv(t, sqlite(t))
	u, err := e.s.CreateUser(e.ctx, e.admin, service.UserRequest{Username: "rita", Organization: "Acme", Roles: []jobs.Role{jobs.RoleRolloutOwner}})
	if err != nil {
		t.Fatal(err)
	}
	spec := rollout.Spec{Name: "all-signers",
		Template: rollout.Template{Kind: jobs.KindIssue, Profile: "qualified-signature", Holder: "eloise"},
		Selector: rollout.Selector{Tokens: rollout.TokenSelector{Models: []string{"Rutoken ECP"}}},
		Plan:     rollout.Plan{Canary: rollout.Canary{Count: 1}, Waves: []float64{100}},
		Brake:    rollout.Brake{ThresholdPercent: 20, MinExecuted: 1}}
	_, err = e.s.CreateRollout(e.ctx, service.ActorFor(u.User), service.RolloutRequest{Spec: spec, DryRun: true})
	wantBadField(t, err, "spec.template.profile", "requires a document for each issuance")
}

// The token's own life shows in the register: a suspension and its reinstatement in the
// history, and retiring the token takes the device back.
func TestRegisterTokenLife(t *testing.T) {
	t.Parallel()
	e := newRegisterEnv(t, sqlite(t))
	j, err := e.s.CreateJob(e.ctx, e.hd, e.request("qualified-signature", store.Document{Number: "A-7", Date: "2026-03-01"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Approve(e.ctx, e.acmeAp, j.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	e.succeed(t, j.ID, "RT0002", e.now.Add(time.Hour))
	for i, m := range []struct {
		to     tokenlife.State
		reason string
	}{{tokenlife.Suspended, "left at home"}, {tokenlife.Active, "back"}, {tokenlife.Retired, "handed back at the desk"}} {
		e.now = e.now.Add(time.Duration(i+2) * time.Hour)
		if _, err := e.s.SetTokenState(e.ctx, e.hd, "RT0002", m.to, m.reason); err != nil {
			t.Fatalf("%s: %v", m.to, err)
		}
	}
	reg, err := e.s.ReadRegister(e.ctx, e.acmeAp, service.RegisterQuery{})
	if err != nil || len(reg.Entries) != 1 {
		t.Fatalf("register %+v, %v", reg, err)
	}
	got := reg.Entries[0]
	var states []string
	for _, h := range got.History {
		states = append(states, h.State)
	}
	want := "pending_approval approved succeeded token suspended token active token retired " + service.DeviceReturned
	if strings.Join(states, " ") != want {
		t.Errorf("history %q, want %q", strings.Join(states, " "), want)
	}
	if got.State != service.DeviceReturned || !got.Returned.Equal(e.now) || got.ReturnReason != "token retired: handed back at the desk" {
		t.Errorf("entry state %s, returned %v (want %v), reason %q", got.State, got.Returned, e.now, got.ReturnReason)
	}
}
