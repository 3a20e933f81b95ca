//go:build cgo

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestIssue: a blank token at a workstation; the help desk queues a token for Alice, the
// requester's own approval is refused, an approver approves, and the real agent initialises
// the token, generates the key on it, sends the CSR, writes the certificate and verifies
// it. Then the job's history and audit trail, the token as pkcs11-tool and openssl see it,
// and the one-time PIN.
func TestIssue(t *testing.T) {
	s := newSystem(t, systemOptions{perAgentUsers: true})
	// Its broker user, agent-<id>, belongs to the whole broker: unique, so two runs never share it.
	id := testenv.UniqueUser("ws-issue-")
	s.enrol(id)
	s.startAgent(id, agentOptions{})

	jobID := strings.TrimSpace(s.ctl(s.operator, "issue", "--holder", holder, "--agent", id, "--profile", profileName))
	if d := s.job(jobID); d.State != jobs.StatePendingApproval {
		t.Fatalf("a new job is %s, want pending_approval", d.State)
	}
	if r := s.ctlRun(s.operator, "approve", jobID); r.code == ctl.ExitOK {
		t.Fatal("the requester approved her own request")
	}
	s.ctl(s.approver, "approve", jobID, "--reason", "checked Alice's request")
	watch := s.ctl(s.operator, "job", "watch", jobID, "--interval", "100ms", "--timeout", "2m")
	d := s.waitJob(jobID, jobs.StateSucceeded)
	// job watch followed the job to its end, saying each step as the agent put it.
	for _, st := range d.Steps {
		if !strings.Contains(watch, st.Detail) {
			t.Errorf("tokenfleetctl job watch does not show step %s (%q):\n%s", st.Step, st.Detail, watch)
		}
	}
	if !strings.HasSuffix(strings.TrimSpace(watch), "succeeded") {
		t.Errorf("tokenfleetctl job watch does not end with succeeded:\n%s", watch)
	}
	wantIssueHistory(t, d)
	if d.TokenSerial == "" {
		t.Fatal("the succeeded job names no token serial")
	}
	wantJobAudit(t, s, jobID, []string{"job.created", "access.denied", "job.approved", "job.transition:approved", "job.transition:dispatched",
		"job.transition:running", "job.transition:awaiting_certificate", "certificate.issued", "job.transition:installing",
		"job.transition:succeeded"})

	// Every event of the agent was published as its own broker user, which RabbitMQ
	// checked against its connection and the coordinator against its enrolment.
	user, err := protocol.AgentUser(id)
	if err != nil {
		t.Fatal(err)
	}
	events := 0
	for _, m := range s.tap.messages(t) {
		if m.exchange == protocol.EventsExchange && strings.HasSuffix(m.routingKey, "."+id) {
			events++
			if m.userID != user {
				t.Errorf("%s event published as broker user %q, want %q", m.typ, m.userID, user)
			}
		}
	}
	if events == 0 {
		t.Error("the tap saw no event of the agent")
	}

	// The token: one initialised token, labelled for the holder, holding one key and its
	// certificate, which the coordinator's CA issued.
	toks := initializedTokens(t)
	if len(toks) != 1 || toks[0].serial != d.TokenSerial || toks[0].label != "Alice Holder" {
		t.Fatalf("initialised tokens %+v, want one, serial %s, labelled Alice Holder", toks, d.TokenSerial)
	}
	cert := s.certificateOf(jobID)
	// Only the requester (or an administrator) may see the PIN; the approver's attempt
	// is refused and does not use up the one reveal.
	if r := s.ctlRun(s.approver, "job", "pin", jobID); r.code == ctl.ExitOK || strings.TrimSpace(r.stdout) != "" {
		t.Errorf("the approver was shown the holder's PIN: %q", r.stdout)
	}
	pin := s.revealPIN(jobID)
	certPEM := wantOnlyKeyAndCertificate(t, d.TokenSerial, pin, protocol.DeriveKeyID(jobID), certificateDER(t, cert.PEM))
	wantVerifiedByCA(t, s.ctl(s.operator, "ca", "cert"), certPEM)
	subject := tool(t, "openssl", "x509", "-in", certPEM, "-noout", "-subject", "-nameopt", "RFC2253", "-ext", "subjectAltName")
	if !strings.Contains(subject, "subject=CN=Alice Holder,O=acme") || !strings.Contains(subject, "alice@acme.example") {
		t.Errorf("certificate subject and SANs: %s", subject)
	}
	// The PIN was shown once.
	if r := s.ctlRun(s.operator, "job", "pin", jobID); r.code == ctl.ExitOK || strings.TrimSpace(r.stdout) != "" {
		t.Errorf("a second tokenfleetctl job pin succeeded: %q", r.stdout)
	}
	wantLogin(t, d.TokenSerial, pin, true)
	so := s.keptPIN(d.TokenSerial, "so_pin")
	wantSOLogin(t, d.TokenSerial, so)
	// The PINs follow the profile's policy: the user PIN min_length 12, the SO PIN
	// so_pin_length 16, neither digits only.
	if len(pin) != 12 || len(so) != 16 {
		t.Errorf("user PIN of %d characters, SO PIN of %d; the profile asks for 12 and 16", len(pin), len(so))
	}

	s.finalChecks() // tokenfleetctl audit verify among them
}

// certificateOf is the one certificate the coordinator issued for the job.
func (s *system) certificateOf(jobID string) client.Certificate {
	s.t.Helper()
	var out []client.Certificate
	for c, err := range s.api.AllCertificates(context.Background(), client.CertificateFilter{}, 100) {
		if err != nil {
			s.t.Fatal(err)
		}
		if c.Job == jobID {
			out = append(out, c)
		}
	}
	if len(out) != 1 {
		s.t.Fatalf("the coordinator issued %d certificates for job %s, want 1", len(out), jobID)
	}
	return out[0]
}

// wantJobAudit checks the job's audit entries, in order: actions, with the target state
// of transitions ("job.transition:running").
func wantJobAudit(t *testing.T, s *system, jobID string, want []string) {
	t.Helper()
	var got []string
	for e, err := range s.api.AuditEntries(context.Background(), 0, 500) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Job != jobID {
			continue
		}
		a := e.Action
		if a == "job.transition" {
			var det map[string]any
			if err := json.Unmarshal(e.Details, &det); err != nil {
				t.Fatalf("audit entry %d: details %s: %v", e.Seq, e.Details, err)
			}
			a += fmt.Sprintf(":%v", det["to"])
		}
		if e.Actor == "" {
			t.Errorf("audit entry %d (%s) names no actor", e.Seq, a)
		}
		got = append(got, a)
	}
	if !slices.Equal(got, want) {
		t.Errorf("audit entries of job %s:\n got %v\nwant %v", jobID, got, want)
	}
}
