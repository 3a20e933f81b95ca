// Package tokenlife holds the rules of a token's life cycle as pure functions, like
// packages jobs and rollout: the states a token is in, the transition table every change
// is checked against, what each transition does to the token's certificates (kept, put on
// hold, released from hold, revoked with which RFC 5280 reason), whether a token may be
// issued to and which jobs it takes, and when a temporary token or a replacement may be
// requested. Nothing here touches storage, the clock or the network.
//
// Decisions fixed here (the store, service, API and CLI rely on them):
//
//   - A token the help desk never moved is active. Every change names a reason.
//   - suspended (left at home, temporarily lost) puts the token's valid certificates on
//     hold: RFC 5280's certificateHold (6), the one reversible reason. Reinstating
//     (suspended → active) releases the hold: on a full CRL, as the built-in CA publishes,
//     the certificate simply leaves the list (removeFromCRL, 8, is for delta CRLs only).
//   - lost and stolen revoke with keyCompromise (1): RFC 5280 5.3.1 uses it when the
//     private key "is known to have been or is suspected of being compromised", and a
//     token out of its holder's hands is exactly that suspicion; its PIN slows an attacker
//     down, it does not make the key safe. A certificate already on hold moves from hold
//     to keyCompromise (RFC 5280 3.3 lets a held certificate be revoked for good) and
//     keeps the hold's revocation time: the token has been out of its holder's control
//     since then, and relying parties should treat signatures from then on as suspect.
//   - damaged and retired revoke with cessationOfOperation (5): the key is destroyed or no
//     longer needed, not compromised. replaced revokes with superseded (4).
//   - A suspended token may move on to lost or stolen (and to any state active may reach):
//     temporarily lost becomes permanently lost without a detour through active.
//   - lost, stolen and damaged tokens can only be replaced (damaged also retired; lost and
//     stolen also found); retired and replaced are final.
//   - found: a lost or stolen token back in the organisation's hands. Its certificates
//     were revoked for key compromise and stay so, and whatever was on it is suspect (it
//     was out of control for a while), so it is not simply active again: it takes nothing
//     but a wipe (and inventory). The wipe's success makes it active, a blank token to be
//     issued again as a new device (Wiped); otherwise it is retired, replaced if a
//     replacement was already on its way, or lost or stolen again.
//   - Only an active token may be issued to; every other state refuses a job on it, when
//     it is requested and again when its certificate would be signed.
//   - Entering any state but active cancels the open jobs on the token that the new state
//     does not take (JobAllowed): the same rule refuses them at request time.
//   - A temporary token stands in for a suspended one and ends (retired, its certificates
//     revoked with cessationOfOperation) when the original is reinstated or replaced.
package tokenlife

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// State is where a token is in its life cycle.
type State string

// States.
const (
	Active    State = "active"
	Suspended State = "suspended" // temporarily lost, left at home: certificates on hold
	Lost      State = "lost"
	Stolen    State = "stolen"
	Damaged   State = "damaged"
	Retired   State = "retired"  // no longer used; final
	Replaced  State = "replaced" // a replacement was issued; final
	Found     State = "found"    // a lost or stolen token back: to be wiped or retired
)

var states = []State{Active, Suspended, Lost, Stolen, Damaged, Retired, Replaced, Found}

// States lists every state, active first.
func States() []State { return slices.Clone(states) }

// Valid reports whether s is a known state.
func (s State) Valid() bool { return slices.Contains(states, s) }

// Final reports whether no transition leaves s.
func Final(s State) bool { return len(table[s]) == 0 }

// CertEffect is what a transition does to the token's certificates.
type CertEffect int

// Effects.
const (
	// Keep leaves the certificates as they are.
	Keep CertEffect = iota
	// Hold puts every valid certificate on hold (certificateHold).
	Hold
	// Release lifts the hold of every certificate on hold; revoked ones stay revoked.
	Release
	// Revoke revokes every valid or held certificate with the transition's Reason.
	Revoke
)

func (e CertEffect) String() string {
	switch e {
	case Hold:
		return "hold"
	case Release:
		return "release"
	case Revoke:
		return "revoke"
	}
	return "keep"
}

// Transition is one allowed move and its effect on the token's certificates.
type Transition struct {
	From, To State
	Effect   CertEffect
	Reason   int // RFC 5280 CRL reason when Effect is Hold or Revoke
}

// entering is the effect of entering each state.
var entering = map[State]Transition{
	Active:    {To: Active, Effect: Release},
	Suspended: {To: Suspended, Effect: Hold, Reason: ca.ReasonCertificateHold},
	Lost:      {To: Lost, Effect: Revoke, Reason: ca.ReasonKeyCompromise},
	Stolen:    {To: Stolen, Effect: Revoke, Reason: ca.ReasonKeyCompromise},
	Damaged:   {To: Damaged, Effect: Revoke, Reason: ca.ReasonCessationOfOperation},
	Retired:   {To: Retired, Effect: Revoke, Reason: ca.ReasonCessationOfOperation},
	Replaced:  {To: Replaced, Effect: Revoke, Reason: ca.ReasonSuperseded},
	// Its certificates stay revoked (keyCompromise): finding the token does not undo the
	// suspicion.
	Found: {To: Found, Effect: Keep},
}

// table is the transition table: for each state, the states it may move to.
var table = map[State][]State{
	Active:    {Suspended, Lost, Stolen, Damaged, Retired, Replaced},
	Suspended: {Active, Lost, Stolen, Damaged, Retired, Replaced},
	Lost:      {Stolen, Replaced, Found},
	Stolen:    {Replaced, Found},
	Damaged:   {Retired, Replaced},
	Retired:   nil,
	Replaced:  nil,
	// found → active is not a move anyone makes: a wipe's success makes it (Wiped).
	Found: {Lost, Stolen, Retired, Replaced},
}

