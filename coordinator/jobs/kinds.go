package jobs

import (
	"slices"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Kind, State and Step are the protocol's types: one list of kinds, states and steps for
// the wire and the rules. The helpers here are functions, so that the protocol package
// stays free of the coordinator's rules.
type (
	Kind  = protocol.JobKind
	State = protocol.JobState
	Step  = protocol.Step
)

// Job kinds.
const (
	KindIssue              = protocol.KindIssue
	KindCSR                = protocol.KindCSR
	KindInstallCertificate = protocol.KindInstallCertificate
	KindRenew              = protocol.KindRenew
	KindUnblockPIN         = protocol.KindUnblockPIN
	KindWipe               = protocol.KindWipe
	KindInventory          = protocol.KindInventory
	KindRevoke             = protocol.KindRevoke // coordinator-side (CRL); never dispatched
	// Escrowed encryption keys: the coordinator makes the key (or recovers an archived one)
	// and the agent imports it with its certificate; register_certificate reads a
	// certificate back from a token.
	KindServerKeygen        = protocol.KindServerKeygen
	KindRecoverKey          = protocol.KindRecoverKey
	KindRegisterCertificate = protocol.KindRegisterCertificate
)

// Kinds lists every kind.
func Kinds() []Kind { return protocol.JobKinds() }

// KnownKind reports whether k is a known kind.
func KnownKind(k Kind) bool { return k.Valid() }

// NeedsCertificate reports whether jobs of kind k end with a certificate the coordinator
// signs and the agent installs (they pass awaiting_certificate and installing).
func NeedsCertificate(k Kind) bool { return k == KindIssue || k == KindRenew }

// OnAgent reports whether an agent executes the job (everything but revoke).
func OnAgent(k Kind) bool { return k.Dispatchable() }

// Job states.
const (
	StatePendingApproval     = protocol.StatePendingApproval
	StateApproved            = protocol.StateApproved
	StateDispatched          = protocol.StateDispatched
	StateRunning             = protocol.StateRunning
	StateAwaitingCertificate = protocol.StateAwaitingCertificate
	StateInstalling          = protocol.StateInstalling
	StateSucceeded           = protocol.StateSucceeded
	StateFailed              = protocol.StateFailed
	StateRejected            = protocol.StateRejected
	StateCancelled           = protocol.StateCancelled
	StateSuperseded          = protocol.StateSuperseded
	StateExpired             = protocol.StateExpired
)

// States lists every state, the lifecycle order first, then the terminal ones.
func States() []State { return protocol.JobStates() }

// KnownState reports whether s is a known state.
func KnownState(s State) bool { return s.Valid() }

// Terminal reports whether s ends the job (failed still allows a retry, see CanRetry).
func Terminal(s State) bool { return s.IsTerminal() }

// Started reports whether work on the job has begun (running or later, not terminal).
func Started(s State) bool {
	return s == StateRunning || s == StateAwaitingCertificate || s == StateInstalling
}

// Steps, in the order a run passes them.
const (
	StepWaitingForToken    = protocol.StepWaitingForToken
	StepTokenFound         = protocol.StepTokenFound
	StepInitialising       = protocol.StepInitialising
	StepKeyGenerated       = protocol.StepKeyGenerated
	StepKeyImported        = protocol.StepKeyImported
	StepCSRSent            = protocol.StepCSRSent
	StepCertificateWritten = protocol.StepCertificateWritten
	StepVerified           = protocol.StepVerified
)

// Steps lists every step in run order.
func Steps() []Step { return protocol.Steps() }

// KnownStep reports whether s is a known step.
func KnownStep(s Step) bool { return s.Valid() }

// stepRank is the step's position in run order; -1 for none or unknown.
func stepRank(s Step) int { return slices.Index(protocol.Steps(), s) }

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
	case KindRenew, KindInstallCertificate, KindServerKeygen, KindRecoverKey:
		return PINUser
	}
	return ""
}
