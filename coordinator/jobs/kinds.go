package jobs

import "slices"

// Kind is what a job does. The names are the wire names. Kind, State and Step carry no
// methods (helpers are functions) so they can become aliases of the protocol package's
// types without other changes.
type Kind string

// Job kinds.
const (
	KindIssue              Kind = "issue"
	KindCSR                Kind = "csr"
	KindInstallCertificate Kind = "install_certificate"
	KindRenew              Kind = "renew"
	KindUnblockPIN         Kind = "unblock_pin"
	KindWipe               Kind = "wipe"
	KindInventory          Kind = "inventory"
	KindRevoke             Kind = "revoke" // coordinator-side (CRL); never dispatched
)

var kinds = []Kind{KindIssue, KindCSR, KindInstallCertificate, KindRenew, KindUnblockPIN, KindWipe, KindInventory, KindRevoke}

// Kinds lists every job kind.
func Kinds() []Kind { return slices.Clone(kinds) }

// KnownKind reports whether k is a known kind.
func KnownKind(k Kind) bool { return slices.Contains(kinds, k) }

// NeedsCertificate reports whether the job ends with a certificate the coordinator signs
// during the job, so it passes awaiting_certificate and installing.
func NeedsCertificate(k Kind) bool { return k == KindIssue || k == KindRenew }

// OnAgent reports whether an agent executes the job (everything but revoke).
func OnAgent(k Kind) bool { return KnownKind(k) && k != KindRevoke }

// State is where a job is in its lifecycle.
type State string

// Job states.
const (
	StatePendingApproval     State = "pending_approval"
	StateApproved            State = "approved"
	StateDispatched          State = "dispatched"
	StateRunning             State = "running"
	StateAwaitingCertificate State = "awaiting_certificate"
	StateInstalling          State = "installing"
	StateSucceeded           State = "succeeded"
	StateFailed              State = "failed"
	StateRejected            State = "rejected"
	StateCancelled           State = "cancelled"
	StateSuperseded          State = "superseded"
	StateExpired             State = "expired"
)

var states = []State{
	StatePendingApproval, StateApproved, StateDispatched, StateRunning, StateAwaitingCertificate,
	StateInstalling, StateSucceeded, StateFailed, StateRejected, StateCancelled, StateSuperseded, StateExpired,
}

// States lists every state, the lifecycle order first, then the terminal ones.
func States() []State { return slices.Clone(states) }

// KnownState reports whether s is a known state.
func KnownState(s State) bool { return slices.Contains(states, s) }

// Terminal reports whether s ends the job (failed still allows a retry, see CanRetry).
func Terminal(s State) bool {
	switch s {
	case StateSucceeded, StateFailed, StateRejected, StateCancelled, StateSuperseded, StateExpired:
		return true
	}
	return false
}

// Started reports whether work on the job has begun (running or later, not terminal).
func Started(s State) bool {
	return s == StateRunning || s == StateAwaitingCertificate || s == StateInstalling
}

// Step is progress inside a run, reported by the agent.
type Step string

// Steps, in the order a run passes them.
const (
	StepWaitingForToken    Step = "waiting_for_token"
	StepTokenFound         Step = "token_found"
	StepInitialising       Step = "initialising"
	StepKeyGenerated       Step = "key_generated"
	StepCSRSent            Step = "csr_sent"
	StepCertificateWritten Step = "certificate_written"
	StepVerified           Step = "verified"
)

var steps = []Step{StepWaitingForToken, StepTokenFound, StepInitialising, StepKeyGenerated, StepCSRSent, StepCertificateWritten, StepVerified}

// Steps lists every step in run order.
func Steps() []Step { return slices.Clone(steps) }

// KnownStep reports whether s is a known step.
func KnownStep(s Step) bool { return slices.Contains(steps, s) }

// stepRank is the step's position in run order; -1 for none or unknown.
func stepRank(s Step) int { return slices.Index(steps, s) }

// PIN purposes, as the coordinator keeps them.
const (
	PINUser = "user_pin"
	PINSO   = "so_pin"
)

// PINNeeded names the PIN of an existing token the coordinator must hold and pass on for
// a job of kind k: the SO PIN to unblock, wipe or re-initialise a token (initialise: the
// profile initialises; blank: the token has never been initialised, which needs none),
// the user PIN to log in to put a key or a certificate on it; "" for none.
func PINNeeded(k Kind, initialise, blank bool) string {
	switch k {
	case KindUnblockPIN, KindWipe:
		return PINSO
	case KindIssue, KindCSR:
		switch {
		case initialise && blank:
			return ""
		case initialise:
			return PINSO
		}
		return PINUser
	case KindRenew, KindInstallCertificate:
		return PINUser
	}
	return ""
}
