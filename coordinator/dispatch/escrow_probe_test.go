package dispatch_test

import (
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// A compromised workstation tries to have a certificate of its choosing recorded: in the
// result of a server_keygen or recover_key job (which read none), or as the result of
// another agent's register_certificate job. Each is dead-lettered with its code and
// reason, audited, and nothing stored changes.
func TestEscrowCertificateFromTheWrongPlaceRefused(t *testing.T) {
	t.Parallel()
	m := newMatrix(t)
	running := fixture{name: "running", state: jobs.StateRunning, dispatched: true, steps: []jobs.Step{jobs.StepWaitingForToken, jobs.StepTokenFound}}
	refused := func(name string, j func() (protocol.JobRef, string), send func(ref protocol.JobRef, jobID string) *protocol.Envelope, code protocol.ErrorCode, reason string) {
		t.Helper()
		ref, id := j()
		waitFor(t, name+": outbox sent", func() bool {
			var n int
			if err := m.db.QueryRowContext(m.w.ctx, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 0
		})
		before := m.snapshot(t)
		env := send(ref, id)
		d := m.deadLetter(t, env.ID)
		if got, _ := d.Headers[amqp.HeaderErrorCode].(string); got != string(code) {
			t.Errorf("%s: dead-lettered with %v, want %s", name, got, code)
		}
		if why, _ := d.Headers[amqp.HeaderError].(string); !strings.Contains(why, reason) {
			t.Errorf("%s: reason %q, want it to say %q", name, why, reason)
		}
		if e, ok := m.rejection(t, env.ID); !ok || !strings.Contains(string(e.Details), string(code)) {
			t.Errorf("%s: audit entry %+v (found %v)", name, e, ok)
		}
		if after := m.snapshot(t); after != before {
			t.Errorf("%s: refused, but the database changed:\n%s", name, diffLines(before, after))
		}
	}
	withCert := func(ref protocol.JobRef, _ string) *protocol.Envelope {
		return m.a.Send(ref, protocol.Result{Outcome: protocol.OutcomeSucceeded, Outputs: &protocol.Outputs{Certificate: m.issuer.Raw}})
	}
	for _, kind := range []jobs.Kind{jobs.KindServerKeygen, jobs.KindRecoverKey} {
		refused(string(kind)+" result with a certificate", func() (protocol.JobRef, string) {
			j, _ := m.fixture(t, kind, running, agentEvent{kind: jobs.EventSucceeded})
			return protocol.JobRef{JobID: j.ID, Attempt: uint32(j.Attempt)}, j.ID
		}, withCert, protocol.CodeEventNotAllowed, "only register_certificate")
	}

	// Another enrolled agent answers ws-matrix's register_certificate job.
	other := m.w.agent("ws-other", m.w.agentUser("ws-other"))
	other.Hello()
	// Its hello handled first, so that the snapshot before the forged result does not
	// catch it on its way.
	waitFor(t, "ws-other's hello handled", func() bool {
		a, err := m.w.c.Store.GetAgent(m.w.ctx, "ws-other")
		return err == nil && len(a.PublicKey) > 0
	})
	refused("register_certificate result from another agent", func() (protocol.JobRef, string) {
		j, _ := m.fixture(t, jobs.KindRegisterCertificate, running, agentEvent{kind: jobs.EventSucceeded})
		return protocol.JobRef{JobID: j.ID, Attempt: uint32(j.Attempt)}, j.ID
	}, func(ref protocol.JobRef, id string) *protocol.Envelope {
		j, err := m.w.c.Store.GetJob(m.w.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return other.Send(ref, protocol.Result{Outcome: protocol.OutcomeSucceeded, Outputs: &protocol.Outputs{Certificate: m.encryptionCert(t, j)}})
	}, protocol.CodeForgedSender, "targets agent ws-matrix")
}
