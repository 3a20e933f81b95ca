package uri

import "testing"

func TestMatchToken(t *testing.T) {
	tests := []struct {
		uri                                string
		label, manufacturer, serial, model string
		want                               bool
	}{
		{"pkcs11:", "any", "m", "s", "x", true},
		{"pkcs11:token=alpha", "alpha", "m", "s", "x", true},
		{"pkcs11:token=alpha", "alpha                           ", "m", "s", "x", true},
		{"pkcs11:token=alpha", "alpha\x00\x00", "m", "s", "x", true},
		{"pkcs11:token=alpha", "Alpha", "m", "s", "x", false},
		{"pkcs11:token=alpha", "alphabet", "m", "s", "x", false},
		{"pkcs11:serial=0a1b;manufacturer=SoftHSM%20project", "t", "SoftHSM project", "0a1b", "x", true},
		{"pkcs11:serial=0a1b;manufacturer=SoftHSM%20project", "t", "SoftHSM project", "0a1c", "x", false},
		{"pkcs11:model=SoftHSM%20v2", "t", "m", "s", "SoftHSM v2", true},
		{"pkcs11:model=SoftHSM%20v2", "t", "m", "s", "SoftHSM v3", false},
		{"pkcs11:object=k;type=private", "t", "m", "s", "x", true},
	}
	for _, tc := range tests {
		t.Run(tc.uri+"/"+tc.label, func(t *testing.T) {
			u, err := Parse(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.MatchToken(tc.label, tc.manufacturer, tc.serial, tc.model); got != tc.want {
				t.Fatalf("MatchToken = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMatchesLibrary(t *testing.T) {
	tests := []struct {
		uri          string
		manuf, desc  string
		major, minor uint8
		want         bool
	}{
		{"pkcs11:", "a", "b", 1, 2, true},
		{"pkcs11:library-version=2.6", "a", "b", 2, 6, true},
		{"pkcs11:library-version=2.6", "a", "b", 2, 7, false},
		{"pkcs11:library-version=2", "a", "b", 2, 0, true},
		{"pkcs11:library-version=2", "a", "b", 2, 1, false},
		{"pkcs11:library-manufacturer=SoftHSM", "SoftHSM                         ", "b", 2, 6, true},
		{"pkcs11:library-manufacturer=SoftHSM", "OpenSC Project", "b", 2, 6, false},
		{"pkcs11:library-description=Implementation%20of%20PKCS11", "SoftHSM", "Implementation of PKCS11", 2, 6, true},
		{"pkcs11:library-description=Implementation%20of%20PKCS11", "SoftHSM", "Other", 2, 6, false},
	}
	for _, tc := range tests {
		t.Run(tc.uri, func(t *testing.T) {
			u, err := Parse(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.MatchesLibrary(tc.manuf, tc.desc, tc.major, tc.minor); got != tc.want {
				t.Fatalf("MatchesLibrary = %v, want %v", got, tc.want)
			}
		})
	}
	// A URI assembled by hand with an invalid version selects nothing rather than anything.
	bad := &URI{LibraryVersion: "x"}
	if bad.MatchesLibrary("a", "b", 0, 0) {
		t.Fatal("invalid library version matched")
	}
}

func TestMatchSlot(t *testing.T) {
	tests := []struct {
		uri         string
		desc, manuf string
		id          uint
		want        bool
	}{
		{"pkcs11:", "d", "m", 3, true},
		{"pkcs11:slot-id=3", "d", "m", 3, true},
		{"pkcs11:slot-id=3", "d", "m", 4, false},
		{"pkcs11:slot-description=Sun%20Metaslot", "Sun Metaslot   ", "m", 4, true},
		{"pkcs11:slot-description=Sun%20Metaslot", "Other", "m", 4, false},
		{"pkcs11:slot-manufacturer=ACME", "d", "ACME", 4, true},
		{"pkcs11:slot-manufacturer=ACME", "d", "Other", 4, false},
	}
	for _, tc := range tests {
		t.Run(tc.uri, func(t *testing.T) {
			u, err := Parse(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.MatchSlot(tc.desc, tc.manuf, tc.id); got != tc.want {
				t.Fatalf("MatchSlot = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSelectsToken(t *testing.T) {
	tests := []struct {
		uri  string
		want bool
	}{
		{"pkcs11:", false},
		{"pkcs11:object=k;type=cert?module-path=/m.so", false},
		{"pkcs11:library-manufacturer=x", false},
		{"pkcs11:token=t", true},
		{"pkcs11:serial=s", true},
		{"pkcs11:manufacturer=m", true},
		{"pkcs11:model=m", true},
		{"pkcs11:slot-id=0", true},
		{"pkcs11:slot-description=d", true},
		{"pkcs11:slot-manufacturer=d", true},
	}
	for _, tc := range tests {
		u, err := Parse(tc.uri)
		if err != nil {
			t.Fatal(err)
		}
		if got := u.SelectsToken(); got != tc.want {
			t.Errorf("%s: SelectsToken = %v, want %v", tc.uri, got, tc.want)
		}
	}
}
