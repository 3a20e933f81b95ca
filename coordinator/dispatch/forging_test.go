package dispatch_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// These tests play a compromised workstation: an agent built on the protocol package,
// publishing with its own broker user and its normal routing keys, saying whatever
// helps it.

// TestForgedCSRBeforeApproval: the agent a job is addressed to reports a key and sends
// a CSR while the job still waits for its approval. Nothing is signed, the job does not
// move, and each message is refused as job_not_dispatched and audited. Once approved,
// the same agent's real run goes through.
func TestForgedCSRBeforeApproval(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "per_agent")
	evil := w.agent("ws-evil", w.agentUser("ws-evil"))
	evil.Hello(dispatchtest.Token("E1", false))
	for _, kind := range []jobs.Kind{jobs.KindCSR, jobs.KindIssue} {
		j := w.job(kind, "ws-evil", "gated", "")
		ref := protocol.JobRef{JobID: j.ID, Attempt: 1}
		key := dispatchtest.NewReportedKey(t, protocol.KeyP256)
		msgs := []*protocol.Envelope{
			evil.Progress(ref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "E1"}),
			evil.Progress(ref, protocol.Progress{Step: protocol.StepKeyGenerated, KeyID: protocol.DeriveKeyID(j.ID), PublicKey: key.PublicKey}),
			evil.Send(ref, protocol.CSRSubmission{CSR: key.CSR, KeyID: protocol.DeriveKeyID(j.ID), PublicKey: key.PublicKey, TokenSerial: "E1"}),
			evil.Send(ref, protocol.Result{Outcome: protocol.OutcomeSucceeded, Outputs: &protocol.Outputs{TokenSerial: "E1"}}),
		}
		for _, env := range msgs {
			e := waitRejected(t, w, env.ID)
			if !strings.Contains(string(e.Details), string(protocol.CodeJobNotDispatched)) || e.JobID != j.ID {
				t.Errorf("%s job: %s refused with %q (%s), want job_not_dispatched", kind, env.Type, e.Reason, e.Details)
			}
		}
		if cs := w.certificates(j.ID); len(cs) != 0 {
			t.Fatalf("%s job: a certificate was issued before the approval: %+v", kind, cs)
		}
		d, err := w.admin.GetJob(w.ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d.State != jobs.StatePendingApproval || len(d.Steps) != 0 || len(d.Timeline) != 1 {
			t.Fatalf("%s job changed by the forged events: %+v", kind, d)
		}
		att, err := w.c.Store.GetJobAttempt(w.ctx, j.ID, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(att.PublicKey) != 0 || len(att.CSR) != 0 || att.TokenSerial != "" {
			t.Fatalf("%s job: the attempt recorded the forged key or CSR: %+v", kind, att)
		}
	}
	w.verifyAudit()
}

