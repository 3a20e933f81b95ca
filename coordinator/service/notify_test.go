package service_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/notify"
	"github.com/tokenfleet/tokenfleet/coordinator/notify/notifytest"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// orgProfile needs one approver of the holder's organisation and warns 30 days before
// its certificates expire.
const orgProfile = `name: logon
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 90d
expiry_warning: 30d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], scope: organization, expires_after: 48h}
`

// newNotifyRig is newRig with a notifications outbox (e-mail and a webhook that takes
// every event), and people with e-mail addresses and languages.
func newNotifyRig(t *testing.T) *rig {
	t.Helper()
	ctx := context.Background()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st, err := store.Open(ctx, sqlite(t), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	tm, err := notify.LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	o, err := notify.NewOutbox(notify.OutboxConfig{Email: true, Webhooks: []notify.Webhook{{Name: "siem", URL: "https://siem.example/hook"}},
		ConsoleURL: consoleURL}, tm, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	s, err := service.New(service.Options{Store: st, Logger: log, Now: clk.now, Notifier: o, Issuer: pinIssuer{}})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, ctx: ctx, s: s, st: st, clock: clk}
	r.admin = bootstrapAdmin(t, s, st)
	email := "admin@acme.test"
	if _, err := s.UpdateUser(ctx, r.admin, "admin", service.UserUpdate{Email: &email}); err != nil {
		t.Fatal(err)
	}
	for _, org := range []string{"Acme", "Globex"} {
		if _, err := s.CreateOrganization(ctx, r.admin, org); err != nil {
			t.Fatal(err)
		}
	}
	mk := r.person
	r.owner = mk("olga", "Acme", "en", jobs.RoleRolloutOwner)
	r.ap1 = mk("arne", "Acme", "fr", jobs.RoleApprover)
	r.ap2 = mk("gina", "Globex", "en", jobs.RoleApprover)
	r.helpdesk = mk("hank", "Acme", "en", jobs.RoleHelpdesk)
	mk("ines", "Acme", "", jobs.RoleApprover)
	mk("alice", "Acme", "fr")
	if r.holder, err = st.GetUserByUsername(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyProfiles(ctx, r.admin, []byte(fleetProfile+"---\n"+orgProfile)); err != nil {
		t.Fatal(err)
	}
	return r
}

// consoleURL is where the rig's notices link to.
const consoleURL = "https://pki.acme.test"

// testPIN is the user PIN the rig's issuer opens: the one a job set on its token.
const testPIN = "73905142"

// pinIssuer opens every kept PIN as testPIN, as the dispatcher opens what an agent sealed.
type pinIssuer struct{ service.NopIssuer }

func (pinIssuer) OpenTokenPIN(store.TokenPIN) ([]byte, error) { return []byte(testPIN), nil }

// person creates a user with an e-mail address (name@acme.test) and a language.
func (r *rig) person(name, org, lang string, roles ...jobs.Role) service.Actor {
	r.t.Helper()
	u, err := r.s.CreateUser(r.ctx, r.admin, service.UserRequest{Username: name, DisplayName: strings.ToUpper(name[:1]) + name[1:],
		Email: name + "@acme.test", Organization: org, Roles: roles, Language: lang})
	if err != nil {
		r.t.Fatal(err)
	}
	return service.ActorFor(u.User)
}

// notices returns the e-mail rows of event by address, and how many webhook rows it has.
func (r *rig) notices(event notify.Event) (map[string]store.Notification, int) {
	r.t.Helper()
	ns, _, err := r.st.ListNotifications(r.ctx, store.NotificationFilter{Event: string(event)}, store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		r.t.Fatal(err)
	}
	mails := map[string]store.Notification{}
	hooks := 0
	for _, n := range ns {
		if n.Channel == store.ChannelWebhook {
			hooks++
			continue
		}
		if _, seen := mails[n.Recipient]; !seen {
			mails[n.Recipient] = n // the newest
		}
	}
	return mails, hooks
}

func addresses(m map[string]store.Notification) []string {
	var out []string
	for a := range m {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

func (r *rig) wantNotices(event notify.Event, hooks int, to ...string) map[string]store.Notification {
	r.t.Helper()
	got, h := r.notices(event)
	slices.Sort(to)
	if !slices.Equal(addresses(got), to) || h != hooks {
		r.t.Fatalf("%s: e-mails to %v and %d webhook calls, want %v and %d", event, addresses(got), h, to, hooks)
	}
	return got
}

func (r *rig) enrol(ids ...string) {
	r.t.Helper()
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		for _, id := range ids {
			if _, err := tx.CreateAgent(r.ctx, store.Agent{ID: id, Hostname: id + ".acme.example"}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		r.t.Fatal(err)
	}
}

func TestNotificationsOfJobs(t *testing.T) {
	t.Parallel()
	r := newNotifyRig(t)
	r.enrol("ws-1", "ws-2", "ws-3")
	queue := func(holder, agent string) service.Job {
		t.Helper()
		j, err := r.s.CreateJob(r.ctx, r.helpdesk, service.JobRequest{Kind: jobs.KindIssue, Holder: holder, Profile: "logon", Agent: agent})
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	j := queue("alice", "ws-1")
	// Approvers of Acme (not gina of Globex), each in their language (ines: the default).
	got := r.wantNotices(notify.EventApprovalRequested, 1, "arne@acme.test", "ines@acme.test")
	if fr := got["arne@acme.test"]; fr.Language != "fr" || !strings.HasPrefix(fr.Subject, "[tokenfleet] Demande à approuver : issue pour Alice") ||
		!strings.Contains(string(fr.Body), "tokenfleetctl approve "+j.ID) || !strings.Contains(string(fr.Body), "ws-1 (ws-1.acme.example)") {
		t.Fatalf("approver's notice: %s\n%s", fr.Subject, fr.Body)
	}
	if got["ines@acme.test"].Language != "fr" {
		t.Fatalf("default language: %q", got["ines@acme.test"].Language)
	}
	// The holder is never asked to approve their own request, nor the requester.
	queue("arne", "ws-2")
	if got, _ := r.notices(notify.EventApprovalRequested); len(got) != 2 {
		t.Fatalf("approval notices: %v", addresses(got))
	}
	ns, _, err := r.st.ListNotifications(r.ctx, store.NotificationFilter{Event: string(notify.EventApprovalRequested), Channel: store.ChannelEmail}, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	var own []string
	for _, n := range ns {
		if strings.Contains(n.Subject, "pour Arne") {
			own = append(own, n.Recipient)
		}
	}
	if len(ns) != 3 || !slices.Equal(own, []string{"ines@acme.test"}) {
		t.Fatalf("arne's own request went to %v", own)
	}

	// Approved: the requester hears it, in English.
	if _, err := r.s.Approve(r.ctx, r.ap1, j.ID, service.DecisionRequest{Reason: "ok"}); err != nil {
		t.Fatal(err)
	}
	got = r.wantNotices(notify.EventJobDecided, 1, "hank@acme.test")
	if m := got["hank@acme.test"]; m.Subject != "[tokenfleet] Request approved: issue for Alice" || !strings.Contains(string(m.Body), "approved by arne") {
		t.Fatalf("decision: %s\n%s", m.Subject, m.Body)
	}
	// Rejected, with the reason.
	j3 := queue("alice", "ws-3")
	if _, err := r.s.Reject(r.ctx, r.ap1, j3.ID, service.DecisionRequest{Reason: "wrong workstation"}); err != nil {
		t.Fatal(err)
	}
	ds, _, _ := r.st.ListNotifications(r.ctx, store.NotificationFilter{Event: string(notify.EventJobDecided), Channel: store.ChannelEmail}, store.Page{})
	rejected := slices.IndexFunc(ds, func(n store.Notification) bool { return strings.Contains(n.Subject, "rejected") })
	if len(ds) != 2 || rejected < 0 || !strings.Contains(string(ds[rejected].Body), "Reason: wrong workstation") {
		t.Fatalf("rejection: %d notices, %d rejected", len(ds), rejected)
	}

	// The holder is asked for their token once per attempt, however often the dispatch
	// looks; a transaction rolled back writes nothing.
	ask := func(jobID string, fail bool) error {
		return r.s.UpdateJobs(r.ctx, func(jt *service.JobTx) error {
			cur, err := jt.GetJob(r.ctx, jobID)
			if err != nil {
				return err
			}
			if err := jt.NotifyTokenNeeded(r.ctx, cur, notify.Token{Blank: true}); err != nil {
				return err
			}
			if fail {
				return errors.New("rolled back")
			}
			return nil
		})
	}
	if err := ask(j.ID, true); err == nil {
		t.Fatal("no error")
	}
	r.wantNotices(notify.EventTokenInsert, 0)
	for range 2 {
		if err := ask(j.ID, false); err != nil {
			t.Fatal(err)
		}
	}
	got = r.wantNotices(notify.EventTokenInsert, 1, "alice@acme.test")
	if m := got["alice@acme.test"]; !strings.Contains(m.Subject, "Insérez votre jeton sur le poste ws-1") || !strings.Contains(string(m.Body), "un jeton vierge") {
		t.Fatalf("token notice: %s\n%s", m.Subject, m.Body)
	}

	// Succeeded, then a failure of another job: the requester hears both.
	cur, err := r.st.GetJob(r.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	cur.Kind = jobs.KindIssue
	r.finish(cur, "")
	r.wantNotices(notify.EventJobSucceeded, 1, "hank@acme.test")
	j4 := queue("alice", "ws-3")
	if _, err := r.s.Approve(r.ctx, r.ap1, j4.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	cur, _ = r.st.GetJob(r.ctx, j4.ID)
	r.finish(cur, "token.locked")
	got = r.wantNotices(notify.EventJobFailed, 1, "hank@acme.test")
	if m := got["hank@acme.test"]; !strings.Contains(string(m.Body), "token.locked: the token said token.locked") {
		t.Fatalf("failure: %s", m.Body)
	}
	// No notice carries anything but what its data holds: every body names its job.
	all, _, _ := r.st.ListNotifications(r.ctx, store.NotificationFilter{}, store.Page{Limit: store.MaxPageLimit})
	for _, n := range all {
		if n.State != store.NotificationPending || n.Attempts != 0 {
			t.Fatalf("row %+v", n)
		}
	}

	// Listing is for administrators.
	_, _, err = r.s.ListNotifications(r.ctx, r.ap1, service.NotificationQuery{}, service.Page{})
	wantCode(t, err, service.CodeForbidden)
	_, _, err = r.s.ListNotifications(r.ctx, r.admin, service.NotificationQuery{State: "lost"}, service.Page{})
	wantCode(t, err, service.CodeBadRequest)
	list, _, err := r.s.ListNotifications(r.ctx, r.admin, service.NotificationQuery{State: "pending", Event: string(notify.EventJobFailed)}, service.Page{})
	if err != nil || len(list) != 2 || list[1].Username != "hank" && list[0].Username != "hank" {
		t.Fatalf("list: %+v, %v", list, err)
	}
}

func TestNotificationsOfRollouts(t *testing.T) {
	t.Parallel()
	r := newNotifyRig(t)
	r.agents(4)
	spec := inventorySpec("brake")
	spec.Plan = rollout.Plan{Canary: rollout.Canary{Count: 2}, Waves: []float64{100}}
	spec.Brake = rollout.Brake{ThresholdPercent: 50, MinExecuted: 2}
	v := r.create(spec)
	r.approve(r.ap1, v)
	r.pass()
	js := r.rolloutJobs(v.ID)
	r.finish(js[0], "token.device_error")
	r.finish(js[1], "token.device_error")
	r.pass()
	got := r.wantNotices(notify.EventRolloutBrakeTripped, 1, "olga@acme.test")
	if m := got["olga@acme.test"]; !strings.Contains(m.Subject, "Rollout brake paused") || !strings.Contains(string(m.Body), "brake tripped") {
		t.Fatalf("brake: %s\n%s", m.Subject, m.Body)
	}
	// A rollout's jobs tell nobody of their end: the rollout does.
	r.wantNotices(notify.EventJobFailed, 0)
	r.approve(r.ap1, r.get(v.ID))
	r.pass()
	for _, j := range r.rolloutJobs(v.ID, jobs.StateApproved) {
		r.finish(j, "")
	}
	r.pass()
	if st := r.get(v.ID).State; st != rollout.StateCompleted {
		t.Fatalf("rollout %s", st)
	}
	got = r.wantNotices(notify.EventRolloutCompleted, 1, "olga@acme.test")
	if m := got["olga@acme.test"]; !strings.Contains(string(m.Body), "Targets: 4, succeeded: 2, failed: 2") {
		t.Fatalf("completed: %s", m.Body)
	}
	r.wantNotices(notify.EventRolloutEnded, 0)
}

// TestNotificationsOfRolloutsThatEndEarly: a rollout rejected, aborted by someone else, or
// left unapproved tells its creator, with who and why; one its creator aborts does not.
func TestNotificationsOfRolloutsThatEndEarly(t *testing.T) {
	t.Parallel()
	r := newNotifyRig(t)
	r.agents(2)
	ended := func(id string) (store.Notification, int) {
		t.Helper()
		ns, _, err := r.st.ListNotifications(r.ctx, store.NotificationFilter{Event: string(notify.EventRolloutEnded)}, store.Page{Limit: store.MaxPageLimit})
		if err != nil {
			t.Fatal(err)
		}
		var mail store.Notification
		n := 0
		for _, x := range ns {
			if !strings.Contains(string(x.Body), id) {
				continue
			}
			n++
			if x.Channel == store.ChannelEmail {
				mail = x
			}
		}
		return mail, n
	}
	rejected := r.create(inventorySpec("rejected"))
	if _, err := r.s.DecideRollout(r.ctx, r.ap1, rejected.ID, service.RolloutVote{Verdict: jobs.VerdictReject, BindingHash: rejected.BindingHash,
		Reason: "pas cette semaine"}); err != nil {
		t.Fatal(err)
	}
	if m, n := ended(rejected.ID); n != 2 || m.Recipient != "olga@acme.test" || m.Subject != "[tokenfleet] Rollout rejected rejected" ||
		!strings.Contains(string(m.Body), "was rejected by arne") || !strings.Contains(string(m.Body), "Reason: pas cette semaine") ||
		!strings.Contains(m.HTML, `href="`+consoleURL+"/ui/rollouts/"+rejected.ID+`"`) {
		t.Fatalf("rejected (%d rows): %s\n%s\n%s", n, m.Subject, m.Body, m.HTML)
	}

	aborted := r.approve(r.ap1, r.create(inventorySpec("aborted")))
	r.pass()
	if _, err := r.s.AbortRollout(r.ctx, r.admin, aborted.ID, "wrong tokens"); err != nil {
		t.Fatal(err)
	}
	if m, n := ended(aborted.ID); n != 2 || m.Subject != "[tokenfleet] Rollout aborted aborted" || !strings.Contains(string(m.Body), "was aborted by admin") ||
		!strings.Contains(string(m.Body), "Reason: wrong tokens") || !strings.Contains(string(m.Body), "Targets: 2") {
		t.Fatalf("aborted (%d rows): %s\n%s", n, m.Subject, m.Body)
	}
	own := r.approve(r.ap1, r.create(inventorySpec("own")))
	if _, err := r.s.AbortRollout(r.ctx, r.owner, own.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, n := ended(own.ID); n != 0 {
		t.Fatalf("the creator who aborted their own rollout was told: %d rows", n)
	}

	late := r.create(inventorySpec("late"))
	r.clock.add(49 * time.Hour)
	r.pass()
	if st := r.get(late.ID).State; st != "expired" {
		t.Fatalf("rollout %s", st)
	}
	if m, n := ended(late.ID); n != 2 || m.Subject != "[tokenfleet] Rollout late expired" || !strings.Contains(string(m.Body), "not approved in time") ||
		!strings.Contains(string(m.Body), "Reason: not approved within 48h") {
		t.Fatalf("expired (%d rows): %s\n%s", n, m.Subject, m.Body)
	}
}

func TestNotificationsOfExpiringCertificatesAndCRL(t *testing.T) {
	t.Parallel()
	r := newNotifyRig(t)
	r.enrol("ws-1")
	now := r.clock.now()
	seed := func(serial, token string, notAfter time.Time) {
		t.Helper()
		if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
			_, err := tx.AddCertificate(r.ctx, store.Certificate{Serial: serial, HolderID: r.holder.ID, Profile: "logon",
				TokenSerial: token, AgentID: "ws-1", Subject: "CN=Alice", Issuer: "CN=test CA", NotBefore: notAfter.Add(-90 * 24 * time.Hour),
				NotAfter: notAfter, DER: []byte{0x30, 0}})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	seed("a1", "tok-1", now.Add(20*24*time.Hour)) // within 30 days: warned
	seed("a2", "tok-2", now.Add(40*24*time.Hour)) // not yet
	seed("a3", "tok-3", now.Add(-24*time.Hour))   // expired already
	// The daily sweep, twice: one notice per certificate and warning.
	for range 2 {
		if n, err := r.s.NotifyExpiringCertificates(r.ctx); err != nil || n != 1 {
			t.Fatalf("sweep: %d, %v", n, err)
		}
	}
	got := r.wantNotices(notify.EventCertificateExpiring, 1, "alice@acme.test", "hank@acme.test")
	if m := got["hank@acme.test"]; !strings.Contains(m.Subject, "Certificate of Alice expires on") || !strings.Contains(string(m.Body), "Serial       : a1") ||
		!strings.Contains(string(m.Body), "--agent ws-1 --token tok-1") {
		t.Fatalf("expiring: %s\n%s", m.Subject, m.Body)
	}
	// Eleven days on, a2 enters its window, but b2 renewed it on its token meanwhile: no
	// warning; a1 is not warned again.
	r.clock.add(11 * 24 * time.Hour)
	seed("b2", "tok-2", r.clock.now().Add(80*24*time.Hour))
	if n, err := r.s.NotifyExpiringCertificates(r.ctx); err != nil || n != 2 {
		t.Fatalf("second sweep: %d, %v", n, err)
	}
	ns, _, _ := r.st.ListNotifications(r.ctx, store.NotificationFilter{Event: string(notify.EventCertificateExpiring), Channel: store.ChannelWebhook}, store.Page{})
	if len(ns) != 1 {
		t.Fatalf("a2 was warned although b2 replaces it: %d webhook calls", len(ns))
	}

	crl := notify.CRL{Issuer: "CN=tokenfleet CA", NextUpdate: now.Add(24 * time.Hour), Margin: "72h0m0s"}
	for range 2 {
		if err := r.s.NotifyCRL(r.ctx, crl, "next:"+crl.NextUpdate.Format(time.RFC3339)); err != nil {
			t.Fatal(err)
		}
	}
	got = r.wantNotices(notify.EventCRLExpiring, 1, "admin@acme.test")
	if m := got["admin@acme.test"]; !strings.Contains(m.Subject, "liste de révocation") {
		t.Fatalf("CRL: %s", m.Subject)
	}
}

// orgCAProfile needs one approver of the holder's organisation, then a CA operator's
// decision before the certificate is signed.
const orgCAProfile = `name: logon-ca
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 90d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], scope: organization, expires_after: 48h, ca_operator_required: true}
`

// toCAGate drives an approved job as its agent and the RA would, up to the CA-operator
// gate: dispatched, running, its CSR accepted on token tok.
func (r *rig) toCAGate(jobID, tok string) store.Job {
	r.t.Helper()
	var out store.Job
	if err := r.s.UpdateJobs(r.ctx, func(jt *service.JobTx) error {
		cur, err := jt.GetJob(r.ctx, jobID)
		if err != nil {
			return err
		}
		agent := store.JobChange{Actor: service.AgentActor(cur.AgentID)}
		for _, to := range []jobs.State{jobs.StateDispatched, jobs.StateRunning} {
			if cur, err = jt.Transition(r.ctx, cur, to, agent); err != nil {
				return err
			}
		}
		out, err = jt.Transition(r.ctx, cur, jobs.StateAwaitingCertificate, store.JobChange{Actor: "system:ra", Reason: "CSR accepted", TokenSerial: tok})
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
	return out
}

// TestNotificationsOfTheCAGate: a job that reaches the CA-operator gate tells the CA
// operators who may decide on it, and nobody else; the administrators only when no CA
// operator may. The e-mails, sent to a real SMTP server and read back, are text and HTML
// with the console link, and nothing delivered holds the PIN the job set.
func TestNotificationsOfTheCAGate(t *testing.T) {
	t.Parallel()
	r := newNotifyRig(t)
	r.enrol("ws-1")
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(orgCAProfile)); err != nil {
		t.Fatal(err)
	}
	for _, org := range []string{"Acme", "Globex"} {
		if _, err := r.s.CreateRole(r.ctx, r.admin, service.RoleRequest{Name: "ca-" + strings.ToLower(org), Organization: org,
			Permissions: []jobs.Permission{jobs.PermCAOperator, jobs.PermRead}}); err != nil {
			t.Fatal(err)
		}
	}
	// CA operators: carla of Acme; cyril of Globex (the built-in role decides for every
	// organisation); clem through a role limited to Acme; gus through one limited to
	// Globex (out of scope); paul, also an approver, who passes the request gate (one
	// person never passes both); dora, disabled.
	r.person("carla", "Acme", "fr", jobs.RoleCAOperator)
	r.person("cyril", "Globex", "en", jobs.RoleCAOperator)
	r.person("clem", "Acme", "fr", "ca-acme")
	r.person("gus", "Acme", "en", "ca-globex")
	paul := r.person("paul", "Acme", "en", jobs.RoleApprover, jobs.RoleCAOperator)
	r.person("dora", "Acme", "fr", jobs.RoleCAOperator)
	if _, err := r.s.SetUserDisabled(r.ctx, r.admin, "dora", true, "left"); err != nil {
		t.Fatal(err)
	}

	j, err := r.s.CreateJob(r.ctx, r.helpdesk, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Profile: "logon-ca", Agent: "ws-1"})
	if err != nil {
		t.Fatal(err)
	}
	r.wantNotices(notify.EventApprovalRequested, 1, "arne@acme.test", "ines@acme.test", "paul@acme.test")
	if _, err := r.s.Approve(r.ctx, paul, j.ID, service.DecisionRequest{Reason: "ok"}); err != nil {
		t.Fatal(err)
	}
	r.wantNotices(notify.EventCAApprovalRequested, 0)
	entered := r.clock.now()
	r.toCAGate(j.ID, "tok-1")
	got := r.wantNotices(notify.EventCAApprovalRequested, 1, "carla@acme.test", "cyril@acme.test", "clem@acme.test")
	link := consoleURL + "/ui/jobs/" + j.ID
	fr := got["carla@acme.test"]
	if fr.Subject != "[tokenfleet] Certificat à approuver (opérateur d'AC) : issue pour Alice" || fr.Language != "fr" ||
		!strings.Contains(string(fr.Body), "Sujet        : CN=Alice") || !strings.Contains(string(fr.Body), "tokenfleetctl approve "+j.ID) ||
		!strings.Contains(string(fr.Body), "À décider avant : "+entered.Add(48*time.Hour).UTC().Format("2006-01-02 15:04 UTC")) ||
		!strings.Contains(string(fr.Body), "Dans la console : "+link) || !strings.Contains(fr.HTML, `href="`+link+`"`) {
		t.Fatalf("CA operator's notice: %s\n%s\n%s", fr.Subject, fr.Body, fr.HTML)
	}
	// The webhook's call carries the link too.
	hooks, _, err := r.st.ListNotifications(r.ctx, store.NotificationFilter{Event: string(notify.EventCAApprovalRequested), Channel: store.ChannelWebhook}, store.Page{})
	if err != nil || len(hooks) != 1 {
		t.Fatalf("webhook rows: %d, %v", len(hooks), err)
	}
	var call struct {
		Link string
		Data notify.Data
	}
	if err := json.Unmarshal(hooks[0].Body, &call); err != nil || call.Link != link || call.Data.Job == nil || call.Data.Job.Subject != "CN=Alice" ||
		call.Data.Job.DecideBy.IsZero() || hooks[0].HTML != "" {
		t.Fatalf("webhook body %s: %v", hooks[0].Body, err)
	}
	// Everyone the notice went to may decide: the awaiting-me list agrees.
	carla, err := r.st.GetUserByUsername(r.ctx, "carla")
	if err != nil {
		t.Fatal(err)
	}
	mine, _, err := r.s.ListJobs(r.ctx, service.ActorFor(carla), service.JobQuery{AwaitingMe: true}, service.Page{})
	if err != nil || len(mine) != 1 || mine[0].ID != j.ID {
		t.Fatalf("carla's queue: %v, %v", mine, err)
	}

	// The CA operator approves; the job ends (its certificate installed) and its PIN is
	// revealed to the requester.
	if _, err := r.s.Approve(r.ctx, service.ActorFor(carla), j.ID, service.DecisionRequest{Reason: "vérifié"}); err != nil {
		t.Fatal(err)
	}
	if err := r.st.InTx(r.ctx, func(tx store.Tx) error {
		_, err := tx.AddTokenPIN(r.ctx, store.TokenPIN{TokenSerial: "tok-1", Purpose: store.PINPurposeUser, JobID: j.ID, Attempt: 1,
			Sealed: []byte(`{"sealed":"opaque"}`), Recorded: r.clock.now()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The issuer signed (a no-op here): the certificate is installed, and the job ends.
	if err := r.s.UpdateJobs(r.ctx, func(jt *service.JobTx) error {
		cur, err := jt.GetJob(r.ctx, j.ID)
		if err != nil {
			return err
		}
		for _, to := range []jobs.State{jobs.StateInstalling, jobs.StateSucceeded} {
			if cur, err = jt.Transition(r.ctx, cur, to, store.JobChange{Actor: service.AgentActor(cur.AgentID)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pin, err := r.s.RevealUserPIN(r.ctx, r.helpdesk, j.ID)
	if err != nil || string(pin) != testPIN {
		t.Fatalf("PIN %q, %v", pin, err)
	}
	r.wantNotices(notify.EventJobSucceeded, 1, "hank@acme.test")

	// Nobody else may decide: the administrators are told. A job of another holder,
	// requested by carla and approved by arne, on a coordinator whose other CA operators
	// are gone.
	for _, name := range []string{"cyril", "clem", "paul"} {
		if _, err := r.s.SetUserDisabled(r.ctx, r.admin, name, true, "gone"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.s.UpdateUser(r.ctx, r.admin, "carla", service.UserUpdate{Roles: &[]jobs.Role{jobs.RoleCAOperator, jobs.RoleHelpdesk}}); err != nil {
		t.Fatal(err)
	}
	carla, _ = r.st.GetUserByUsername(r.ctx, "carla")
	j2, err := r.s.CreateJob(r.ctx, service.ActorFor(carla), service.JobRequest{Kind: jobs.KindIssue, Holder: "hank", Profile: "logon-ca", Agent: "ws-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.Approve(r.ctx, r.ap1, j2.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	r.toCAGate(j2.ID, "tok-2")
	ns, _, err := r.st.ListNotifications(r.ctx, store.NotificationFilter{Event: string(notify.EventCAApprovalRequested), Channel: store.ChannelEmail}, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	var second []string
	for _, n := range ns {
		if strings.Contains(string(n.Body), j2.ID) {
			second = append(second, n.Recipient)
		}
	}
	if !slices.Equal(second, []string{"admin@acme.test"}) {
		t.Fatalf("with no CA operator who may decide, the notice went to %v, want the administrator", second)
	}

	// Everything goes out through a real SMTP server and is read back.
	srv := notifytest.StartSMTP(t, notifytest.SMTPOptions{NoTLS: true})
	mailer, err := notify.NewSMTP(notify.SMTPConfig{Host: srv.Host, Port: srv.Port, Security: notify.SecurityNone, From: "tokenfleet <pki@acme.test>"})
	if err != nil {
		t.Fatal(err)
	}
	tm, err := notify.LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	sender, err := notify.NewSender(notify.SenderOptions{Store: r.st, Templates: tm, Mailer: mailer})
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := sender.SendDue(r.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	msgs := srv.Messages()
	emails, _, err := r.st.ListNotifications(r.ctx, store.NotificationFilter{Channel: store.ChannelEmail, State: store.NotificationSent}, store.Page{Limit: store.MaxPageLimit})
	if err != nil || len(msgs) == 0 || len(msgs) != len(emails) {
		t.Fatalf("%d e-mails received, %d rows sent (%v)", len(msgs), len(emails), err)
	}
	var sources []string
	for _, m := range msgs {
		if m.Header.Get("X-Tokenfleet-Event") == string(notify.EventCAApprovalRequested) && m.To[0] == "carla@acme.test" {
			if err := notifytest.CheckMail(m, "fr", link); err != nil {
				t.Errorf("carla's e-mail: %v", err)
			}
			if !strings.Contains(m.Body, "attend la décision d'un opérateur") || !strings.Contains(m.HTML, "opérateur de l'autorité de certification") ||
				m.Subject != fr.Subject {
				t.Errorf("carla's e-mail: %s\n%s\n%s", m.Subject, m.Body, m.HTML)
			}
		}
		sources = append(sources, string(m.Raw), m.Subject, m.Body, m.HTML)
	}
	all, _, err := r.st.ListNotifications(r.ctx, store.NotificationFilter{}, store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range all {
		sources = append(sources, n.Subject, string(n.Body), n.HTML)
	}
	// The PIN in clear, and in the encodings a message could carry it in.
	for _, needle := range []string{testPIN, base64.StdEncoding.EncodeToString([]byte(testPIN)), hex.EncodeToString([]byte(testPIN))} {
		for _, src := range sources {
			if strings.Contains(src, needle) {
				t.Fatalf("the PIN (%s) is in a notification:\n%s", needle, src)
			}
		}
	}
	t.Logf("%d e-mails and %d outbox rows searched: no PIN", len(msgs), len(all))
}

// TestNotificationOfAnExpiredRequest: a request nobody approved in time expires, and its
// requester is told, rather than left waiting.
func TestNotificationOfAnExpiredRequest(t *testing.T) {
	t.Parallel()
	r := newNotifyRig(t)
	r.enrol("ws-1")
	j, err := r.s.CreateJob(r.ctx, r.helpdesk, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Profile: "logon", Agent: "ws-1"})
	if err != nil {
		t.Fatal(err)
	}
	r.clock.add(49 * time.Hour)
	if n, err := r.s.ExpireDue(r.ctx); err != nil || n != 1 {
		t.Fatalf("expired %d, %v", n, err)
	}
	got := r.wantNotices(notify.EventJobFailed, 1, "hank@acme.test")
	if m := got["hank@acme.test"]; m.Subject != "[tokenfleet] Expired: issue for Alice" ||
		!strings.Contains(string(m.Body), "expired before it was carried out") || !strings.Contains(string(m.Body), "not approved within 48h") ||
		!strings.Contains(m.HTML, "<strong>expired</strong>") || !strings.Contains(string(m.Body), j.ID) {
		t.Fatalf("expiry notice: %s\n%s\n%s", m.Subject, m.Body, m.HTML)
	}
}
