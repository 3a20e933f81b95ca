package jobs

import (
	"fmt"
	"slices"
)

// EventKind is what an agent reports about one of its jobs.
type EventKind string

// Agent events. A result is told apart by its outcome, and a failed result carrying
// job_cancelled is the agent's answer to a cancel: it acknowledges that the attempt
// stopped.
const (
	EventProgress     EventKind = "progress"
	EventCSR          EventKind = "csr"
	EventSucceeded    EventKind = "result.succeeded"
	EventFailed       EventKind = "result.failed"
	EventAcknowledged EventKind = "result.cancelled"
)

// EventKinds lists every agent event, in the order the event table documents them.
func EventKinds() []EventKind {
	return []EventKind{EventProgress, EventCSR, EventSucceeded, EventFailed, EventAcknowledged}
}

// Codes of refused events. They are also protocol error codes: a refused message is
// dead-lettered with one of them.
const (
	// CodeNotDispatched: the job's current attempt was never sent to the agent (it waits
	// for approval, or for something its dispatch needs), so the agent cannot be working
	// on it.
	CodeNotDispatched Code = "job_not_dispatched"
	// CodeJobEnded: the job has ended; only the agent's last word on the attempt (a
	// failed result) is still taken.
	CodeJobEnded Code = "job_ended"
	// CodeEventNotAllowed: the job's kind or state does not take this event (a CSR for a
	// kind that makes none, success before the certificate was delivered, a step out of
	// order, a second result).
	CodeEventNotAllowed Code = "event_not_allowed"
)

// Effect is what an accepted event does to its job. The caller carries it out in one
// transaction with the event's inbox record.
type Effect struct {
	// Start: the job is approved or dispatched and moves to dispatched, then running,
	// before the rest of the effect: the event proves the agent has the attempt.
	Start bool
	// Progress is the job's progress after a progress event (record the step).
	Progress Progress
	// Late: a progress step the run has already passed, handled after a later one (several
	// coordinators take an agent's events in competition). What it reports (the key, a
	// re-initialisation) is recorded; the progress does not go back.
	Late bool
	// CheckCSR: have the registration authority check the CSR, then sign it or wait for
	// the CA operator; the RA's refusal fails the job.
	CheckCSR bool
	// To is the state the job moves to; "" for none.
	To State
	// LastWord: the job has ended already; the result is the agent's last word on the
	// attempt and changes no state. What it says the agent left on the token is kept
	// under the ownership rules.
	LastWord bool
}

// AcceptEvent is the event table: it says whether a job of kind in state takes the agent
// event ev (step is the reported step of a progress event), and what the event does.
// dispatched says whether the job's current attempt was written out for the agent; p is
// the attempt's progress. A refusal is an *Error with CodeNotDispatched, CodeJobEnded,
// CodeEventNotAllowed or CodeIllegalStep; the caller refuses the message and changes
// nothing. Attempt fencing (an event of an older attempt) and sender checks come before
// this table and are the caller's.
func AcceptEvent(kind Kind, state State, dispatched bool, p Progress, ev EventKind, step Step) (Effect, error) {
	if !KnownKind(kind) {
		return Effect{}, errorf(CodeInvalidInput, "unknown job kind %q (known: %s)", kind, joinKinds())
	}
	if err := knownStates(state); err != nil {
		return Effect{}, err
	}
	if !knownEvent(ev) {
		return Effect{}, errorf(CodeInvalidInput, "unknown agent event %q", ev)
	}
	if !OnAgent(kind) {
		return Effect{}, errorf(CodeNotDispatched, "a %s job runs on the coordinator; no agent reports on it", kind)
	}
	switch {
	case state == StatePendingApproval || (state == StateRejected && !dispatched):
		return Effect{}, errorf(CodeNotDispatched, "%s reported for a job that is %s: it was never approved, so no agent was sent it", ev, state)
	case state == StateApproved && !dispatched:
		return Effect{}, errorf(CodeNotDispatched, "%s reported for an approved job whose dispatch was not written yet", ev)
	case Terminal(state):
		return lastWord(kind, state, dispatched, ev, step)
	}
	// From here the job is approved (dispatch written), dispatched, running,
	// awaiting_certificate or installing.
	e := Effect{Start: state == StateApproved || state == StateDispatched}
	runState := state
	if e.Start {
		runState = StateRunning
	}
	switch ev {
	case EventProgress:
		next, err := AdvanceStep(kind, runState, p, step)
		if err != nil {
			if lateStep(kind, runState, p, step) {
				e.Late, e.Progress = true, p
				return e, nil
			}
			return Effect{}, err
		}
		e.Progress = next
		return e, nil
	case EventCSR:
		switch {
		case !makesCSR(kind):
			return Effect{}, errorf(CodeEventNotAllowed, "a %s job sends no CSR", kind)
		case runState != StateRunning:
			return Effect{}, errorf(CodeEventNotAllowed, "a CSR reported while the job is %s: one CSR per attempt, and it was taken", state)
		}
		e.CheckCSR = true
		return e, nil
	case EventSucceeded:
		switch {
		case NeedsCertificate(kind) && runState != StateInstalling:
			return Effect{}, errorf(CodeEventNotAllowed, "success reported while the job is %s: its certificate was never delivered", state)
		}
		e.To = StateSucceeded
		return e, nil
	case EventFailed:
		e.To = StateFailed
		return e, nil
	}
	// EventAcknowledged on a job that was not withdrawn.
	return Effect{}, errorf(CodeEventNotAllowed, "a cancellation acknowledged while the job is %s: nobody cancelled it", state)
}

