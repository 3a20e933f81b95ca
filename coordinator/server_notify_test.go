package coordinator_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/notify"
	"github.com/tokenfleet/tokenfleet/coordinator/notify/notifytest"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

const notifyProfile = `name: logon
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], scope: organization, expires_after: 48h}
`

// TestServerNotifies runs a coordinator with e-mail (STARTTLS and AUTH to a real SMTP
// server) and a webhook: a request reaches the approver (text and HTML, with the console
// link), the decision the requester, each in their language; the CRL check (with a margin longer than the CRL's life) tells the
// administrators' webhook.
func TestServerNotifies(t *testing.T) {
	smtpSrv := notifytest.StartSMTP(t, notifytest.SMTPOptions{User: "tokenfleet", Password: "mail-pass"})
	secret := []byte("0123456789abcdef0123456789abcdef")
	hook := notifytest.StartWebhook(t, secret, notifytest.WebhookOptions{})
	dir := t.TempDir()
	pw, sec := filepath.Join(dir, "smtp.password"), filepath.Join(dir, "hook.secret")
	if err := os.WriteFile(pw, []byte("mail-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sec, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	n := coordinator.DefaultConfig().Notifications
	n.SMTP = coordinator.SMTPConfig{Host: smtpSrv.Host, Port: smtpSrv.Port, Security: notify.SecurityStartTLS, Username: "tokenfleet",
		PasswordFile: pw, From: "tokenfleet <pki@acme.test>", CAFile: smtpSrv.CAFile}
	n.Webhooks = []coordinator.WebhookConfig{{Name: "siem", URL: hook.URL, SecretFile: sec}}
	n.Interval = coordinator.Duration(100 * time.Millisecond)
	n.ConsoleURL = "https://pki.acme.test"
	n.SweepInterval = coordinator.Duration(time.Hour)
	n.CRLMargin = coordinator.Duration(30 * 24 * time.Hour) // the CRL lives 7 days: always within
	c := coordinatortest.Start(t, coordinatortest.Options{Notifications: &n})
	ctx := t.Context()
	svc := c.Server.Service()
	au, err := c.Store.GetUserByUsername(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	admin := service.ActorFor(au)
	if _, err := svc.CreateOrganization(ctx, admin, "Acme"); err != nil {
		t.Fatal(err)
	}
	mk := func(name, lang string, roles ...jobs.Role) service.Actor {
		u, err := svc.CreateUser(ctx, admin, service.UserRequest{Username: name, DisplayName: strings.ToUpper(name[:1]) + name[1:],
			Email: name + "@acme.test", Organization: "Acme", Roles: roles, Language: lang})
		if err != nil {
			t.Fatal(err)
		}
		return service.ActorFor(u.User)
	}
	hd := mk("hank", "en", jobs.RoleHelpdesk)
	ap := mk("arne", "", jobs.RoleApprover)
	mk("alice", "fr")
	if _, err := svc.ApplyProfiles(ctx, admin, []byte(notifyProfile)); err != nil {
		t.Fatal(err)
	}
	c.EnrolAgent(t, "ws-1", "poste-1.acme.test")
	j, err := svc.CreateJob(ctx, hd, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Profile: "logon", Agent: "ws-1"})
	if err != nil {
		t.Fatal(err)
	}
	to := func(addr string) []notifytest.Message {
		var out []notifytest.Message
		for _, m := range smtpSrv.Messages() {
			if m.To[0] == addr {
				out = append(out, m)
			}
		}
		return out
	}
	notifytest.Eventually(t, 30*time.Second, "the approver's e-mail", func() bool { return len(to("arne@acme.test")) == 1 })
	m := to("arne@acme.test")[0]
	if m.Subject != "[tokenfleet] Demande à approuver : issue pour Alice" || !m.TLS || m.AuthUser != "tokenfleet" ||
		!strings.Contains(m.Body, "tokenfleetctl approve "+j.ID) || !strings.Contains(m.Body, "ws-1 (poste-1.acme.test)") {
		t.Fatalf("approver's e-mail (TLS %v, auth %q): %s\n%s", m.TLS, m.AuthUser, m.Subject, m.Body)
	}
	// Text and HTML, in French, linking to the job's page in the console.
	if err := notifytest.CheckMail(m, notify.French, "https://pki.acme.test/ui/jobs/"+j.ID); err != nil {
		t.Errorf("approver's e-mail: %v", err)
	}
	if _, err := svc.Approve(ctx, ap, j.ID, service.DecisionRequest{Reason: "vu"}); err != nil {
		t.Fatal(err)
	}
	notifytest.Eventually(t, 30*time.Second, "the requester's e-mail", func() bool { return len(to("hank@acme.test")) == 1 })
	if m := to("hank@acme.test")[0]; m.Subject != "[tokenfleet] Request approved: issue for Alice" || !strings.Contains(m.Body, "Reason: vu") {
		t.Fatalf("requester's e-mail: %s\n%s", m.Subject, m.Body)
	}
	// The agent reports no token: the holder is asked to insert one, in French.
	notifytest.Eventually(t, 30*time.Second, "the holder's e-mail", func() bool { return len(to("alice@acme.test")) == 1 })
	if m := to("alice@acme.test")[0]; m.Subject != "[tokenfleet] Insérez votre jeton sur le poste ws-1 (poste-1.acme.test)" {
		t.Fatalf("holder's e-mail: %s\n%s", m.Subject, m.Body)
	}
	// The webhook got the CRL warning and the job's notices, each signed.
	events := func() map[string]int {
		out := map[string]int{}
		for _, d := range hook.Deliveries() {
			if d.Verified != nil {
				t.Fatalf("signature: %v", d.Verified)
			}
			out[d.Event]++
		}
		return out
	}
	notifytest.Eventually(t, 30*time.Second, "the webhook's four notices", func() bool { return len(events()) == 4 })
	if ev := events(); ev["crl.expiring"] != 1 || ev["job.approval_requested"] != 1 || ev["job.decided"] != 1 || ev["token.insert"] != 1 {
		t.Fatalf("webhook events %v", ev)
	}
	for _, d := range hook.Deliveries() {
		if d.Event != "crl.expiring" {
			continue
		}
		var body struct{ Data notify.Data }
		if err := json.Unmarshal(d.Body, &body); err != nil || body.Data.CRL == nil || body.Data.CRL.NextUpdate.IsZero() ||
			!strings.Contains(body.Data.CRL.Issuer, "tokenfleet CA") {
			t.Fatalf("CRL notice %s: %v", d.Body, err)
		}
	}
	// Everything went: nothing pending, nothing failed.
	notifytest.Eventually(t, 30*time.Second, "all sent", func() bool {
		ns, _, err := c.Store.ListNotifications(ctx, store.NotificationFilter{State: store.NotificationPending}, store.Page{})
		return err == nil && len(ns) == 0
	})
}
