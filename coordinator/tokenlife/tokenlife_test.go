package tokenlife_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

// TestTable checks every pair of states against the table as the package documents it.
func TestTable(t *testing.T) {
	t.Parallel()
	A, S, L, X, D, R, P, F := tokenlife.Active, tokenlife.Suspended, tokenlife.Lost, tokenlife.Stolen, tokenlife.Damaged,
		tokenlife.Retired, tokenlife.Replaced, tokenlife.Found
	allowed := map[tokenlife.State][]tokenlife.State{
		A: {S, L, X, D, R, P},
		S: {A, L, X, D, R, P}, // temporarily lost may become lost or stolen directly
		L: {X, P, F},
		X: {P, F},
		D: {R, P},
		F: {L, X, R, P}, // active only through a wipe (Wiped)
	}
	for _, from := range tokenlife.States() {
		for _, to := range tokenlife.States() {
			tr, err := tokenlife.Check(from, to)
			want := slices.Contains(allowed[from], to)
			if (err == nil) != want {
				t.Errorf("%s -> %s: %v, want allowed=%v", from, to, err, want)
				continue
			}
			if err != nil {
				if !errors.Is(err, tokenlife.ErrIllegalTransition) || !strings.Contains(err.Error(), string(to)) {
					t.Errorf("%s -> %s: %v", from, to, err)
				}
				continue
			}
			if tr.From != from || tr.To != to {
				t.Errorf("%s -> %s: transition %+v", from, to, tr)
			}
		}
		if tokenlife.Final(from) != (len(allowed[from]) == 0) {
			t.Errorf("Final(%s) = %v", from, tokenlife.Final(from))
		}
	}
	if _, err := tokenlife.Check("misplaced", A); err == nil {
		t.Error("an unknown state accepted")
	}
}

// TestEffects: what entering each state does to the token's certificates, with the RFC
// 5280 reason chosen.
func TestEffects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		from, to tokenlife.State
		effect   tokenlife.CertEffect
		reason   int
	}{
		{tokenlife.Active, tokenlife.Suspended, tokenlife.Hold, ca.ReasonCertificateHold},
		{tokenlife.Suspended, tokenlife.Active, tokenlife.Release, 0},
		{tokenlife.Active, tokenlife.Lost, tokenlife.Revoke, ca.ReasonKeyCompromise},
		{tokenlife.Suspended, tokenlife.Lost, tokenlife.Revoke, ca.ReasonKeyCompromise},
		{tokenlife.Suspended, tokenlife.Stolen, tokenlife.Revoke, ca.ReasonKeyCompromise},
		{tokenlife.Lost, tokenlife.Stolen, tokenlife.Revoke, ca.ReasonKeyCompromise},
		{tokenlife.Active, tokenlife.Damaged, tokenlife.Revoke, ca.ReasonCessationOfOperation},
		{tokenlife.Damaged, tokenlife.Retired, tokenlife.Revoke, ca.ReasonCessationOfOperation},
		{tokenlife.Active, tokenlife.Replaced, tokenlife.Revoke, ca.ReasonSuperseded},
		{tokenlife.Lost, tokenlife.Found, tokenlife.Keep, 0},
		{tokenlife.Stolen, tokenlife.Found, tokenlife.Keep, 0},
		{tokenlife.Found, tokenlife.Retired, tokenlife.Revoke, ca.ReasonCessationOfOperation},
	} {
		tr, err := tokenlife.Check(tc.from, tc.to)
		if err != nil || tr.Effect != tc.effect || tr.Reason != tc.reason {
			t.Errorf("%s -> %s: %+v, %v; want %s reason %d", tc.from, tc.to, tr, err, tc.effect, tc.reason)
		}
	}
}

func TestIssuableAndRequests(t *testing.T) {
	t.Parallel()
	for _, s := range tokenlife.States() {
		err := tokenlife.Issuable("T1", s)
		if (err == nil) != (s == tokenlife.Active) {
			t.Errorf("Issuable(%s) = %v", s, err)
		}
		if err != nil && (!errors.Is(err, tokenlife.ErrNotActive) || !strings.Contains(err.Error(), "T1 is "+string(s))) {
			t.Errorf("Issuable(%s) = %v", s, err)
		}
		if err := tokenlife.TemporaryAllowed("T1", s); (err == nil) != (s == tokenlife.Suspended) {
			t.Errorf("TemporaryAllowed(%s) = %v", s, err)
		} else if err != nil && !errors.Is(err, tokenlife.ErrNotSuspended) {
			t.Errorf("TemporaryAllowed(%s) code: %v", s, err)
		}
		wantReplace := s != tokenlife.Retired && s != tokenlife.Replaced
		if err := tokenlife.ReplaceAllowed("T1", s); (err == nil) != wantReplace {
			t.Errorf("ReplaceAllowed(%s) = %v", s, err)
		}
	}
	if err := tokenlife.Issuable("T1", ""); err != nil {
		t.Errorf("a token never moved is active: %v", err)
	}
	if err := tokenlife.Issuable("T1", tokenlife.Suspended); !strings.Contains(err.Error(), "temporary token") {
		t.Errorf("a suspended token's refusal names the way out: %v", err)
	}
}

// TestFound: a found token becomes active only through a wipe, keeping its certificates
// as they are, and its refusals say so.
func TestFound(t *testing.T) {
	t.Parallel()
	for _, s := range tokenlife.States() {
		tr, ok := tokenlife.Wiped(s)
		if ok != (s == tokenlife.Found) {
			t.Errorf("Wiped(%s) = %v", s, ok)
		}
		if ok && (tr.From != tokenlife.Found || tr.To != tokenlife.Active || tr.Effect != tokenlife.Keep) {
			t.Errorf("Wiped(found) = %+v", tr)
		}
	}
	if _, err := tokenlife.Check(tokenlife.Found, tokenlife.Active); err == nil || !strings.Contains(err.Error(), "wipe") {
		t.Errorf("found -> active by hand: %v", err)
	}
	if err := tokenlife.Issuable("T1", tokenlife.Found); err == nil || !strings.Contains(err.Error(), "wipe it first") {
		t.Errorf("Issuable(found) = %v", err)
	}
}

// TestJobAllowed: which jobs a token takes in each state, the rule that refuses them at
// request time and cancels them when the token leaves active.
func TestJobAllowed(t *testing.T) {
	t.Parallel()
	wipeOK := []tokenlife.State{tokenlife.Active, tokenlife.Found, tokenlife.Damaged, tokenlife.Retired, tokenlife.Replaced}
	for _, s := range tokenlife.States() {
		for _, k := range jobs.Kinds() {
			var want bool
			switch {
			case s == tokenlife.Active, k == jobs.KindRevoke, k == jobs.KindInventory:
				want = true
			case k == jobs.KindWipe:
				want = slices.Contains(wipeOK, s)
			}
			err := tokenlife.JobAllowed("T1", s, k)
			if (err == nil) != want {
				t.Errorf("JobAllowed(%s, %s) = %v, want allowed=%v", s, k, err, want)
			}
			if err != nil && (!errors.Is(err, tokenlife.ErrNotActive) || !strings.Contains(err.Error(), "T1 is "+string(s))) {
				t.Errorf("JobAllowed(%s, %s) = %v", s, k, err)
			}
		}
	}
	if err := tokenlife.JobAllowed("T1", "", jobs.KindIssue); err != nil {
		t.Errorf("a token never moved takes every job: %v", err)
	}
}