// lastWord is the table's row for an ended job: the agent's one failed result for the
// attempt (its own failure that crossed the coordinator's decision, or its answer to a
// cancel) is still taken, for what it left on the token, and so is the initialising step
// before it, for a kind that initialises: it is the proof that the attempt re-initialised
// its token, without which the PINs of that result would not be kept (an agent stopped
// mid-initialise sends both only after the job ended). Nothing else is.
func lastWord(kind Kind, state State, dispatched bool, ev EventKind, step Step) (Effect, error) {
	switch {
	case state == StateSucceeded:
		return Effect{}, errorf(CodeJobEnded, "%s reported for a job that succeeded", ev)
	case !dispatched:
		return Effect{}, errorf(CodeNotDispatched, "%s reported for a %s job whose attempt was never sent to the agent", ev, state)
	case ev == EventFailed || ev == EventAcknowledged:
		return Effect{LastWord: true}, nil
	case ev == EventProgress && step == StepInitialising && MayReinitialise(kind):
		return Effect{LastWord: true}, nil
	}
	return Effect{}, errorf(CodeJobEnded, "%s reported for a job that is %s; only the agent's failed result of the attempt, and its initialising step, are taken", ev, state)
}

// makesCSR reports whether a kind sends a CSR.
func makesCSR(k Kind) bool { return k == KindIssue || k == KindRenew || k == KindCSR }

func knownEvent(ev EventKind) bool {
	for _, k := range EventKinds() {
		if k == ev {
			return true
		}
	}
	return false
}

// String names an effect for timelines and tests.
func (e Effect) String() string {
	s := ""
	add := func(p string) {
		if s != "" {
			s += ", "
		}
		s += p
	}
	if e.Start {
		add("start")
	}
	if e.Progress.Current != "" {
		add("step " + string(e.Progress.Current))
	}
	if e.CheckCSR {
		add("check CSR")
	}
	if e.To != "" {
		add(fmt.Sprintf("to %s", e.To))
	}
	if e.LastWord {
		add("last word")
	}
	return s
}

// lateStep reports whether step is one the run of a kind has already passed (it reached
// p.Highest), in a state where the kind could have reported it.
func lateStep(kind Kind, state State, p Progress, step Step) bool {
	if !Started(state) || p.Highest == "" || !slices.Contains(kindSteps[kind], step) {
		return false
	}
	if NeedsCertificate(kind) && (step == StepCertificateWritten || step == StepVerified) && state != StateInstalling {
		return false
	}
	return stepRank(step) <= stepRank(p.Highest)
}
