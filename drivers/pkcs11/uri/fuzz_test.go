package uri

import (
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics and that whatever it accepts survives a trip
// through String unchanged, and that String's output is a fixed point.
func FuzzParse(f *testing.F) {
	for _, tc := range rfcExamples {
		f.Add(tc.in)
	}
	for _, s := range []string{
		"pkcs11:token=a;TOKEN=b",
		"pkcs11:x-a=1?x-b=2&module-path=/usr/lib/softhsm/libsofthsm2.so",
		"pkcs11:slot-id=18446744073709551615",
		"pkcs11:object=a&b=c?pin-source=|/bin/pin",
		"pkcs11:id=%00%ff;library-version=0.255",
		"pkcs11:token=%",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := Parse(s)
		if err != nil {
			if u != nil {
				t.Fatalf("Parse(%q) returned a URI with error %v", s, err)
			}
			return
		}
		out := u.String()
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but its String %q does not parse: %v", s, out, err)
		}
		if !reflect.DeepEqual(back, u) || !back.Equal(u) {
			t.Fatalf("round trip of %q via %q:\n got  %#v\n want %#v", s, out, back, u)
		}
		if again := back.String(); again != out {
			t.Fatalf("String is not canonical: %q then %q", out, again)
		}
		if r := u.Redacted(); u.PinValue != "" && r == out {
			t.Fatalf("Redacted kept the pin-value: %q", r)
		}
	})
}
