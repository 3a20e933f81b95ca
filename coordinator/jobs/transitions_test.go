package jobs

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

type edge struct{ from, to State }

// Written out by hand, not derived from the table under test.
var wantUnion = map[edge]bool{
	{StatePendingApproval, StateApproved}:       true,
	{StatePendingApproval, StateRejected}:       true,
	{StatePendingApproval, StateCancelled}:      true,
	{StatePendingApproval, StateSuperseded}:     true,
	{StatePendingApproval, StateExpired}:        true,
	{StateApproved, StateDispatched}:            true,
	{StateApproved, StateRunning}:               true,
	{StateApproved, StateFailed}:                true,
	{StateApproved, StateCancelled}:             true,
	{StateApproved, StateSuperseded}:            true,
	{StateApproved, StateExpired}:               true,
	{StateDispatched, StateRunning}:             true,
	{StateDispatched, StateFailed}:              true,
	{StateDispatched, StateCancelled}:           true,
	{StateDispatched, StateSuperseded}:          true,
	{StateDispatched, StateExpired}:             true,
	{StateRunning, StateAwaitingCertificate}:    true,
	{StateRunning, StateSucceeded}:              true,
	{StateRunning, StateFailed}:                 true,
	{StateRunning, StateCancelled}:              true,
	{StateAwaitingCertificate, StateInstalling}: true,
	{StateAwaitingCertificate, StateRejected}:   true,
	{StateAwaitingCertificate, StateFailed}:     true,
	{StateAwaitingCertificate, StateExpired}:    true,
	{StateAwaitingCertificate, StateCancelled}:  true,
	{StateInstalling, StateSucceeded}:           true,
	{StateInstalling, StateFailed}:              true,
	{StateFailed, StateApproved}:                true,
}

var wantCertKinds = map[edge]bool{
	{StatePendingApproval, StateApproved}:       true,
	{StatePendingApproval, StateRejected}:       true,
	{StatePendingApproval, StateCancelled}:      true,
	{StatePendingApproval, StateSuperseded}:     true,
	{StatePendingApproval, StateExpired}:        true,
	{StateApproved, StateDispatched}:            true,
	{StateApproved, StateFailed}:                true,
	{StateApproved, StateCancelled}:             true,
	{StateApproved, StateSuperseded}:            true,
	{StateApproved, StateExpired}:               true,
	{StateDispatched, StateRunning}:             true,
	{StateDispatched, StateFailed}:              true,
	{StateDispatched, StateCancelled}:           true,
	{StateDispatched, StateSuperseded}:          true,
	{StateDispatched, StateExpired}:             true,
	{StateRunning, StateAwaitingCertificate}:    true,
	{StateRunning, StateFailed}:                 true,
	{StateRunning, StateCancelled}:              true,
	{StateAwaitingCertificate, StateInstalling}: true,
	{StateAwaitingCertificate, StateRejected}:   true,
	{StateAwaitingCertificate, StateFailed}:     true,
	{StateAwaitingCertificate, StateExpired}:    true,
	{StateAwaitingCertificate, StateCancelled}:  true,
	{StateInstalling, StateSucceeded}:           true,
	{StateInstalling, StateFailed}:              true,
	{StateFailed, StateApproved}:                true,
}

var wantAgentKindsWithoutCertificate = map[edge]bool{
	{StatePendingApproval, StateApproved}:   true,
	{StatePendingApproval, StateRejected}:   true,
	{StatePendingApproval, StateCancelled}:  true,
	{StatePendingApproval, StateSuperseded}: true,
	{StatePendingApproval, StateExpired}:    true,
	{StateApproved, StateDispatched}:        true,
	{StateApproved, StateFailed}:            true,
	{StateApproved, StateCancelled}:         true,
	{StateApproved, StateSuperseded}:        true,
	{StateApproved, StateExpired}:           true,
	{StateDispatched, StateRunning}:         true,
	{StateDispatched, StateFailed}:          true,
	{StateDispatched, StateCancelled}:       true,
	{StateDispatched, StateSuperseded}:      true,
	{StateDispatched, StateExpired}:         true,
	{StateRunning, StateSucceeded}:          true,
	{StateRunning, StateFailed}:             true,
	{StateRunning, StateCancelled}:          true,
	{StateFailed, StateApproved}:            true,
}

