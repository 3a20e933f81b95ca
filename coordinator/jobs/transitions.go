package jobs

import (
	"slices"
	"strings"
)

// edges is the transition table for all kinds together; kindAllows narrows it per kind.
// The package doc explains the choices (retry, cancel, expiry, revoke).
var edges = map[State][]State{
	StatePendingApproval: {StateApproved, StateRejected, StateCancelled, StateSuperseded, StateExpired},
	// approved → running only for revoke, which the coordinator runs itself. approved →
	// failed: the coordinator cannot build the attempt's dispatch (a PIN it does not
	// hold, a profile that no longer renders); a retry is a new attempt.
	StateApproved: {StateDispatched, StateRunning, StateFailed, StateCancelled, StateSuperseded, StateExpired},
	// dispatched → failed: the agent refused the job before starting it.
	StateDispatched: {StateRunning, StateFailed, StateCancelled, StateSuperseded, StateExpired},
	// running → cancelled only while the agent waits for the token (CanCancel).
	StateRunning: {StateAwaitingCertificate, StateSucceeded, StateFailed, StateCancelled},
	// awaiting_certificate holds the CA-operator gate: a CA operator may reject, the gate
	// may expire, signing may fail, the requester may cancel while the agent waits.
	StateAwaitingCertificate: {StateInstalling, StateRejected, StateFailed, StateExpired, StateCancelled},
	StateInstalling:          {StateSucceeded, StateFailed},
	// failed → approved is a retry: a new attempt (Attempt+1) of the same job.
	StateFailed: {StateApproved},
}

// CanTransition checks from → to against the table of legal edges for any kind. Use
// CanTransitionKind when the kind is known: it is stricter. A state never transitions to
// itself; a repeated report is a duplicate for the caller to drop, not a transition.
func CanTransition(from, to State) error {
	if err := knownStates(from, to); err != nil {
		return err
	}
	if !slices.Contains(edges[from], to) {
		return illegal(from, to, "")
	}
	return nil
}

// CanTransitionKind checks from → to for a job of the given kind: revoke never passes
// dispatched, kinds without a certificate never pass awaiting_certificate or installing,
// issue and renew never skip them.
func CanTransitionKind(kind Kind, from, to State) error {
	if !KnownKind(kind) {
		return errorf(CodeInvalidInput, "unknown job kind %q (known: %s)", kind, joinKinds())
	}
	if err := CanTransition(from, to); err != nil {
		return err
	}
	if why := kindForbids(kind, from, to); why != "" {
		return illegal(from, to, why)
	}
	return nil
}

// kindForbids returns why a table edge does not apply to kind, or "" when it does.
func kindForbids(kind Kind, from, to State) string {
	certStates := func(s State) bool { return s == StateAwaitingCertificate || s == StateInstalling }
	switch {
	case kind == KindRevoke && (from == StateDispatched || to == StateDispatched):
		return "revoke runs on the coordinator and is never dispatched"
	case kind == KindRevoke && from == StateApproved && to == StateFailed:
		return "revoke is never dispatched, so it cannot fail to be"
	case kind == KindRevoke && from == StateRunning && to == StateCancelled:
		return "revoke runs on the coordinator and is not cancelled once it runs"
	case kind == KindRevoke && to == StateSuperseded:
		return "revoke has no target agent and is never superseded"
	// A recover_key job may also end with a PKCS#12 an officer writes on their own
	// machine: the officer's delivery runs it, and nothing is dispatched.
	case kind != KindRevoke && kind != KindRecoverKey && from == StateApproved && to == StateRunning:
		return "a " + string(kind) + " job runs on an agent and must be dispatched first"
	case !NeedsCertificate(kind) && (certStates(from) || certStates(to)):
		return "a " + string(kind) + " job produces no certificate"
	case NeedsCertificate(kind) && from == StateRunning && to == StateSucceeded:
		return "a " + string(kind) + " job must pass awaiting_certificate and installing"
	}
	return ""
}

func illegal(from, to State, why string) *Error {
	msg := "illegal transition from " + string(from) + " to " + string(to)
	switch {
	case why != "":
		msg += ": " + why
	case from == to:
		msg += ": a state does not transition to itself"
	case Terminal(from) && from != StateFailed:
		msg += ": " + string(from) + " is terminal"
	default:
		var next []string
		for _, s := range edges[from] {
			next = append(next, string(s))
		}
		msg += " (from " + string(from) + " only to " + strings.Join(next, ", ") + ")"
	}
	return &Error{Code: CodeIllegalTransition, Msg: msg}
}

func knownStates(ss ...State) error {
	for _, s := range ss {
		if !KnownState(s) {
			var names []string
			for _, k := range States() {
				names = append(names, string(k))
			}
			return errorf(CodeInvalidInput, "unknown job state %q (known: %s)", s, strings.Join(names, ", "))
		}
	}
	return nil
}

func joinKinds() string {
	var names []string
	for _, k := range Kinds() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}
