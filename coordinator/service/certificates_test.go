package service_test

import (
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

func TestParseRevocationReason(t *testing.T) {
	for in, want := range map[string]int{
		"unspecified": 0, "key_compromise": 1, "keyCompromise": 1, "KeyCompromise": 1, "key-compromise": 1,
		"ca_compromise": 2, "affiliationChanged": 3, "superseded": 4, " cessation_of_operation ": 5,
		"privilegeWithdrawn": 9, "aa_compromise": 10, "1": 1, "4": 4,
	} {
		if got, err := service.ParseRevocationReason(in); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", in, got, err, want)
		}
	}
	// certificateHold cannot be lifted here, removeFromCRL is for delta CRLs, 7 is unassigned.
	for _, in := range []string{"", "lost", "certificate_hold", "certificateHold", "6", "7", "8", "11", "-1", "remove_from_crl"} {
		if _, err := service.ParseRevocationReason(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	if n := len(service.RevocationReasons()); n != 8 {
		t.Errorf("%d reason names", n)
	}
}
