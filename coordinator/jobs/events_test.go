package jobs

import (
	"errors"
	"fmt"
	"testing"
)

// TestAcceptEventTable walks every kind × state × agent event, with the step the agent
// would report at that point, against expectations written out by hand.
func TestAcceptEventTable(t *testing.T) {
	running := Progress{Current: StepTokenFound, Highest: StepTokenFound}
	sent := Progress{Current: StepCSRSent, Highest: StepCSRSent}
	type cell struct {
		state      State
		dispatched bool
		p          Progress
	}
	cells := []cell{
		{StatePendingApproval, false, Progress{}},
		{StateApproved, false, Progress{}},
		{StateApproved, true, Progress{}},
		{StateDispatched, true, Progress{}},
		{StateRunning, true, running},
		{StateAwaitingCertificate, true, sent},
		{StateInstalling, true, sent},
		{StateSucceeded, true, sent},
		{StateFailed, true, running},
		{StateFailed, false, Progress{}},
		{StateRejected, false, Progress{}},
		{StateRejected, true, sent},
		{StateCancelled, true, running},
		{StateCancelled, false, Progress{}},
		{StateSuperseded, true, Progress{}},
		{StateExpired, true, Progress{}},
	}
	type event struct {
		kind EventKind
		step Step
	}
	events := []event{
		{EventProgress, StepWaitingForToken}, {EventProgress, StepCertificateWritten}, {EventCSR, ""},
		{EventSucceeded, ""}, {EventFailed, ""}, {EventAcknowledged, ""},
	}
	// want gives the expected effect ("start", "to X", "step", "check CSR", "last word",
	// combined with "+") or the refusal code.
	want := func(k Kind, c cell, e event) string {
		if k == KindRevoke {
			return string(CodeNotDispatched)
		}
		switch {
		case c.state == StatePendingApproval || (c.state == StateApproved && !c.dispatched):
			return string(CodeNotDispatched)
		case c.state == StateRejected && !c.dispatched:
			return string(CodeNotDispatched)
		case c.state == StateSucceeded:
			return string(CodeJobEnded)
		case Terminal(c.state) && !c.dispatched:
			return string(CodeNotDispatched)
		case Terminal(c.state):
			if e.kind == EventFailed || e.kind == EventAcknowledged {
				return "last word"
			}
			return string(CodeJobEnded)
		}
		start := c.state == StateApproved || c.state == StateDispatched
		prefix := ""
		if start {
			prefix = "start+"
		}
		certKind := k == KindIssue || k == KindRenew
		switch e.kind {
		case EventProgress:
			if e.step == StepWaitingForToken {
				return prefix + "step"
			}
			// certificate_written: kinds that write one (install_certificate and the
			// escrowed kinds get it in their dispatch), and for issue and renew only
			// once the certificate was delivered.
			switch {
			case k == KindInstallCertificate || k == KindServerKeygen || k == KindRecoverKey:
				return prefix + "step"
			case certKind && c.state == StateInstalling:
				return "step"
			}
			return string(CodeIllegalStep)
		case EventCSR:
			if k != KindIssue && k != KindRenew && k != KindCSR {
				return string(CodeEventNotAllowed)
			}
			if c.state == StateAwaitingCertificate || c.state == StateInstalling {
				return string(CodeEventNotAllowed)
			}
			return prefix + "check CSR"
		case EventSucceeded:
			if certKind && c.state != StateInstalling {
				return string(CodeEventNotAllowed)
			}
			return prefix + "to succeeded"
		case EventFailed:
			return prefix + "to failed"
		}
		return string(CodeEventNotAllowed) // a cancel acknowledged, nobody cancelled
	}
	got := func(eff Effect, err error) string {
		if err != nil {
			var je *Error
			if !errors.As(err, &je) {
				return "error " + err.Error()
			}
			return string(je.Code)
		}
		s := ""
		if eff.Start {
			s = "start+"
		}
		switch {
		case eff.LastWord:
			return s + "last word"
		case eff.CheckCSR:
			return s + "check CSR"
		case eff.To != "":
			return s + "to " + string(eff.To)
		case eff.Progress.Current != "":
			return s + "step"
		}
		return s + "nothing"
	}
	n := 0
	for _, k := range Kinds() {
		for _, c := range cells {
			for _, e := range events {
				n++
				eff, err := AcceptEvent(k, c.state, c.dispatched, c.p, e.kind, e.step)
				name := fmt.Sprintf("%s/%s(dispatched %v)/%s %s", k, c.state, c.dispatched, e.kind, e.step)
				if g, w := got(eff, err), want(k, c, e); g != w {
					t.Errorf("%s: got %s, want %s (%v)", name, g, w, err)
				}
				if err == nil && e.kind == EventProgress && eff.Progress.Current != e.step {
					t.Errorf("%s: progress after it %+v", name, eff.Progress)
				}
			}
		}
	}
	if n != len(Kinds())*len(cells)*len(events) {
		t.Fatalf("walked %d pairs", n)
	}
}

