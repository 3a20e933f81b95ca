package rollout

import (
	"maps"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		state jobs.State
		code  string
		want  Outcome
	}{
		{"", "", OutcomePending},
		{jobs.StateSucceeded, "", OutcomeSucceeded},
		{jobs.StateCancelled, "", OutcomeCancelled},
		{jobs.StateSuperseded, "", OutcomeCancelled},
		{jobs.StateRejected, "", OutcomeRefused},
		{jobs.StateExpired, "", OutcomeTimedOut},
		{jobs.StateExpired, "job_expired", OutcomeTimedOut},
		{jobs.StateExpired, "no_matching_token", OutcomeTokenAbsent},
		{jobs.StateExpired, "token.not_present", OutcomeTokenAbsent},
		{jobs.StateFailed, "no_matching_token", OutcomeTokenAbsent},
		{jobs.StateFailed, "token.not_present", OutcomeTokenAbsent},
		{jobs.StateFailed, "token.not_found", OutcomeTokenAbsent},
		{jobs.StateFailed, "token.device_removed", OutcomeTokenAbsent},
		{jobs.StateFailed, "deadline_exceeded", OutcomeTimedOut},
		{jobs.StateFailed, "job_expired", OutcomeTimedOut},
		{jobs.StateFailed, "csr_rejected", OutcomeRefused},
		{jobs.StateFailed, "key_mismatch", OutcomeRefused},
		{jobs.StateFailed, "weak_key", OutcomeRefused},
		{jobs.StateFailed, "policy_violation", OutcomeRefused},
		{jobs.StateFailed, "event_not_allowed", OutcomeRefused},
		{jobs.StateFailed, "token_not_owned", OutcomeRefused},
		{jobs.StateFailed, "pins_unknown", OutcomeRefused},
		{jobs.StateFailed, "factory_pins_unknown", OutcomeRefused},
		{jobs.StateFailed, "unseal_failed", OutcomeRefused},
		{jobs.StateFailed, "agent_not_active", OutcomeRefused},
		{jobs.StateFailed, "target_unavailable", OutcomeRefused},
		{jobs.StateFailed, "token.device_error", OutcomeFailed},
		{jobs.StateFailed, "token.pin_locked", OutcomeFailed},
		{jobs.StateFailed, "", OutcomeFailed},
		{jobs.StatePendingApproval, "", OutcomeOpen},
		{jobs.StateApproved, "", OutcomeOpen},
		{jobs.StateDispatched, "", OutcomeOpen},
		{jobs.StateRunning, "", OutcomeOpen},
		{jobs.StateAwaitingCertificate, "", OutcomeOpen},
		{jobs.StateInstalling, "", OutcomeOpen},
	} {
		if got := Classify(tt.state, tt.code); got != tt.want {
			t.Errorf("Classify(%q, %q) = %s, want %s", tt.state, tt.code, got, tt.want)
		}
	}
	// Every job state has an outcome, and a terminal one is never open.
	for _, s := range jobs.States() {
		if o := Classify(s, ""); o == OutcomePending || (o == OutcomeOpen) == jobs.Terminal(s) {
			t.Errorf("%s → %s", s, o)
		}
	}
}

// The brake keeps the codes of the outcomes it counts by the code alone: that must give
// the outcome the job was counted under.
func TestFailureCodeKeepsTheOutcome(t *testing.T) {
	t.Parallel()
	codes := []string{"", "job_expired", "deadline_exceeded", "token.not_present", "csr_rejected", "token.device_error", "rejected"}
	for _, s := range jobs.States() {
		for _, c := range codes {
			o := Classify(s, c)
			if !o.Failure() {
				continue
			}
			if got := codeOutcome(failureCode(s, c)); got != o {
				t.Errorf("%s/%q: counted as %s, its code %q says %s", s, c, o, failureCode(s, c), got)
			}
		}
	}
}

func TestTallies(t *testing.T) {
	t.Parallel()
	counts := []Count{
		{Wave: 0, State: jobs.StateSucceeded, N: 3},
		{Wave: 0, State: jobs.StateFailed, ErrorCode: "token.device_error", N: 2},
		{Wave: 0, State: jobs.StateExpired, N: 1},
		{Wave: 1, State: "", N: 10},
		{Wave: 1, State: jobs.StateRunning, N: 4},
		{Wave: 1, State: jobs.StateCancelled, N: 1},
		{Wave: 1, State: jobs.StateFailed, ErrorCode: "no_matching_token", N: 2},
		{Wave: 3, State: jobs.StateRejected, N: 1},
		{Wave: 2, State: jobs.StateSucceeded, N: 0},
	}
	overall, per := Tallies(3, counts)
	if len(per) != 4 {
		t.Fatalf("%d waves, want 4 (a count names wave 3)", len(per))
	}
	w0 := per[0]
	if w0.Targets != 6 || w0.Succeeded != 3 || w0.Executed() != 6 || w0.Done() != 6 ||
		!maps.Equal(w0.Failures, map[Outcome]int{OutcomeFailed: 2, OutcomeTimedOut: 1}) ||
		!maps.Equal(w0.ByCode, map[string]int{"token.device_error": 2, "job_expired": 1}) {
		t.Errorf("wave 0: %+v", w0)
	}
	w1 := per[1]
	if w1.Targets != 17 || w1.Pending != 10 || w1.Open != 4 || w1.Cancelled != 1 || w1.Executed() != 2 || w1.Done() != 3 ||
		w1.Failures[OutcomeTokenAbsent] != 2 {
		t.Errorf("wave 1: %+v", w1)
	}
	if per[2].Targets != 0 || per[2].Failures == nil || per[3].Failures[OutcomeRefused] != 1 || per[3].ByCode["rejected"] != 1 {
		t.Errorf("waves 2 and 3: %+v %+v", per[2], per[3])
	}
	if overall.Targets != 24 || overall.Pending != 10 || overall.Open != 4 || overall.Succeeded != 3 || overall.Cancelled != 1 ||
		overall.Executed() != 9 || overall.Failed(DefaultBrakeOutcomes()) != 6 || overall.Failed([]Outcome{OutcomeFailed}) != 2 {
		t.Errorf("overall: %+v", overall)
	}
	if o, per := Tallies(0, nil); len(per) != 0 || o.Targets != 0 || o.Failures == nil || o.ByCode == nil {
		t.Errorf("empty: %+v %v", o, per)
	}
}
