package jobs

import (
	"slices"
	"testing"
)

// The names are DESIGN.md's and go on the wire: a rename must fail here.
func TestNames(t *testing.T) {
	kinds := []Kind{"issue", "csr", "install_certificate", "renew", "unblock_pin", "wipe", "inventory", "revoke",
		"server_keygen", "recover_key", "register_certificate"}
	states := []State{"pending_approval", "approved", "dispatched", "running", "awaiting_certificate", "installing",
		"succeeded", "failed", "rejected", "cancelled", "superseded", "expired"}
	steps := []Step{"waiting_for_token", "token_found", "initialising", "key_generated", "key_imported", "csr_sent", "certificate_written", "verified"}
	if !slices.Equal(Kinds(), kinds) || !slices.Equal(States(), states) || !slices.Equal(Steps(), steps) {
		t.Fatalf("names drifted:\n%v\n%v\n%v", Kinds(), States(), Steps())
	}
}

func TestStateClasses(t *testing.T) {
	terminal := []State{StateSucceeded, StateFailed, StateRejected, StateCancelled, StateSuperseded, StateExpired}
	started := []State{StateRunning, StateAwaitingCertificate, StateInstalling}
	open := []State{StatePendingApproval, StateApproved, StateDispatched}
	for _, s := range States() {
		if Terminal(s) != slices.Contains(terminal, s) || Started(s) != slices.Contains(started, s) || Open(s) != slices.Contains(open, s) {
			t.Errorf("%s: terminal %v started %v open %v", s, Terminal(s), Started(s), Open(s))
		}
		// Every state is exactly one of the three.
		if n := btoi(Terminal(s)) + btoi(Started(s)) + btoi(Open(s)); n != 1 {
			t.Errorf("%s is in %d classes", s, n)
		}
	}
	if KnownState("") || KnownKind("") || KnownStep("") {
		t.Error("empty name is known")
	}
}

func TestKindClasses(t *testing.T) {
	for _, k := range Kinds() {
		if NeedsCertificate(k) != (k == KindIssue || k == KindRenew) {
			t.Errorf("NeedsCertificate(%s) = %v", k, NeedsCertificate(k))
		}
		if OnAgent(k) != (k != KindRevoke) {
			t.Errorf("OnAgent(%s) = %v", k, OnAgent(k))
		}
	}
	if OnAgent("enroll") {
		t.Error("unknown kind runs on an agent")
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
