package dispatch_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// TestCSRRefusals: each bad CSR fails its job with the RA's code and leaves a
// csr.rejected audit entry.
func TestCSRRefusals(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "per_agent")
	a := w.agent("ws-csr", w.agentUser("ws-csr"))
	a.Hello(dispatchtest.Token("T1", false))

	// start dispatches a job and plays it to key_generated with key (the key reported).
	start := func(profile string, key protocol.KeyType) (protocol.JobRef, protocol.JobDispatch, []byte, []byte) {
		t.Helper()
		j := w.job(jobs.KindIssue, "ws-csr", profile, "")
		env := a.Next(protocol.TypeDispatch, j.ID)
		d, err := protocol.DecodeBody[protocol.JobDispatch](env)
		if err != nil {
			t.Fatal(err)
		}
		ref := env.Job()
		k := dispatchtest.NewKey(t, key)
		pub := dispatchtest.PublicKeyDER(t, k)
		a.Progress(ref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "T1"})
		a.Progress(ref, protocol.Progress{Step: protocol.StepKeyGenerated, KeyID: d.Key.ID, PublicKey: pub})
		return ref, d, dispatchtest.CSR(t, k), pub
	}
	// refused waits for the job to fail with code and a message holding want.
	refused := func(ref protocol.JobRef, code protocol.ErrorCode, want string) {
		t.Helper()
		det := w.waitState(ref.JobID, jobs.StateFailed)
		if det.ErrorCode != string(code) || !strings.Contains(det.ErrorMessage, want) {
			t.Errorf("job failed with %s: %s; want %s mentioning %q", det.ErrorCode, det.ErrorMessage, code, want)
		}
		es := w.auditOf(audit.ActionCSRRejected, ref.JobID)
		if len(es) != 1 || !strings.Contains(string(es[0].Details), string(code)) {
			t.Errorf("csr.rejected entries %+v", es)
		}
		if n := len(w.certificates(ref.JobID)); n != 0 {
			t.Errorf("%d certificates issued", n)
		}
	}

	t.Run("tampered", func(t *testing.T) {
		ref, d, csr, pub := start("blank-issue", protocol.KeyP256)
		csr[len(csr)-1] ^= 0x55 // inside the signature
		a.Send(ref, protocol.CSRSubmission{CSR: csr, KeyID: d.Key.ID, PublicKey: pub, TokenSerial: "T1"})
		refused(ref, protocol.CodeCSRRejected, "signature")
	})
	t.Run("wrong public key", func(t *testing.T) {
		ref, d, _, _ := start("blank-issue", protocol.KeyP256)
		other := dispatchtest.NewKey(t, protocol.KeyP256)
		a.Send(ref, protocol.CSRSubmission{CSR: dispatchtest.CSR(t, other), KeyID: d.Key.ID,
			PublicKey: dispatchtest.PublicKeyDER(t, other), TokenSerial: "T1"})
		refused(ref, protocol.CodeKeyMismatch, "not the key reported")
	})
	t.Run("RSA-1024", func(t *testing.T) {
		ref, d, csr, pub := start("rsa-blank", "rsa1024")
		a.Send(ref, protocol.CSRSubmission{CSR: csr, KeyID: d.Key.ID, PublicKey: pub, TokenSerial: "T1"})
		refused(ref, protocol.CodeWeakKey, "1024")
	})
	t.Run("second CSR for the attempt", func(t *testing.T) {
		j := w.job(jobs.KindIssue, "ws-csr", "blank-issue", "")
		is := a.IssueUntilCSR(a.Next(protocol.TypeDispatch, j.ID), "T1")
		a.Next(protocol.TypeCertificate, j.ID)
		w.waitState(j.ID, jobs.StateInstalling)
		// The event table takes one CSR per attempt, while the job runs: the second is
		// refused and changes nothing.
		again := dispatchtest.CSR(t, is.Key)
		env := a.Send(is.Ref, protocol.CSRSubmission{CSR: again, KeyID: is.Dispatch.Key.ID, PublicKey: dispatchtest.PublicKeyDER(t, is.Key), TokenSerial: "T1"})
		e := waitRejected(t, w, env.ID)
		if !strings.Contains(string(e.Details), string(protocol.CodeEventNotAllowed)) || !strings.Contains(e.Reason, "one CSR per attempt") {
			t.Errorf("second CSR refused with %q (%s)", e.Reason, e.Details)
		}
		if det := w.waitState(j.ID, jobs.StateInstalling); det.ErrorCode != "" {
			t.Errorf("job changed: %+v", det.Job)
		}
		if n := len(w.certificates(j.ID)); n != 1 {
			t.Errorf("%d certificates, want the first CSR's only", n)
		}
	})
	w.verifyAudit()
}

