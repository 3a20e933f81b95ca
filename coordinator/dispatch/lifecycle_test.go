package dispatch_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// TestWaitingJobsAndKeptPINs: a job that needs PINs sealed to an agent that never said
// hello waits, approved, and goes out when the hello arrives, carrying the SO PIN the
// issuing job kept, sealed to the agent for this job. A job needing a PIN nobody kept
// waits, saying so.
func TestWaitingJobsAndKeptPINs(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-pin", "")

	// Initialising a blank token needs no PIN: it goes without a hello.
	issue := w.job(jobs.KindIssue, "ws-pin", "blank-issue", "")
	is := a.IssueUntilCSR(a.Next(protocol.TypeDispatch, issue.ID), "P1")
	a.Finish(is)
	w.waitState(issue.ID, jobs.StateSucceeded)

	unblock := w.job(jobs.KindUnblockPIN, "ws-pin", "unblock", "P1")
	waiting := w.waitAudit(audit.ActionJobWaiting, unblock.ID)
	if !strings.Contains(waiting[0].Reason, "has not said hello") {
		t.Errorf("waiting because %q", waiting[0].Reason)
	}
	if d, err := w.admin.GetJob(w.ctx, unblock.ID); err != nil || d.State != jobs.StateApproved {
		t.Fatalf("waiting job: %+v, %v", d.Job, err)
	}
	// Refused at once: no tokenfleet job ever set that token's SO PIN, so the job could
	// never be sent.
	_, err := w.desk.CreateJob(w.ctx, client.JobCreate{Kind: jobs.KindWipe, Holder: w.holder, Agent: "ws-pin", Profile: "unblock",
		TokenSerial: "NOBODY-KNOWS"})
	if apiCode(err) != "pins_unknown" || !strings.Contains(err.Error(), "holds none") {
		t.Fatalf("wipe of a token whose SO PIN nobody kept: %v", err)
	}

	a.Hello(dispatchtest.Token("P1", true))
	env := a.Next(protocol.TypeDispatch, unblock.ID)
	d, err := protocol.DecodeBody[protocol.JobDispatch](env)
	if err != nil {
		t.Fatal(err)
	}
	if d.Kind != protocol.KindUnblockPIN || d.Token.Serial != "P1" || d.PINPolicy == nil || !d.PINPolicy.DigitsOnly ||
		len(d.ResultKey) == 0 || d.PINs == nil || d.PINs.UserPIN != nil {
		t.Fatalf("unblock dispatch %+v", d)
	}
	if so := a.OpenPIN(env.Job(), d.PINs.SOPIN, protocol.PurposeSOPIN); so != is.Pins.SO {
		t.Fatalf("the dispatch carries SO PIN %q, the token has %q", so, is.Pins.SO)
	}
	w.waitState(unblock.ID, jobs.StateDispatched)
	ub := &dispatchtest.Issued{Ref: env.Job(), Dispatch: d, Serial: "P1", Pins: dispatchtest.Pins{User: "123456", SO: is.Pins.SO}}
	a.Progress(ub.Ref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "P1"})
	a.Progress(ub.Ref, protocol.Progress{Step: protocol.StepVerified})
	a.Result(ub, protocol.OutcomeSucceeded, nil)
	w.waitState(unblock.ID, jobs.StateSucceeded)
	kept, err := w.c.Store.GetTokenPIN(w.ctx, "P1", store.PINPurposeUser)
	if err != nil || kept.JobID != unblock.ID {
		t.Errorf("newest user PIN of P1 from job %q (%v), want the unblock job", kept.JobID, err)
	}

	w.verifyAudit()
}