var wantRevoke = map[edge]bool{
	{StatePendingApproval, StateApproved}:  true,
	{StatePendingApproval, StateRejected}:  true,
	{StatePendingApproval, StateCancelled}: true,
	{StatePendingApproval, StateExpired}:   true,
	{StateApproved, StateRunning}:          true,
	{StateApproved, StateCancelled}:        true,
	{StateApproved, StateExpired}:          true,
	{StateRunning, StateSucceeded}:         true,
	{StateRunning, StateFailed}:            true,
	{StateFailed, StateApproved}:           true,
}

func checkCrossProduct(t *testing.T, name string, want map[edge]bool, check func(from, to State) error) {
	t.Helper()
	legal := 0
	for _, from := range States() {
		for _, to := range States() {
			err := check(from, to)
			if want[edge{from, to}] {
				legal++
				if err != nil {
					t.Errorf("%s: %s → %s: want legal, got %v", name, from, to, err)
				}
				continue
			}
			if err == nil {
				t.Errorf("%s: %s → %s: want illegal, got nil", name, from, to)
				continue
			}
			if !errors.Is(err, ErrIllegalTransition) {
				t.Errorf("%s: %s → %s: error %v is not illegal_transition", name, from, to, err)
			}
			var je *Error
			if !errors.As(err, &je) || je.Code != CodeIllegalTransition {
				t.Errorf("%s: %s → %s: error %#v has no illegal_transition code", name, from, to, err)
			}
			if msg := err.Error(); !strings.Contains(msg, string(from)) || !strings.Contains(msg, string(to)) {
				t.Errorf("%s: %s → %s: message %q does not name both states", name, from, to, msg)
			}
		}
	}
	if legal != len(want) {
		t.Errorf("%s: expected table has %d edges over known states, walked %d", name, len(want), legal)
	}
}

func TestCanTransitionCrossProduct(t *testing.T) {
	checkCrossProduct(t, "any kind", wantUnion, CanTransition)
}

func TestCanTransitionKindCrossProduct(t *testing.T) {
	for _, kind := range Kinds() {
		want := wantAgentKindsWithoutCertificate
		switch kind {
		case KindIssue, KindRenew:
			want = wantCertKinds
		case KindRevoke:
			want = wantRevoke
		case KindRecoverKey:
			// An officer's PKCS#12 delivery runs the job without a dispatch.
			want = maps.Clone(wantAgentKindsWithoutCertificate)
			want[edge{StateApproved, StateRunning}] = true
		}
		checkCrossProduct(t, string(kind), want, func(from, to State) error { return CanTransitionKind(kind, from, to) })
	}
}

func TestCanTransitionUnknown(t *testing.T) {
	tests := []struct {
		name     string
		kind     Kind
		from, to State
		wantIn   string
	}{
		{"unknown from", KindIssue, "pending", StateApproved, `"pending"`},
		{"unknown to", KindIssue, StateApproved, "done", `"done"`},
		{"empty state", KindIssue, "", StateApproved, `""`},
		{"unknown kind", "enroll", StatePendingApproval, StateApproved, `"enroll"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CanTransitionKind(tt.kind, tt.from, tt.to)
			if !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("got %v, want invalid_input", err)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("message %q does not name %s", err, tt.wantIn)
			}
		})
	}
}

func TestTerminalStatesHaveNoExitButRetry(t *testing.T) {
	for _, s := range States() {
		if !Terminal(s) {
			continue
		}
		for _, to := range States() {
			err := CanTransition(s, to)
			if (s == StateFailed && to == StateApproved) != (err == nil) {
				t.Errorf("%s → %s: got %v", s, to, err)
			}
		}
	}
}

func TestIllegalTransitionMessages(t *testing.T) {
	tests := []struct {
		kind     Kind
		from, to State
		want     string
	}{
		{KindIssue, StateSucceeded, StateRunning, "succeeded is terminal"},
		{KindIssue, StateRunning, StateRunning, "does not transition to itself"},
		{KindIssue, StateInstalling, StateCancelled, "only to succeeded, failed"},
		{KindRevoke, StateRunning, StateCancelled, "runs on the coordinator"},
		{KindIssue, StateRunning, StateSucceeded, "must pass awaiting_certificate"},
		{KindWipe, StateRunning, StateAwaitingCertificate, "produces no certificate"},
		{KindRevoke, StateApproved, StateDispatched, "never dispatched"},
		{KindCSR, StateApproved, StateRunning, "must be dispatched first"},
	}
	for _, tt := range tests {
		err := CanTransitionKind(tt.kind, tt.from, tt.to)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s %s → %s: got %v, want a message with %q", tt.kind, tt.from, tt.to, err, tt.want)
		}
	}
}