// TestForgedTokensAndPINs: an agent cannot take over another workstation's token, nor
// replace the PINs kept for it, nor set PINs its own job had no right to set.
func TestForgedTokensAndPINs(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "per_agent")
	victim := w.agent("ws-victim", w.agentUser("ws-victim"))
	evil := w.agent("ws-evil", w.agentUser("ws-evil"))
	victim.Hello(dispatchtest.Token("V1", false))
	evil.Hello(dispatchtest.Token("E1", false))

	// The victim's token is issued: tokenfleet keeps its PINs.
	vj := w.job(jobs.KindIssue, "ws-victim", "blank-issue", "")
	is := victim.IssueUntilCSR(victim.Next(protocol.TypeDispatch, vj.ID), "V1")
	victim.Finish(is)
	w.waitState(vj.ID, jobs.StateSucceeded)
	keptUser := pinOf(t, w, "V1", store.PINPurposeUser)
	keptSO := pinOf(t, w, "V1", store.PINPurposeSO)
	if keptUser.JobID != vj.ID || keptSO.JobID != vj.ID {
		t.Fatalf("victim's PINs kept from jobs %s and %s, want %s", keptUser.JobID, keptSO.JobID, vj.ID)
	}

	// A hello claiming the victim's token: the token stays the victim's.
	evil.Hello(dispatchtest.Token("E1", false), dispatchtest.Token("V1", true))
	claims := w.waitAudit(audit.ActionTokenClaimRefused, "")
	if !strings.Contains(claims[0].Reason, "V1 (held by ws-victim)") {
		t.Errorf("claim refused with %q", claims[0].Reason)
	}
	if tok, err := w.c.Store.GetToken(w.ctx, "V1"); err != nil || tok.AgentID != "ws-victim" {
		t.Fatalf("token V1 after the claim: %+v, %v", tok, err)
	}

	// The attacker's own job, dispatched to it: its result names the victim's token and
	// carries PINs for it.
	ej := w.job(jobs.KindIssue, "ws-evil", "blank-issue", "")
	disp := evil.Next(protocol.TypeDispatch, ej.ID)
	d, err := protocol.DecodeBody[protocol.JobDispatch](disp)
	if err != nil {
		t.Fatal(err)
	}
	ref := disp.Job()
	forged := &dispatchtest.Issued{Ref: ref, Dispatch: d, Serial: "V1", Pins: dispatchtest.RandomPins()}
	env := evil.Result(forged, protocol.OutcomeFailed, protocol.NewError(protocol.CodeTokenNotPresent, "token removed"))
	if e := waitRejected(t, w, env.ID); !strings.Contains(string(e.Details), string(protocol.CodeTokenNotOwned)) {
		t.Errorf("result naming the victim's token refused with %q (%s), want token_not_owned", e.Reason, e.Details)
	}
	// The same once its own job is cancelled: the agent's last word is taken, but not
	// for another agent's token.
	if _, err := w.desk.Cancel(w.ctx, ej.ID, "help desk changed its mind"); err != nil {
		t.Fatal(err)
	}
	evil.Next(protocol.TypeCancel, ej.ID)
	env = evil.Result(forged, protocol.OutcomeFailed, protocol.NewError(protocol.CodeJobCancelled, "cancelled"))
	if e := waitRejected(t, w, env.ID); !strings.Contains(string(e.Details), string(protocol.CodeTokenNotOwned)) {
		t.Errorf("cancelled job's result naming the victim's token refused with %q (%s)", e.Reason, e.Details)
	}

	// Its own token, in a job that never re-initialised it: the result is taken, the
	// PINs are not.
	own := w.job(jobs.KindIssue, "ws-evil", "blank-issue", "E1")
	disp = evil.Next(protocol.TypeDispatch, own.ID)
	if d, err = protocol.DecodeBody[protocol.JobDispatch](disp); err != nil {
		t.Fatal(err)
	}
	ownRun := &dispatchtest.Issued{Ref: disp.Job(), Dispatch: d, Serial: "E1", Pins: dispatchtest.RandomPins()}
	evil.Progress(ownRun.Ref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "E1"})
	evil.Result(ownRun, protocol.OutcomeFailed, protocol.NewError(protocol.CodeTokenNotPresent, "token removed"))
	w.waitState(own.ID, jobs.StateFailed)
	refused := w.waitAudit(audit.ActionPINsRefused, own.ID)
	if !strings.Contains(refused[0].Reason, "did not re-initialise") {
		t.Errorf("PINs refused because %q", refused[0].Reason)
	}
	if _, err := w.c.Store.GetTokenPIN(w.ctx, "E1", store.PINPurposeUser); err == nil {
		t.Errorf("PINs kept for E1 from a job that did not re-initialise it")
	}

	// Nothing of the victim's changed, and its holder's PIN can still be revealed.
	if got := pinOf(t, w, "V1", store.PINPurposeUser); got.ID != keptUser.ID {
		t.Errorf("victim's user PIN replaced: %+v", got)
	}
	if got := pinOf(t, w, "V1", store.PINPurposeSO); got.ID != keptSO.ID {
		t.Errorf("victim's SO PIN replaced: %+v", got)
	}
	if tok, err := w.c.Store.GetToken(w.ctx, "V1"); err != nil || tok.AgentID != "ws-victim" {
		t.Fatalf("token V1: %+v, %v", tok, err)
	}
	pin, err := w.desk.RevealUserPIN(w.ctx, vj.ID)
	if err != nil || pin != is.Pins.User {
		t.Fatalf("victim's user PIN revealed as %q (%v), want the one its job set", pin, err)
	}
	w.verifyAudit()
}

// TestTokenMovesWhenReleased: a token moved to another workstation is taken by its new
// agent once the old one stops reporting it.
func TestTokenMovesWhenReleased(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "per_agent")
	from := w.agent("ws-from", w.agentUser("ws-from"))
	to := w.agent("ws-to", w.agentUser("ws-to"))
	from.Hello(dispatchtest.Token("M1", true))
	waitFor(t, "M1 at ws-from", func() bool {
		tok, err := w.c.Store.GetToken(w.ctx, "M1")
		return err == nil && tok.AgentID == "ws-from"
	})
	from.Send(protocol.JobRef{}, protocol.Inventory{Tokens: []protocol.Token{}})
	waitFor(t, "M1 released", func() bool {
		tok, err := w.c.Store.GetToken(w.ctx, "M1")
		return err == nil && tok.AgentID == ""
	})
	to.Hello(dispatchtest.Token("M1", true))
	waitFor(t, "M1 at ws-to", func() bool {
		tok, err := w.c.Store.GetToken(w.ctx, "M1")
		return err == nil && tok.AgentID == "ws-to"
	})
	if es := w.auditOf(audit.ActionTokenClaimRefused, ""); len(es) != 0 {
		t.Errorf("claims refused: %+v", es)
	}
}

