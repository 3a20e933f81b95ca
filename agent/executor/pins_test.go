package executor

import (
	"errors"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/protocol"
)

func TestTrivialPIN(t *testing.T) {
	tests := []struct {
		pin     string
		trivial bool
	}{
		{"0000", true},
		{"777777", true},
		{"1234", true},
		{"123456", true},
		{"987654", true},
		{"abcdef", true},
		{"FEDCBA", true},
		{"121212", true},  // two characters in a six-character PIN
		{"112211", true},  // same
		{"1212", false},   // two characters is enough below six
		{"1213", false},   // a run broken once is no run
		{"124356", false}, // three or more characters, no run
		{"9Kq4Tz", false},
		{"7", true},
	}
	for _, tc := range tests {
		if got := trivialPIN(tc.pin); got != tc.trivial {
			t.Errorf("trivialPIN(%q) = %t, want %t", tc.pin, got, tc.trivial)
		}
	}
}

func TestPINLength(t *testing.T) {
	tests := []struct {
		name             string
		policy           protocol.PINPolicy
		tokenMin, tokMax uint
		want             int
		code             protocol.ErrorCode
	}{
		{"policy minimum", protocol.PINPolicy{MinLength: 6, MaxLength: 8}, 4, 255, 6, ""},
		{"token demands more", protocol.PINPolicy{MinLength: 4, MaxLength: 12}, 8, 255, 8, ""},
		{"token reports nothing", protocol.PINPolicy{MinLength: 6, MaxLength: 8}, 0, 0, 6, ""},
		{"unavailable maximum", protocol.PINPolicy{MinLength: 6, MaxLength: 8}, 4, ^uint(0), 6, ""},
		{"no overlap", protocol.PINPolicy{MinLength: 4, MaxLength: 6}, 8, 16, 0, protocol.CodeTokenPINLenRange},
		{"token maximum below the policy minimum", protocol.PINPolicy{MinLength: 10, MaxLength: 12}, 4, 8, 0, protocol.CodeTokenPINLenRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := pinLength(tc.policy, tc.tokenMin, tc.tokMax)
			if tc.code != "" {
				if protocol.CodeOf(err) != tc.code {
					t.Fatalf("error %v, want %s", err, tc.code)
				}
				return
			}
			if err != nil || n != tc.want {
				t.Fatalf("pinLength = %d, %v; want %d", n, err, tc.want)
			}
		})
	}
}

// TestSOPINLength: the SO PIN has the dispatch's so_length (the profile's so_pin_length),
// more only when the token demands it; without so_length, the user PIN's length.
func TestSOPINLength(t *testing.T) {
	tests := []struct {
		name             string
		policy           protocol.PINPolicy
		tokenMin, tokMax uint
		want             int
		code             protocol.ErrorCode
	}{
		{"so_length", protocol.PINPolicy{MinLength: 6, MaxLength: 8, SOLength: 16}, 4, 255, 16, ""},
		{"no so_length", protocol.PINPolicy{MinLength: 6, MaxLength: 8}, 4, 255, 6, ""},
		{"token demands more", protocol.PINPolicy{MinLength: 6, MaxLength: 8, SOLength: 8}, 10, 255, 10, ""},
		{"token maximum below so_length", protocol.PINPolicy{MinLength: 6, MaxLength: 8, SOLength: 16}, 4, 12, 0, protocol.CodeTokenPINLenRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pin, err := generatePIN(soPolicy(tc.policy), tc.tokenMin, tc.tokMax)
			if tc.code != "" {
				if protocol.CodeOf(err) != tc.code {
					t.Fatalf("error %v, want %s", err, tc.code)
				}
				return
			}
			if err != nil || len(pin) != tc.want {
				t.Fatalf("SO PIN of %d characters (%v), want %d", len(pin), err, tc.want)
			}
		})
	}
}