// Next lists the states s may move to.
func Next(s State) []State { return slices.Clone(table[s]) }

// Check returns the transition from → to, or an *Error with CodeIllegalTransition saying
// where from may go instead.
func Check(from, to State) (Transition, error) {
	if !from.Valid() {
		return Transition{}, errorf(CodeInvalidInput, "unknown token state %q (known: %s)", from, list(states))
	}
	if !to.Valid() {
		return Transition{}, errorf(CodeInvalidInput, "unknown token state %q (known: %s)", to, list(states))
	}
	if !slices.Contains(table[from], to) {
		if from == Found && to == Active {
			return Transition{}, errorf(CodeIllegalTransition, "a found token cannot become active by itself: wipe it (a wipe job), which makes it a blank active token, or retire it (it may also become %s)", list(table[from]))
		}
		if Final(from) {
			return Transition{}, errorf(CodeIllegalTransition, "the token is %s, a final state: it cannot become %s", from, to)
		}
		return Transition{}, errorf(CodeIllegalTransition, "a %s token cannot become %s (it may become %s)", from, to, list(table[from]))
	}
	t := entering[to]
	t.From = from
	return t, nil
}

// Wiped returns the transition a wipe's success makes on a token in state from: a found
// token becomes active, blank, its certificates left revoked; ok is false for every
// other state, which a wipe does not move.
func Wiped(from State) (Transition, bool) {
	if from != Found {
		return Transition{}, false
	}
	return Transition{From: Found, To: Active, Effect: Keep}, true
}

// Issuable refuses, with CodeNotActive, a job that would put a certificate on a token in
// state s: only an active token is issued to.
func Issuable(serial string, s State) error {
	if s == Active || s == "" {
		return nil
	}
	hint := ""
	switch s {
	case Suspended:
		hint = ": reinstate it when it is back, or issue a temporary token to its holder meanwhile"
	case Lost, Stolen, Damaged:
		hint = ": replace it (tokenfleetctl token replace)"
	case Found:
		hint = ": wipe it first (a wipe job), which makes it a blank active token"
	}
	return errorf(CodeNotActive, "token %s is %s and cannot be issued to%s", serial, s, hint)
}

// JobAllowed refuses, with CodeNotActive, a job of kind k on a token in state s that the
// state does not take; the same rule cancels such jobs, open when the token enters s. An
// active token takes every job. Otherwise:
//
//   - revoke is always taken: it runs on the coordinator and only adds to the CRL.
//   - inventory is always taken: it reads the token's public objects, writes nothing and
//     uses no key.
//   - wipe is taken by a found token (its way back to use), and by a damaged, retired or
//     replaced one: erasing a token taken out of service is its proper end. A suspended,
//     lost or stolen token is out of its holder's hands: a wipe waiting for it would run
//     on whatever machine it turns up in, so the help desk declares it found (or
//     reinstates it) first.
//   - every other kind writes to the token or uses its keys (a certificate, a key, a PIN,
//     reading a certificate to register its key) and is refused (Issuable's message for
//     the kinds that put a certificate on it).
func JobAllowed(serial string, s State, k jobs.Kind) error {
	switch {
	case s == Active || s == "", k == jobs.KindRevoke, k == jobs.KindInventory:
		return nil
	case k == jobs.KindWipe:
		if s == Found || s == Damaged || s == Retired || s == Replaced {
			return nil
		}
		return errorf(CodeNotActive, "token %s is %s and takes no wipe job: it is out of its holder's hands (reinstate it, or declare it found when it is back)", serial, s)
	case k == jobs.KindUnblockPIN || k == jobs.KindRegisterCertificate:
		hint := ""
		if s == Found {
			hint = ": wipe it first (a wipe job), which makes it a blank active token"
		}
		return errorf(CodeNotActive, "token %s is %s and takes no %s job%s", serial, s, k, hint)
	}
	return Issuable(serial, s)
}

// TemporaryAllowed refuses a temporary token for an original in state s: a temporary
// token stands in for a suspended one only.
func TemporaryAllowed(serial string, s State) error {
	if s == Suspended {
		return nil
	}
	return errorf(CodeNotSuspended, "token %s is %s: a temporary token stands in for a suspended token only (suspend it first)", serial, orActive(s))
}

// ReplaceAllowed refuses the replacement of a token in state s.
func ReplaceAllowed(serial string, s State) error {
	if slices.Contains(table[orActive(s)], Replaced) {
		return nil
	}
	return errorf(CodeIllegalTransition, "token %s cannot be replaced: it is %s, a final state", serial, orActive(s))
}

func orActive(s State) State {
	if s == "" {
		return Active
	}
	return s
}

func list(ss []State) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return strings.Join(out, ", ")
}

// Code is a stable error code; the HTTP API returns it as data.
type Code string

// Error codes returned by this package.
const (
	CodeIllegalTransition Code = "illegal_transition"
	CodeInvalidInput      Code = "invalid_input"
	// CodeNotActive: a job would issue to a token that is not active.
	CodeNotActive Code = "token_not_active"
	// CodeNotSuspended: a temporary token was asked for an original that is not suspended.
	CodeNotSuspended Code = "token_not_suspended"
)

// Error is the error type of this package.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return "tokenlife: " + e.Msg }

// Is matches on the code alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrIllegalTransition = &Error{Code: CodeIllegalTransition}
	ErrNotActive         = &Error{Code: CodeNotActive}
	ErrNotSuspended      = &Error{Code: CodeNotSuspended}
)

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}