// TestRenewOfAnotherHoldersToken: a renew for a token that carries another holder's
// certificate is refused when it is requested.
func TestRenewOfAnotherHoldersToken(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-renew", "")
	a.Hello(dispatchtest.Token("R1", false))
	j := w.job(jobs.KindIssue, "ws-renew", "blank-issue", "")
	is := a.IssueUntilCSR(a.Next(protocol.TypeDispatch, j.ID), "R1")
	a.Finish(is)
	w.waitState(j.ID, jobs.StateSucceeded)
	if _, err := w.admin.CreateUser(w.ctx, client.UserCreate{Username: "bob", DisplayName: "Bob", Email: "bob@acme.example", Organization: "Acme"}); err != nil {
		t.Fatal(err)
	}
	_, err := w.desk.CreateJob(w.ctx, client.JobCreate{Kind: jobs.KindRenew, Holder: "bob", Agent: "ws-renew", Profile: "blank-issue", TokenSerial: "R1"})
	if apiCode(err) != "not_holders_token" {
		t.Fatalf("renew of alice's token for bob: %v", err)
	}
	if _, err := w.desk.CreateJob(w.ctx, client.JobCreate{Kind: jobs.KindRenew, Holder: "alice", Agent: "ws-renew", Profile: "blank-issue", TokenSerial: "R1"}); err != nil {
		t.Fatalf("renew of alice's token for alice: %v", err)
	}
}

// TestAgentHearsEveryOutcome: a cancel while the agent waits for its token or for its
// certificate, and a failure the coordinator decides, each reach the agent as a cancel
// naming the job's state and why; the agent's answer is taken as its last word.
func TestAgentHearsEveryOutcome(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "per_agent")
	a := w.agent("ws-hear", w.agentUser("ws-hear"))
	a.Hello()

	// Waiting for its token.
	j := w.job(jobs.KindIssue, "ws-hear", "blank-issue", "")
	ref := a.Next(protocol.TypeDispatch, j.ID).Job()
	a.Progress(ref, protocol.Progress{Step: protocol.StepWaitingForToken, Detail: "insert a blank token"})
	waitFor(t, "waiting_for_token recorded", func() bool {
		d, err := w.admin.GetJob(w.ctx, j.ID)
		return err == nil && d.State == jobs.StateRunning && len(d.Steps) == 1
	})
	if _, err := w.desk.Cancel(w.ctx, j.ID, "the holder left"); err != nil {
		t.Fatal(err)
	}
	c := cancelOf(t, a, j.ID)
	if c.State != protocol.StateCancelled || !strings.Contains(c.Reason, "the holder left") {
		t.Errorf("cancel %+v", c)
	}
	ack := a.Send(ref, protocol.Result{Outcome: protocol.OutcomeFailed, Error: protocol.NewError(protocol.CodeJobCancelled, "the coordinator moved the job to cancelled")})
	waitFor(t, "the agent's answer taken", func() bool {
		e, err := w.c.Store.GetInbox(w.ctx, ack.ID)
		return err == nil && strings.Contains(e.Result, "last word")
	})
	// The help desk sees that the agent stopped.
	if d, err := w.desk.GetJob(w.ctx, j.ID); err != nil || d.State != jobs.StateCancelled || !strings.Contains(d.AgentResult, "job_cancelled") {
		t.Errorf("cancelled job as the help desk sees it: %+v, %v", d, err)
	}

	// Waiting for its certificate, behind the CA operator.
	g := w.job(jobs.KindIssue, "ws-hear", "gated", "")
	if _, err := w.appr.Approve(w.ctx, g.ID, ""); err != nil {
		t.Fatal(err)
	}
	is := a.IssueUntilCSR(a.Next(protocol.TypeDispatch, g.ID), "H1")
	w.waitState(g.ID, jobs.StateAwaitingCertificate)
	if _, err := w.desk.Cancel(w.ctx, g.ID, "wrong profile"); err != nil {
		t.Fatal(err)
	}
	if c := cancelOf(t, a, g.ID); c.State != protocol.StateCancelled || !strings.Contains(c.Reason, "wrong profile") {
		t.Errorf("cancel %+v", c)
	}
	_ = is

	// A failure the coordinator decides: the CSR is refused.
	f := w.job(jobs.KindIssue, "ws-hear", "blank-issue", "")
	fref := a.Next(protocol.TypeDispatch, f.ID).Job()
	key := dispatchtest.NewReportedKey(t, protocol.KeyP256)
	other := dispatchtest.NewReportedKey(t, protocol.KeyP256)
	a.Progress(fref, protocol.Progress{Step: protocol.StepTokenFound})
	a.Progress(fref, protocol.Progress{Step: protocol.StepKeyGenerated, KeyID: protocol.DeriveKeyID(f.ID), PublicKey: key.PublicKey})
	a.Send(fref, protocol.CSRSubmission{CSR: other.CSR, KeyID: protocol.DeriveKeyID(f.ID), PublicKey: other.PublicKey, TokenSerial: "H2"})
	w.waitState(f.ID, jobs.StateFailed)
	if c := cancelOf(t, a, f.ID); c.State != protocol.StateFailed || !strings.Contains(c.Reason, "CSR refused") {
		t.Errorf("cancel %+v", c)
	}

	// Once the agent works on the token, the help desk cannot cancel.
	r := w.job(jobs.KindIssue, "ws-hear", "blank-issue", "")
	rref := a.Next(protocol.TypeDispatch, r.ID).Job()
	a.Progress(rref, protocol.Progress{Step: protocol.StepTokenFound})
	waitFor(t, "token_found recorded", func() bool {
		d, err := w.admin.GetJob(w.ctx, r.ID)
		return err == nil && len(d.Steps) == 1
	})
	if _, err := w.desk.Cancel(w.ctx, r.ID, ""); apiCode(err) != "not_cancellable" {
		t.Errorf("cancel at token_found: %v", err)
	}

	// Every transition is counted, whoever made it.
	metrics := w.metrics()
	for _, edge := range []string{
		`from="approved",to="dispatched"`, `from="dispatched",to="running"`, `from="running",to="cancelled"`,
		`from="awaiting_certificate",to="cancelled"`, `from="running",to="awaiting_certificate"`, `from="running",to="failed"`,
	} {
		if !strings.Contains(metrics, "tokenfleet_coordinator_job_transitions_total{"+edge+"}") {
			t.Errorf("job_transitions_total has no %s", edge)
		}
	}
	w.verifyAudit()
}