func TestAcceptEventRefusesUnknowns(t *testing.T) {
	for _, tc := range []struct {
		kind  Kind
		state State
		ev    EventKind
	}{
		{"forge", StateRunning, EventProgress},
		{KindIssue, "stuck", EventProgress},
		{KindIssue, StateRunning, "result.maybe"},
	} {
		if _, err := AcceptEvent(tc.kind, tc.state, true, Progress{}, tc.ev, StepWaitingForToken); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("%v: %v, want invalid_input", tc, err)
		}
	}
	// Steps never go back within an attempt: a late one is taken for what it reports,
	// the progress stays.
	p := Progress{Current: StepCSRSent, Highest: StepCSRSent}
	for _, step := range []Step{StepInitialising, StepKeyGenerated, StepTokenFound} {
		eff, err := AcceptEvent(KindIssue, StateRunning, true, p, EventProgress, step)
		if err != nil || !eff.Late || eff.Progress != p {
			t.Errorf("%s after csr_sent: %+v, %v", step, eff, err)
		}
	}
	// A step the kind never reports, or one not reached, is not late.
	if _, err := AcceptEvent(KindRenew, StateRunning, true, p, EventProgress, StepInitialising); !errors.Is(err, ErrIllegalStep) {
		t.Errorf("renew reporting initialising: %v", err)
	}
	if _, err := AcceptEvent(KindIssue, StateRunning, true, Progress{Current: StepTokenFound, Highest: StepTokenFound},
		EventProgress, StepVerified); !errors.Is(err, ErrIllegalStep) {
		t.Errorf("verified before the certificate: %v", err)
	}
}

// TestInitialisingIsALastWord: once a job has ended (but not succeeded), the initialising
// step of its dispatched attempt is still taken, changing nothing but the proof that the
// attempt re-initialised its token (the PINs of its failed result are kept on it), for the
// kinds that initialise; any other step is refused, and so is the step for a kind that
// never initialises, an attempt never sent, or a job that succeeded.
func TestInitialisingIsALastWord(t *testing.T) {
	for _, k := range []Kind{KindIssue, KindCSR, KindWipe, KindRenew, KindUnblockPIN} {
		for _, st := range []State{StateFailed, StateCancelled, StateRejected, StateSuperseded, StateExpired, StateSucceeded} {
			initialises := k == KindIssue || k == KindCSR || k == KindWipe
			eff, err := AcceptEvent(k, st, true, Progress{Current: StepTokenFound, Highest: StepTokenFound}, EventProgress, StepInitialising)
			if want := initialises && st != StateSucceeded; want != (err == nil && eff.LastWord) {
				t.Errorf("%s %s: initialising gives %+v, %v; want a last word %t", k, st, eff, err, want)
			}
			if eff.To != "" || eff.Start {
				t.Errorf("%s %s: initialising as a last word changes the state: %+v", k, st, eff)
			}
			if _, err := AcceptEvent(k, st, false, Progress{}, EventProgress, StepInitialising); err == nil {
				t.Errorf("%s %s: initialising taken for an attempt never sent", k, st)
			}
			if _, err := AcceptEvent(k, st, true, Progress{}, EventProgress, StepKeyGenerated); err == nil {
				t.Errorf("%s %s: key_generated taken after the end", k, st)
			}
		}
	}
}
