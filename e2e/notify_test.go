//go:build cgo

package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/notify"
	"github.com/tokenfleet/tokenfleet/coordinator/notify/notifytest"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// notifyReceivers are a real SMTP server on loopback (STARTTLS, AUTH PLAIN) and a webhook
// receiver that verifies signatures, with the coordinator's notifications section for them.
func notifyReceivers(t *testing.T) (*notifytest.SMTPServer, *notifytest.WebhookReceiver, *coordinator.NotificationsConfig) {
	t.Helper()
	smtpSrv := notifytest.StartSMTP(t, notifytest.SMTPOptions{User: "tokenfleet", Password: "smtp-password-e2e"})
	secret := []byte("e2e-webhook-secret-0123456789abcdef")
	hook := notifytest.StartWebhook(t, secret, notifytest.WebhookOptions{})
	dir := t.TempDir()
	pw, sec := filepath.Join(dir, "smtp.password"), filepath.Join(dir, "hook.secret")
	if err := os.WriteFile(pw, []byte("smtp-password-e2e\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sec, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	n := coordinator.DefaultConfig().Notifications
	n.SMTP = coordinator.SMTPConfig{Host: smtpSrv.Host, Port: smtpSrv.Port, Security: notify.SecurityStartTLS, Username: "tokenfleet",
		PasswordFile: pw, From: "tokenfleet <pki@acme.example>", CAFile: smtpSrv.CAFile}
	n.Webhooks = []coordinator.WebhookConfig{{Name: "siem", URL: hook.URL, SecretFile: sec, Language: notify.English}}
	n.Interval = coordinator.Duration(100 * time.Millisecond)
	return smtpSrv, hook, &n
}

// mailsTo returns the e-mails the server accepted for addr.
func mailsTo(srv *notifytest.SMTPServer, addr string) []notifytest.Message {
	var out []notifytest.Message
	for _, m := range srv.Messages() {
		if len(m.To) == 1 && m.To[0] == addr {
			out = append(out, m)
		}
	}
	return out
}

// TestNotificationsOfAnIssuance issues a token end to end (real agent, SoftHSM2) with
// e-mail and a webhook on: the approver is asked in French, the requester told of the
// decision and the end in English, the webhook gets each event signed; then everything
// delivered is searched for the PIN the issuance set, which the test knows.
func TestNotificationsOfAnIssuance(t *testing.T) {
	smtpSrv, hook, n := notifyReceivers(t)
	s := newSystem(t, systemOptions{notifications: n})
	s.ctl(s.admin, "user", "update", operator, "--email", "olga@acme.example", "--language", "en")
	s.ctl(s.admin, "user", "update", approver, "--email", "arne@acme.example") // the default: French
	id := testenv.UniqueUser("ws-notify-")
	s.enrol(id)
	s.startAgent(id, agentOptions{})

	jobID := strings.TrimSpace(s.ctl(s.operator, "issue", "--holder", holder, "--agent", id, "--profile", profileName))
	eventually(t, "the approver's e-mail", func() (bool, string) {
		return len(mailsTo(smtpSrv, "arne@acme.example")) == 1, fmt.Sprintf("%d messages", len(smtpSrv.Messages()))
	})
	ask := mailsTo(smtpSrv, "arne@acme.example")[0]
	if ask.Subject != "[tokenfleet] Demande à approuver : issue pour Alice Holder" || !strings.Contains(ask.Body, "tokenfleetctl approve "+jobID) ||
		!ask.TLS || ask.AuthUser != "tokenfleet" {
		t.Fatalf("approver's e-mail (TLS %v): %s\n%s", ask.TLS, ask.Subject, ask.Body)
	}
	if err := notifytest.CheckMail(ask, notify.French, ""); err != nil {
		t.Errorf("approver's e-mail: %v", err)
	}
	s.ctl(s.approver, "approve", jobID, "--reason", "vérifié")
	s.waitJob(jobID, jobs.StateSucceeded)
	pin := s.revealPIN(jobID)
	eventually(t, "the requester's e-mails", func() (bool, string) {
		return len(mailsTo(smtpSrv, "olga@acme.example")) == 2, fmt.Sprintf("%d messages", len(smtpSrv.Messages()))
	})
	subjects := []string{}
	for _, m := range mailsTo(smtpSrv, "olga@acme.example") {
		subjects = append(subjects, m.Subject)
	}
	want := []string{"[tokenfleet] Request approved: issue for Alice Holder", "[tokenfleet] Done: issue for Alice Holder"}
	if strings.Join(subjects, "|") != strings.Join(want, "|") {
		t.Fatalf("requester's e-mails: %q, want %q", subjects, want)
	}
	if body := mailsTo(smtpSrv, "olga@acme.example")[1].Body; !strings.Contains(body, "it is never sent by e-mail") {
		t.Errorf("done e-mail: %s", body)
	}
	if n := len(mailsTo(smtpSrv, "alice@acme.example")); n > 1 {
		t.Errorf("the holder got %d token notices for one attempt", n)
	}
	events := map[string]int{}
	eventually(t, "the webhook's notices", func() (bool, string) {
		clear(events)
		for _, d := range hook.Deliveries() {
			if d.Verified != nil {
				t.Fatalf("webhook signature: %v", d.Verified)
			}
			events[d.Event]++
		}
		return events["job.approval_requested"] == 1 && events["job.decided"] == 1 && events["job.succeeded"] == 1, fmt.Sprint(events)
	})

	// Nothing delivered holds the PIN, nor any PIN the coordinator keeps, in any encoding.
	s.collectKeptPINs()
	s.mu.Lock()
	pins := map[string]string{"the issuance's user PIN": pin}
	for k, v := range s.pins {
		pins[k] = v
	}
	s.mu.Unlock()
	sources := map[string][]byte{}
	for i, m := range smtpSrv.Messages() {
		sources[fmt.Sprintf("e-mail %d to %v (%s)", i, m.To, m.Subject)] = append(append(append([]byte(nil), m.Raw...), m.Body...), m.HTML...)
	}
	for i, d := range hook.Deliveries() {
		sources[fmt.Sprintf("webhook delivery %d (%s)", i, d.Event)] = append([]byte(d.Signature+" "+d.ID+" "), d.Body...)
	}
	if len(sources) < 6 {
		t.Fatalf("only %d deliveries to search", len(sources))
	}
	for _, f := range findSecrets(pins, sources) {
		t.Error(f)
	}
	t.Logf("PIN search: %d PINs in %d deliveries, nothing found", len(pins), len(sources))
	s.finalChecks()
}