func TestGeneratePIN(t *testing.T) {
	tests := []struct {
		name     string
		policy   protocol.PINPolicy
		alphabet string
		length   int
	}{
		{"digits", protocol.PINPolicy{MinLength: 4, MaxLength: 4, DigitsOnly: true}, digits, 4},
		{"long digits", protocol.PINPolicy{MinLength: 12, MaxLength: 16, DigitsOnly: true}, digits, 12},
		{"alphanumeric", protocol.PINPolicy{MinLength: 10, MaxLength: 10}, alphanum, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[string]bool{}
			used := map[rune]bool{}
			const draws = 2000
			for range draws {
				pin, err := generatePIN(tc.policy, 4, 255, "1357")
				if err != nil {
					t.Fatal(err)
				}
				if len(pin) != tc.length || trivialPIN(pin) || pin == "1357" {
					t.Fatalf("generated %q", pin)
				}
				for _, r := range pin {
					if !strings.ContainsRune(tc.alphabet, r) {
						t.Fatalf("%q has %q, outside the alphabet", pin, r)
					}
					used[r] = true
				}
				seen[pin] = true
			}
			// Every character of the alphabet turns up, and PINs do not repeat beyond
			// what chance allows (4 digits: 10^4 values for 2000 draws).
			if len(used) != len(tc.alphabet) {
				t.Errorf("only %d of %d characters were ever used", len(used), len(tc.alphabet))
			}
			if min := draws * 8 / 10; len(seen) < min {
				t.Errorf("%d distinct PINs in %d draws", len(seen), draws)
			}
		})
	}
	if strings.ContainsAny(alphanum, "0Oo1lI") {
		t.Error("the alphabet has look-alike characters")
	}
}

func TestSelector(t *testing.T) {
	slot := func(label, serial, model string, initialised bool) pkcs11.Slot {
		return pkcs11.Slot{ID: 7, Description: "reader", TokenPresent: true,
			Token: &pkcs11.TokenInfo{Label: label, Serial: serial, Model: model, Manufacturer: "Vendor", Initialized: initialised}}
	}
	alice := slot("alice", "A1", "Model X", true)
	blank := slot("", "", "Model X", false)
	tests := []struct {
		name  string
		sel   protocol.TokenSelector
		slot  pkcs11.Slot
		match bool
	}{
		{"serial", protocol.TokenSelector{Serial: "A1"}, alice, true},
		{"other serial", protocol.TokenSelector{Serial: "B2"}, alice, false},
		{"model", protocol.TokenSelector{Model: "Model X"}, alice, true},
		{"blank wants uninitialised", protocol.TokenSelector{Blank: true}, alice, false},
		{"blank", protocol.TokenSelector{Blank: true, Model: "Model X"}, blank, true},
		{"uri", protocol.TokenSelector{URI: "pkcs11:token=alice;manufacturer=Vendor"}, alice, true},
		{"uri slot", protocol.TokenSelector{URI: "pkcs11:slot-id=8"}, alice, false},
		{"uri and serial must both match", protocol.TokenSelector{URI: "pkcs11:token=alice", Serial: "B2"}, alice, false},
		{"no criterion", protocol.TokenSelector{}, alice, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := newSelector(tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.matches(tc.slot); got != tc.match {
				t.Fatalf("matches = %t, want %t", got, tc.match)
			}
		})
	}
	sel, err := newSelector(protocol.TokenSelector{URI: "pkcs11:token=alice?pin-value=Secret-1234"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sel.String(), "Secret-1234") {
		t.Errorf("the selector's description shows the URI's PIN: %s", sel)
	}
	if _, err := newSelector(protocol.TokenSelector{URI: "pkcs11:tokne=alice"}); protocol.CodeOf(err) != protocol.CodeBadRequest {
		t.Errorf("a bad URI: %v", err)
	}
}

func TestWireError(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		code      protocol.ErrorCode
		retryable bool
	}{
		{"token removed", &pkcs11.Error{Op: "generate key", Code: pkcs11.CodeDeviceRemoved}, protocol.CodeTokenDeviceRemoved, true},
		{"token absent", &pkcs11.Error{Op: "find token", Code: pkcs11.CodeNotPresent}, protocol.CodeTokenNotPresent, true},
		{"PIN locked", &pkcs11.Error{Op: "login", Code: pkcs11.CodePINLocked}, protocol.CodeTokenPINLocked, false},
		{"session trouble", &pkcs11.Error{Op: "sign", Code: pkcs11.CodeSessionError}, protocol.CodeTokenSessionError, true},
		{"protocol error", protocol.NewError(protocol.CodeDeadlineExceeded, "late"), protocol.CodeDeadlineExceeded, true},
		{"anything else", errors.New("disk on fire\nsecond line"), protocol.CodeInternal, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := wireError(tc.err)
			if e.Code != tc.code || e.Retryable != tc.retryable {
				t.Fatalf("wireError = %s (retryable %t), want %s (%t)", e.Code, e.Retryable, tc.code, tc.retryable)
			}
			if err := e.Validate(); err != nil {
				t.Fatalf("the wire error is not valid on the wire: %v", err)
			}
		})
	}
	long := wireError(errors.New(strings.Repeat("é", protocol.MaxTextLen)))
	if len(long.Message) > protocol.MaxTextLen || long.Validate() != nil {
		t.Errorf("a long message is not cut to the limit: %d bytes", len(long.Message))
	}
}
