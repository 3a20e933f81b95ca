package rollout

import (
	"slices"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// Outcome is what became of a target's job, as the brake and the progress count it.
type Outcome string

// Outcomes.
const (
	OutcomeSucceeded   Outcome = "succeeded"
	OutcomeFailed      Outcome = "failed"       // failed for a reason of the token or the agent
	OutcomeTimedOut    Outcome = "timed_out"    // the deadline or the job's expiry passed
	OutcomeRefused     Outcome = "refused"      // the coordinator (or its CA operator) refused it
	OutcomeTokenAbsent Outcome = "token_absent" // the token was not there
	OutcomeCancelled   Outcome = "cancelled"    // cancelled or superseded: counted neither way
	OutcomeOpen        Outcome = "open"         // the job has not ended
	OutcomePending     Outcome = "pending"      // no job yet
)

// Outcomes lists every outcome.
func Outcomes() []Outcome {
	return []Outcome{OutcomeSucceeded, OutcomeFailed, OutcomeTimedOut, OutcomeRefused,
		OutcomeTokenAbsent, OutcomeCancelled, OutcomeOpen, OutcomePending}
}

// FailureOutcomes lists the outcomes that are failures, those a brake may count.
func FailureOutcomes() []Outcome {
	return []Outcome{OutcomeFailed, OutcomeTimedOut, OutcomeRefused, OutcomeTokenAbsent}
}

// Valid reports whether o is a known outcome.
func (o Outcome) Valid() bool { return slices.Contains(Outcomes(), o) }

// Failure reports whether o is one of the failure outcomes.
func (o Outcome) Failure() bool { return slices.Contains(FailureOutcomes(), o) }

// Error codes by the outcome they mean. The codes are the protocol's (errors.json); they
// are written out here because this package imports only the job rules.
var (
	tokenAbsentCodes = []string{"no_matching_token", "token.not_present", "token.not_found", "token.device_removed"}
	timedOutCodes    = []string{"deadline_exceeded", "job_expired"}
	refusedCodes     = []string{"csr_rejected", "key_mismatch", "weak_key", "policy_violation", "event_not_allowed",
		"token_not_owned", "pins_unknown", "factory_pins_unknown", "unseal_failed", "agent_not_active",
		// The service fails a rollout's job at once when its target can no longer take it
		// (agent removed, holder disabled, token another holder's).
		"target_unavailable"}
)

// Classify maps a job's state and last error code to an outcome: succeeded; cancelled and
// superseded → cancelled (not counted either way); expired → timed_out unless the code is a
// token-absent one; failed → token_absent (no_matching_token, token.not_present,
// token.not_found, token.device_removed), timed_out (deadline_exceeded, job_expired),
// refused (coordinator refusals: csr_rejected, key_mismatch, weak_key, policy_violation,
// event_not_allowed, token_not_owned, pins_unknown, factory_pins_unknown, unseal_failed,
// agent_not_active, and the service's target_unavailable), failed otherwise; rejected (a CA operator refused the certificate)
// → refused; non-terminal → open; "" state → pending.
func Classify(state jobs.State, errorCode string) Outcome {
	switch state {
	case "":
		return OutcomePending
	case jobs.StateSucceeded:
		return OutcomeSucceeded
	case jobs.StateCancelled, jobs.StateSuperseded:
		return OutcomeCancelled
	case jobs.StateRejected:
		return OutcomeRefused
	case jobs.StateExpired:
		if slices.Contains(tokenAbsentCodes, errorCode) {
			return OutcomeTokenAbsent
		}
		return OutcomeTimedOut
	case jobs.StateFailed:
		return codeOutcome(errorCode)
	}
	return OutcomeOpen
}

// codeOutcome is the failure outcome an error code means.
func codeOutcome(code string) Outcome {
	switch {
	case slices.Contains(tokenAbsentCodes, code):
		return OutcomeTokenAbsent
	case slices.Contains(timedOutCodes, code):
		return OutcomeTimedOut
	case slices.Contains(refusedCodes, code), code == codeRejected:
		return OutcomeRefused
	}
	return OutcomeFailed
}

// Count is one row of the store's aggregate of a rollout's targets: how many targets of a
// wave have a job in a state with an error code ("" State: no job yet).
type Count struct {
	Wave      int
	State     jobs.State
	ErrorCode string
	N         int
}

// Tally counts the targets of one wave, or of the whole rollout, by outcome.
type Tally struct {
	Targets   int             `json:"targets"`
	Pending   int             `json:"pending"` // no job yet
	Open      int             `json:"open"`    // a job that has not ended
	Succeeded int             `json:"succeeded"`
	Cancelled int             `json:"cancelled"`
	Failures  map[Outcome]int `json:"failures"` // failed, timed_out, refused, token_absent
	ByCode    map[string]int  `json:"by_code"`  // error code → count, for failures only
}

// Executed is how many jobs ended with a result: succeeded plus every failure outcome
// (counted by the brake or not).
func (t Tally) Executed() int {
	n := t.Succeeded
	for _, f := range t.Failures {
		n += f
	}
	return n
}

// Failed is how many jobs ended in one of the outcomes os.
func (t Tally) Failed(os []Outcome) int {
	n := 0
	for _, o := range os {
		n += t.Failures[o]
	}
	return n
}

// Done is how many targets have a job that ended, whatever the outcome.
func (t Tally) Done() int { return t.Targets - t.Pending - t.Open }

func newTally() Tally {
	return Tally{Failures: map[Outcome]int{}, ByCode: map[string]int{}}
}

// failureCode is the code a failure is counted under: the job's, unless its outcome comes
// from the state rather than the code (an expiry, a rejection); then one that names the
// outcome (job_expired, rejected). codeOutcome(failureCode(s, c)) is always Classify(s, c),
// which lets the brake keep only the codes of the outcomes it counts.
func failureCode(state jobs.State, code string) string {
	switch o := Classify(state, code); {
	case codeOutcome(code) == o:
		return code
	case o == OutcomeTimedOut:
		return "job_expired"
	case o == OutcomeRefused:
		return codeRejected
	}
	return code
}

// codeRejected stands for a rejection without an error code in ByCode.
const codeRejected = "rejected"

func (t *Tally) add(c Count) {
	t.Targets += c.N
	switch o := Classify(c.State, c.ErrorCode); o {
	case OutcomePending:
		t.Pending += c.N
	case OutcomeOpen:
		t.Open += c.N
	case OutcomeSucceeded:
		t.Succeeded += c.N
	case OutcomeCancelled:
		t.Cancelled += c.N
	default:
		t.Failures[o] += c.N
		t.ByCode[failureCode(c.State, c.ErrorCode)] += c.N
	}
}

// Tallies sums the store's counts overall and per wave. perWave has waves entries, more
// when a count names a later wave; a count with a negative wave is counted overall only.
func Tallies(waves int, cs []Count) (overall Tally, perWave []Tally) {
	overall = newTally()
	perWave = make([]Tally, max(waves, 0))
	for i := range perWave {
		perWave[i] = newTally()
	}
	for _, c := range cs {
		if c.N <= 0 {
			continue
		}
		overall.add(c)
		if c.Wave < 0 {
			continue
		}
		for len(perWave) <= c.Wave {
			perWave = append(perWave, newTally())
		}
		perWave[c.Wave].add(c)
	}
	return overall, perWave
}
