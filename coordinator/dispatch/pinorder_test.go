package dispatch_test

import (
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestResultBeforeItsInitialisingStep: with several coordinators taking an agent's
// events in competition, the result of an attempt that re-initialised its token can be
// handled before its initialising step, which another coordinator still holds. The
// result's PINs are the token's from then on: they are kept once the step is in, and the
// PINs of the job before no longer count.
func TestResultBeforeItsInitialisingStep(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-order", "")
	a.Hello()
	issue := w.job(jobs.KindIssue, "ws-order", "blank-issue", "")
	is := a.IssueUntilCSR(a.Next(protocol.TypeDispatch, issue.ID), "O1")
	a.Finish(is)
	w.waitState(issue.ID, jobs.StateSucceeded)
	a.Hello(dispatchtest.Token("O1", true))

	// A csr job re-initialises the token: its events leave the agent in order, and the
	// initialising step is handled last.
	csr := w.job(jobs.KindCSR, "ws-order", "blank-issue", "O1")
	env := a.Next(protocol.TypeDispatch, csr.ID)
	d, err := protocol.DecodeBody[protocol.JobDispatch](env)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Initialise {
		t.Fatalf("the csr dispatch does not initialise the token: %+v", d)
	}
	ref := env.Job()
	cs := &dispatchtest.Issued{Ref: ref, Dispatch: d, Serial: "O1", Pins: dispatchtest.RandomPins(), Key: dispatchtest.NewKey(t, d.Key.Type)}
	pub := dispatchtest.PublicKeyDER(t, cs.Key)
	a.Progress(ref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "O1"})
	a.Progress(ref, protocol.Progress{Step: protocol.StepKeyGenerated, KeyID: d.Key.ID, PublicKey: pub})
	a.Send(ref, protocol.CSRSubmission{CSR: dispatchtest.CSR(t, cs.Key), KeyID: d.Key.ID, PublicKey: pub, TokenSerial: "O1"})
	a.Progress(ref, protocol.Progress{Step: protocol.StepCSRSent})
	a.Result(cs, protocol.OutcomeSucceeded, nil)
	a.Progress(ref, protocol.Progress{Step: protocol.StepInitialising, TokenSerial: "O1"})
	w.waitState(csr.ID, jobs.StateSucceeded)

	for _, purpose := range []string{store.PINPurposeUser, store.PINPurposeSO} {
		kept, err := w.c.Store.GetTokenPIN(w.ctx, "O1", purpose)
		if err != nil || kept.JobID != csr.ID {
			t.Errorf("newest %s of O1 from job %q (%v), want the csr job %s that re-initialised the token (the issue was %s)",
				purpose, kept.JobID, err, csr.ID, issue.ID)
		}
	}
	w.verifyAudit()
}

// TestCSRJobResultLongBeforeItsCSR: a csr job's CSR and result leave the agent together,
// but with several coordinators the CSR can be held up (behind its key_generated report,
// itself handed back) for longer than the result waits for it. The result is then taken
// all the same, and the job succeeds once the CSR is: refused, it would have left the job
// running for good, and the agent, which sent its result, would never say more.
func TestCSRJobResultLongBeforeItsCSR(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-csr-late", "")
	a.Hello()
	csr := w.job(jobs.KindCSR, "ws-csr-late", "blank-issue", "")
	env := a.Next(protocol.TypeDispatch, csr.ID)
	d, err := protocol.DecodeBody[protocol.JobDispatch](env)
	if err != nil {
		t.Fatal(err)
	}
	ref := env.Job()
	cs := &dispatchtest.Issued{Ref: ref, Dispatch: d, Serial: "L1", Pins: dispatchtest.RandomPins(), Key: dispatchtest.NewKey(t, d.Key.Type)}
	a.Progress(ref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "L1"})
	a.Progress(ref, protocol.Progress{Step: protocol.StepInitialising, TokenSerial: "L1"})
	res := a.Result(cs, protocol.OutcomeSucceeded, nil)
	waitFor(t, "the result handled", func() bool {
		att, err := w.c.Store.GetJobAttempt(w.ctx, csr.ID, 1)
		if err != nil {
			t.Fatal(err)
		}
		return att.ResultMessageID == res.ID || len(w.auditOf(audit.ActionMessageRejected, csr.ID)) > 0
	})
	if rej := w.auditOf(audit.ActionMessageRejected, csr.ID); len(rej) > 0 {
		t.Fatalf("the result that came before its CSR was refused: %s", rej[0].Reason)
	}
	if det, err := w.admin.GetJob(w.ctx, csr.ID); err != nil || det.State != jobs.StateRunning {
		t.Fatalf("with its success taken before its CSR the job is %+v (%v), want running", det.Job, err)
	}

	pub := dispatchtest.PublicKeyDER(t, cs.Key)
	a.Progress(ref, protocol.Progress{Step: protocol.StepKeyGenerated, KeyID: d.Key.ID, PublicKey: pub})
	a.Send(ref, protocol.CSRSubmission{CSR: dispatchtest.CSR(t, cs.Key), KeyID: d.Key.ID, PublicKey: pub, TokenSerial: "L1"})
	a.Progress(ref, protocol.Progress{Step: protocol.StepCSRSent})
	det := w.waitState(csr.ID, jobs.StateSucceeded)
	if det.TokenSerial != "L1" || len(w.certificates(csr.ID)) != 1 || transitions(det, jobs.StateSucceeded) != 1 {
		t.Errorf("succeeded on token %q with %d certificates, timeline %+v", det.TokenSerial, len(w.certificates(csr.ID)), det.Timeline)
	}
	if kept, err := w.c.Store.GetTokenPIN(w.ctx, "L1", store.PINPurposeUser); err != nil || kept.JobID != csr.ID {
		t.Errorf("newest user PIN of L1 from job %q (%v), want the csr job", kept.JobID, err)
	}
	w.verifyAudit()
}