// TestRetryFencesOldAttempt: a failed attempt is retried by the help desk as a new
// attempt; a late result of the old attempt is recorded as stale and changes nothing.
func TestRetryFencesOldAttempt(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-retry", "")
	a.Hello()
	j := w.job(jobs.KindIssue, "ws-retry", "blank-issue", "")
	first := a.Next(protocol.TypeDispatch, j.ID)
	ref1 := first.Job()
	a.Progress(ref1, protocol.Progress{Step: protocol.StepWaitingForToken, Detail: "insert a blank token"})
	a.Send(ref1, protocol.Result{Outcome: protocol.OutcomeFailed,
		Error: &protocol.Error{Code: protocol.CodeDeadlineExceeded, Message: "no token inserted", Retryable: true}})
	det := w.waitState(j.ID, jobs.StateFailed)
	if det.ErrorCode != string(protocol.CodeDeadlineExceeded) || !strings.Contains(det.ErrorMessage, "retryable") {
		t.Fatalf("failed with %s: %s", det.ErrorCode, det.ErrorMessage)
	}

	out := runCtl(t, w, w.tokenOf("desk"), 0, "retry", j.ID, "--reason", "token now at hand")
	if !strings.Contains(out, "attempt 2") {
		t.Errorf("retry said %q", out)
	}
	second := a.Next(protocol.TypeDispatch, j.ID)
	if second.Attempt != 2 {
		t.Fatalf("second dispatch is for attempt %d", second.Attempt)
	}
	w.waitState(j.ID, jobs.StateDispatched)

	// The first attempt's late success is fenced off.
	stale := &dispatchtest.Issued{Ref: ref1, Serial: "R1"}
	a.Result(stale, protocol.OutcomeSucceeded, nil)
	es := w.waitAudit(audit.ActionJobResultStale, j.ID)
	if !strings.Contains(es[0].Reason, "attempt 1; the job is at attempt 2") {
		t.Errorf("stale result recorded as %q", es[0].Reason)
	}
	if d, err := w.admin.GetJob(w.ctx, j.ID); err != nil || d.State != jobs.StateDispatched || d.Attempt != 2 {
		t.Fatalf("after a stale result: %+v, %v", d.Job, err)
	}

	is := a.IssueUntilCSR(second, "R1")
	a.Finish(is)
	det = w.waitState(j.ID, jobs.StateSucceeded)
	if det.ErrorCode != "" || det.Attempt != 2 || len(steps(det, 2)) != 6 || len(steps(det, 1)) != 1 {
		t.Errorf("after the retry: error %q, attempt %d, steps %v / %v", det.ErrorCode, det.Attempt, steps(det, 1), steps(det, 2))
	}
	if _, err := w.desk.Retry(w.ctx, j.ID, client.RetryRequest{}); apiCode(err) != "conflict" {
		t.Errorf("retrying a succeeded job: %v", err)
	}
	w.verifyAudit()
}