// metrics is the coordinator's /metrics page.
func (w *world) metrics() string {
	w.t.Helper()
	req, err := http.NewRequestWithContext(w.ctx, http.MethodGet, w.c.URL+"/metrics", nil)
	if err != nil {
		w.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	return string(body)
}

// TestLongNonASCIIReasons: a cancel reason as long as the protocol carries, in a script of
// two bytes a character, reaches the agent whole; one byte more is refused at the API,
// saying the limit; a failure reason longer than the protocol carries is cut between
// characters, never inside one.
func TestLongNonASCIIReasons(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-text", "")
	a.Hello()
	reason := strings.Repeat("é", protocol.MaxTextLen/2) // 1024 bytes
	j := w.job(jobs.KindIssue, "ws-text", "blank-issue", "")
	a.Next(protocol.TypeDispatch, j.ID)
	w.waitState(j.ID, jobs.StateDispatched)
	if _, err := w.desk.Cancel(w.ctx, j.ID, reason+"é"); apiCode(err) != "bad_request" || !strings.Contains(err.Error(), "1026 bytes") {
		t.Fatalf("a reason over the limit: %v", err)
	}
	if _, err := w.desk.Cancel(w.ctx, j.ID, reason); err != nil {
		t.Fatal(err)
	}
	if c := cancelOf(t, a, j.ID); c.Reason != reason {
		t.Errorf("the agent got a reason of %d bytes, want the %d sent", len(c.Reason), len(reason))
	}

	// The agent's own failure, in a long non-ASCII message: recorded, cut whole.
	f := w.job(jobs.KindIssue, "ws-text", "blank-issue", "")
	ref := a.Next(protocol.TypeDispatch, f.ID).Job()
	a.Send(ref, protocol.Result{Outcome: protocol.OutcomeFailed, Error: protocol.NewError(protocol.CodeTokenNotPresent, "%s", strings.Repeat("ж", 500))})
	d := w.waitState(f.ID, jobs.StateFailed)
	if !utf8.ValidString(d.Timeline[len(d.Timeline)-1].Reason) || !utf8.ValidString(d.ErrorMessage) {
		t.Errorf("a reason cut inside a character: %q", d.Timeline[len(d.Timeline)-1].Reason)
	}
}

// cancelOf waits for the cancel of a job at the agent and decodes it.
func cancelOf(t *testing.T, a *dispatchtest.Agent, jobID string) protocol.Cancel {
	t.Helper()
	c, err := protocol.DecodeBody[protocol.Cancel](a.Next(protocol.TypeCancel, jobID))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pinOf(t *testing.T, w *world, serial, purpose string) store.TokenPIN {
	t.Helper()
	p, err := w.c.Store.GetTokenPIN(w.ctx, serial, purpose)
	if err != nil {
		t.Fatalf("%s of %s: %v", purpose, serial, err)
	}
	return p
}