// TestLastWordAfterTheNextJob: a job the coordinator ended while its agent was still on it
// (its CSR refused) says its last word, with the PINs its initialise set, only after the
// next job re-initialised the token (handled late, by another coordinator). Those PINs are
// older than the next job's: the token has the next job's, and they stay the kept ones.
func TestLastWordAfterTheNextJob(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "shared")
	a := w.agent("ws-lastword", "")
	a.Hello()
	issue := w.job(jobs.KindIssue, "ws-lastword", "blank-issue", "")
	is := a.IssueUntilCSR(a.Next(protocol.TypeDispatch, issue.ID), "W1")
	a.Finish(is)
	w.waitState(issue.ID, jobs.StateSucceeded)
	a.Hello(dispatchtest.Token("W1", true))

	// The first csr job re-initialises the token; its CSR is for another key, so the RA
	// refuses it and the job fails.
	first := w.job(jobs.KindCSR, "ws-lastword", "blank-issue", "W1")
	fenv := a.Next(protocol.TypeDispatch, first.ID)
	fd, err := protocol.DecodeBody[protocol.JobDispatch](fenv)
	if err != nil {
		t.Fatal(err)
	}
	fref := fenv.Job()
	old := &dispatchtest.Issued{Ref: fref, Dispatch: fd, Serial: "W1", Pins: dispatchtest.RandomPins(), Key: dispatchtest.NewKey(t, fd.Key.Type)}
	a.Progress(fref, protocol.Progress{Step: protocol.StepTokenFound, TokenSerial: "W1"})
	a.Progress(fref, protocol.Progress{Step: protocol.StepKeyGenerated, KeyID: fd.Key.ID, PublicKey: dispatchtest.PublicKeyDER(t, old.Key)})
	a.Send(fref, protocol.CSRSubmission{CSR: dispatchtest.CSR(t, dispatchtest.NewKey(t, fd.Key.Type)), KeyID: fd.Key.ID,
		PublicKey: dispatchtest.PublicKeyDER(t, old.Key), TokenSerial: "W1"})
	w.waitState(first.ID, jobs.StateFailed)

	// The next job goes, with the PINs the coordinator holds, re-initialises the token and
	// succeeds.
	next := w.job(jobs.KindCSR, "ws-lastword", "blank-issue", "W1")
	nenv := a.Next(protocol.TypeDispatch, next.ID)
	cs := a.IssueUntilCSR(nenv, "W1")
	a.Result(cs, protocol.OutcomeSucceeded, nil)
	w.waitState(next.ID, jobs.StateSucceeded)

	// The first job's last word comes now: its initialising step and its answer to the
	// failure, with the PINs it set before the next job's.
	a.Progress(fref, protocol.Progress{Step: protocol.StepInitialising, TokenSerial: "W1"})
	last := a.Result(old, protocol.OutcomeFailed, protocol.NewError(protocol.CodeJobCancelled, "the coordinator failed the job"))
	waitFor(t, "the first job's last word handled", func() bool {
		att, err := w.c.Store.GetJobAttempt(w.ctx, first.ID, 1)
		if err != nil {
			t.Fatal(err)
		}
		return att.ResultMessageID == last.ID
	})
	for _, purpose := range []string{store.PINPurposeUser, store.PINPurposeSO} {
		kept, err := w.c.Store.GetTokenPIN(w.ctx, "W1", purpose)
		if err != nil || kept.JobID != next.ID {
			t.Errorf("newest %s of W1 from job %q (%v), want the job that re-initialised the token last, %s (the one that ended before it: %s)",
				purpose, kept.JobID, err, next.ID, first.ID)
		}
	}
	w.verifyAudit()
}