// TestJobExpiresWhileAgentAway: a dispatched job waits in the queue of an agent that is
// away and expires at its deadline; the agent finds the dispatch and its cancel.
func TestJobExpiresWhileAgentAway(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	if _, err := w.admin.EnrolAgent(w.ctx, client.AgentEnrolment{ID: "ws-away", Hostname: "away.test"}); err != nil {
		t.Fatal(err)
	}
	j, err := w.desk.CreateJob(w.ctx, client.JobCreate{Kind: jobs.KindIssue, Holder: w.holder, Agent: "ws-away",
		Profile: "blank-issue", Deadline: time.Now().Add(3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	w.waitState(j.ID, jobs.StateDispatched)
	det := w.waitState(j.ID, jobs.StateExpired)
	if det.ErrorCode != "job_expired" {
		t.Errorf("expired with %q", det.ErrorCode)
	}
	a := dispatchtest.Start(t, w.broker.URL, "ws-away")
	a.Next(protocol.TypeDispatch, j.ID)
	c, err := protocol.DecodeBody[protocol.Cancel](a.Next(protocol.TypeCancel, j.ID))
	if err != nil || c.State != protocol.StateExpired || !strings.Contains(c.Reason, "deadline") {
		t.Fatalf("cancel %+v, %v", c, err)
	}
}

// TestConnectionsClosedMidRun: the broker closes every connection at several points of
// a run, and every event is sent twice; no job is lost and none is applied twice.
func TestConnectionsClosedMidRun(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-flaky", "")
	a.Duplicates = true
	// One blank token per job: jobs for the same holder, profile and agent would
	// supersede each other unless they name different tokens.
	serials := []string{"F0", "F1", "F2", "F3"}
	var tokens []protocol.Token
	for _, s := range serials {
		tokens = append(tokens, dispatchtest.Token(s, false))
	}
	a.Hello(tokens...)
	var ids []string
	for _, s := range serials {
		ids = append(ids, w.job(jobs.KindIssue, "ws-flaky", "blank-issue", s).ID)
	}
	w.broker.CloseConnections(t, "test: before the dispatches are taken")
	var issued []*dispatchtest.Issued
	for i, id := range ids {
		issued = append(issued, a.IssueUntilCSR(a.Next(protocol.TypeDispatch, id), serials[i]))
		if i == 1 {
			w.broker.CloseConnections(t, "test: among the CSRs")
		}
	}
	w.broker.CloseConnections(t, "test: before the certificates are taken")
	for _, is := range issued {
		a.Finish(is)
	}
	w.broker.CloseConnections(t, "test: among the results")
	for _, id := range ids {
		det := w.waitState(id, jobs.StateSucceeded)
		for _, s := range []jobs.State{jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate, jobs.StateInstalling, jobs.StateSucceeded} {
			if c := transitions(det, s); c != 1 {
				t.Errorf("job %s: %d transitions to %s", id, c, s)
			}
		}
		if got := steps(det, 1); len(got) != 6 {
			t.Errorf("job %s: steps %v", id, got)
		}
		if c := len(w.certificates(id)); c != 1 {
			t.Errorf("job %s: %d certificates", id, c)
		}
		if c := len(w.auditOf(audit.ActionCertificateIssued, id)); c != 1 {
			t.Errorf("job %s: %d issuance entries", id, c)
		}
	}
	perJob := map[string]map[protocol.MessageType]int{}
	for _, env := range a.Commands() {
		if perJob[env.JobID] == nil {
			perJob[env.JobID] = map[protocol.MessageType]int{}
		}
		perJob[env.JobID][env.Type]++
	}
	for _, id := range ids {
		if got := perJob[id]; got[protocol.TypeDispatch] != 1 || got[protocol.TypeCertificate] != 1 || len(got) != 2 {
			t.Errorf("job %s: the agent got %v distinct commands", id, got)
		}
	}
	if es := w.auditOf(audit.ActionMessageRejected, ""); len(es) != 0 {
		t.Errorf("refused messages: %+v", es)
	}
	w.verifyAudit()
}

// TestResetAgentKey: a reinstalled agent's new seal key is refused until an
// administrator resets the recorded one; its next hello records the new key.
func TestResetAgentKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-reinstalled", "")
	a.Hello()
	w.waitAudit(audit.ActionAgentKeySet, "")
	newKey, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a.SealKey = newKey
	refused := a.Hello()
	if e := waitRejected(t, w, refused.ID); !strings.Contains(e.Reason, "reset-key ws-reinstalled") {
		t.Errorf("refused hello: %q", e.Reason)
	}
	runCtl(t, w, w.tokenOf("desk"), 1, "agent", "reset-key", "ws-reinstalled")
	out := runCtl(t, w, w.c.AdminToken, 0, "agent", "reset-key", "ws-reinstalled", "--reason", "disk replaced")
	if !strings.Contains(out, "seal key reset") {
		t.Errorf("reset-key said %q", out)
	}
	a.Hello()
	want, err := seal.MarshalPublicKey(newKey.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ag, err := w.c.Store.GetAgent(w.ctx, "ws-reinstalled")
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(ag.PublicKey, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new seal key was not recorded after the reset")
		}
		<-tick.C
	}
	if es := w.auditOf(audit.ActionAgentKeyReset, ""); len(es) != 1 || es[0].Reason != "disk replaced" {
		t.Errorf("reset audit %+v", es)
	}
	if es := w.auditOf(audit.ActionAgentKeySet, ""); len(es) != 2 {
		t.Errorf("%d key_set entries, want 2", len(es))
	}
}

// TestUnroutableDispatch: a dispatch for an agent whose queue is gone comes back from
// the broker; the failure is recorded on the outbox row, the queue is declared again and
// the dispatch goes out.
func TestUnroutableDispatch(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-lost", "")
	a.Hello()
	// The queue disappears behind the coordinator's back (an operator, a broker reset).
	conn, err := amqp091.Dial(w.broker.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue, _ := protocol.AgentQueue("ws-lost")
	if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	j := w.job(jobs.KindIssue, "ws-lost", "blank-issue", "")
	w.waitState(j.ID, jobs.StateDispatched)
	att, err := w.c.Store.GetJobAttempt(w.ctx, j.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	var row store.OutboxMessage
	for id := int64(1); ; id++ {
		m, err := w.c.Store.GetOutbox(w.ctx, id)
		if err != nil {
			t.Fatalf("no outbox row for message %s: %v", att.DispatchMessageID, err)
		}
		if m.MessageID == att.DispatchMessageID {
			row = m
			break
		}
	}
	if row.Attempts < 1 || !strings.Contains(row.LastError, "unroutable") || row.SentAt.IsZero() {
		t.Errorf("outbox row after the return: %d attempts, last error %q, sent %v", row.Attempts, row.LastError, row.SentAt)
	}
	// The agent's consumer was cancelled with the queue and subscribes again.
	if env := a.Next(protocol.TypeDispatch, j.ID); env.ID != att.DispatchMessageID {
		t.Errorf("dispatch %s, want %s", env.ID, att.DispatchMessageID)
	}
}

// TestPINsWaitForTheTokensOtherJob: a job that carries a token's PINs is not sent while
// another job on the token is in flight, since that job may change them: a renew queued
// while an unblock_pin runs waits, saying for which job, and goes once the unblock ended,
// with the user PIN the unblock set, not the one before it.
func TestPINsWaitForTheTokensOtherJob(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-fence", "")
	a.Hello()
	issue := w.job(jobs.KindIssue, "ws-fence", "blank-issue", "")
	is := a.IssueUntilCSR(a.Next(protocol.TypeDispatch, issue.ID), "F1")
	a.Finish(is)
	w.waitState(issue.ID, jobs.StateSucceeded)
	a.Hello(dispatchtest.Token("F1", true))

	unblock := w.job(jobs.KindUnblockPIN, "ws-fence", "unblock", "F1")
	uenv := a.Next(protocol.TypeDispatch, unblock.ID)
	w.waitState(unblock.ID, jobs.StateDispatched)

	renew := w.job(jobs.KindRenew, "ws-fence", "blank-issue", "F1")
	waiting := w.waitAudit(audit.ActionJobWaiting, renew.ID)
	if r := waiting[0].Reason; !strings.Contains(r, unblock.ID) || !strings.Contains(r, "may change its PINs") {
		t.Errorf("the renew waits because %q, want the unblock job named", r)
	}
	if d, err := w.admin.GetJob(w.ctx, renew.ID); err != nil || d.State != jobs.StateApproved {
		t.Fatalf("renew while the unblock runs: %+v, %v", d.Job, err)
	}

	ud, err := protocol.DecodeBody[protocol.JobDispatch](uenv)
	if err != nil {
		t.Fatal(err)
	}
	const newPIN = "246810"
	ub := &dispatchtest.Issued{Ref: uenv.Job(), Dispatch: ud, Serial: "F1", Pins: dispatchtest.Pins{User: newPIN, SO: is.Pins.SO}}
	a.Progress(ub.Ref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "F1"})
	a.Progress(ub.Ref, protocol.Progress{Step: protocol.StepVerified})
	a.Result(ub, protocol.OutcomeSucceeded, nil)
	w.waitState(unblock.ID, jobs.StateSucceeded)

	renv := a.Next(protocol.TypeDispatch, renew.ID)
	rd, err := protocol.DecodeBody[protocol.JobDispatch](renv)
	if err != nil {
		t.Fatal(err)
	}
	if rd.PINs == nil || rd.PINs.UserPIN == nil {
		t.Fatalf("renew dispatch without a user PIN: %+v", rd)
	}
	if got := a.OpenPIN(renv.Job(), rd.PINs.UserPIN, protocol.PurposeUserPIN); got != newPIN {
		t.Errorf("the renew carries user PIN %q, want %q, the one the unblock set (the issue's was %q)", got, newPIN, is.Pins.User)
	}
	w.verifyAudit()
}