// TestForgedSenders: with per-agent broker users, an event published by another broker
// user than the agent's is refused and audited, and changes nothing.
func TestForgedSenders(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "per_agent")
	victim := w.agent("ws-victim", w.agentUser("ws-victim"))
	other := w.agent("ws-other", w.agentUser("ws-other"))
	victim.Hello()
	other.Hello()
	j := w.job(jobs.KindIssue, "ws-victim", "blank-issue", "")
	ref := victim.Next(protocol.TypeDispatch, j.ID).Job()
	victim.Progress(ref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "V1"})
	w.waitState(j.ID, jobs.StateRunning)

	fail := protocol.Result{Outcome: protocol.OutcomeFailed, Error: protocol.NewError(protocol.CodeTokenPINLocked, "forged")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Another agent's broker user reporting on the victim's job under its own name.
	own := other.Send(ref, fail)
	// The same user claiming the victim's name under its own routing key.
	claim := envelope(t, "ws-victim", ref, fail)
	if err := other.Conn.Publish(ctx, protocol.EventsExchange, "result.ws-other", claim); err != nil {
		t.Fatal(err)
	}
	// The coordinator's own broker user publishing as the victim.
	guest, err := amqp.Open(ctx, amqp.Config{URL: w.broker.URL, Name: "impostor"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = guest.Close() }()
	asGuest := envelope(t, "ws-victim", ref, fail)
	if err := guest.PublishEvent(ctx, asGuest); err != nil {
		t.Fatal(err)
	}
	// A client that leaves user_id unset, which RabbitMQ then does not check.
	noUser := envelope(t, "ws-victim", ref, fail)
	rawPublish(t, w.broker.URL, "result.ws-victim", noUser)

	for id, want := range map[string]string{
		own.ID:     "targets agent ws-victim, not ws-other",
		claim.ID:   "routing key",
		asGuest.ID: `broker user "guest"`,
		noUser.ID:  "user_id property missing",
	} {
		e := waitRejected(t, w, id)
		if !strings.Contains(e.Reason, want) || !strings.Contains(string(e.Details), string(protocol.CodeForgedSender)) {
			t.Errorf("message %s refused with %q (%s); want it to say %q", id, e.Reason, e.Details, want)
		}
	}
	det := w.waitState(j.ID, jobs.StateRunning)
	if det.ErrorCode != "" {
		t.Errorf("a forged result changed the job: %+v", det.Job)
	}
	// The victim's own result still counts.
	victim.Send(ref, protocol.Result{Outcome: protocol.OutcomeFailed, Error: protocol.NewError(protocol.CodeTokenNotPresent, "token removed")})
	det = w.waitState(j.ID, jobs.StateFailed)
	if det.ErrorCode != string(protocol.CodeTokenNotPresent) {
		t.Errorf("job failed with %s", det.ErrorCode)
	}
	w.verifyAudit()
}

// waitRejected waits for the message.rejected entry of a message.
func waitRejected(t *testing.T, w *world, messageID string) audit.Entry {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, e := range w.auditOf(audit.ActionMessageRejected, "") {
			var d struct {
				MessageID string `json:"message_id"`
			}
			if json.Unmarshal(e.Details, &d) == nil && d.MessageID == messageID {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s not refused within %s", messageID, waitTimeout)
		}
		<-tick.C
	}
}

func envelope(t *testing.T, agentID string, ref protocol.JobRef, body protocol.Body) *protocol.Envelope {
	t.Helper()
	env, err := protocol.NewEnvelope(agentID, ref, body)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// rawPublish publishes env with amqp091-go directly, without a user_id property.
func rawPublish(t *testing.T, url, key string, env *protocol.Envelope) {
	t.Helper()
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	body, err := protocol.Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 1))
	if err := ch.PublishWithContext(context.Background(), protocol.EventsExchange, key, true, false,
		amqp091.Publishing{MessageId: env.ID, Type: string(env.Type), ContentType: protocol.ContentType, Body: body}); err != nil {
		t.Fatal(err)
	}
	if c := <-confirms; !c.Ack {
		t.Fatal("raw publish not confirmed")
	}
}
