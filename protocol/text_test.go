package protocol

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTruncateText(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    string
		max  int
		want string
	}{
		{"fits", "abc", 3, "abc"},
		{"ascii", "abcdef", 4, "abcd"},
		{"empty", "", 4, ""},
		{"zero max", "abc", 0, ""},
		{"negative max", "abc", -1, ""},
		{"two-byte at cut", "aé", 2, "a"},      // é is 2 bytes
		{"two-byte ends at cut", "éa", 2, "é"}, // the cut falls after é
		{"three-byte", "a€b", 3, "a"},          // € is 3 bytes
		{"three-byte one in", "€€", 4, "€"},    // cut one byte into the second €
		{"four-byte", "x😀", 4, "x"},            // 😀 is 4 bytes
		{"four-byte fits", "😀x", 4, "😀"},
		{"all multi-byte", strings.Repeat("é", 10), 5, "éé"},
		{"invalid byte kept", "a\xffbc", 2, "a\xff"},
		{"stray continuation bytes cut as bytes", "a\x80\x80\x80\x80", 3, "a\x80\x80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TruncateText(tc.s, tc.max); got != tc.want {
				t.Errorf("TruncateText(%q, %d) = %q, want %q", tc.s, tc.max, got, tc.want)
			}
		})
	}
}

// TestTruncateTextLongReason: the case that motivated the helper, a reason of
// two-byte characters over MaxTextLen, cut to a Cancel that validates.
func TestTruncateTextLongReason(t *testing.T) {
	c := Cancel{State: StateCancelled, Reason: TruncateText(strings.Repeat("é", MaxTextLen), MaxTextLen)}
	if err := c.Validate(); err != nil {
		t.Fatalf("truncated reason refused: %v", err)
	}
	if len(c.Reason) != MaxTextLen {
		t.Errorf("reason is %d bytes, want %d", len(c.Reason), MaxTextLen)
	}
}

// FuzzTruncateText: the result is a prefix within the limit; from valid
// UTF-8 it is valid UTF-8 and drops less than one whole character.
func FuzzTruncateText(f *testing.F) {
	f.Add("aé€😀", 3)
	f.Add(strings.Repeat("€", 400), MaxTextLen)
	f.Add("a\xff\x80b", 2)
	f.Fuzz(func(t *testing.T, s string, max int) {
		got := TruncateText(s, max)
		if !strings.HasPrefix(s, got) {
			t.Fatalf("%q is not a prefix of %q", got, s)
		}
		if len(got) > max && got != "" {
			t.Fatalf("%d bytes, limit %d", len(got), max)
		}
		if len(s) <= max && got != s {
			t.Fatalf("%q fits in %d bytes but was cut to %q", s, max, got)
		}
		if utf8.ValidString(s) {
			if !utf8.ValidString(got) {
				t.Fatalf("valid %q cut to invalid %q", s, got)
			}
			if max > 0 && len(s) > max && len(got) <= max-utf8.UTFMax {
				t.Fatalf("%q cut to %q: more than one character dropped", s, got)
			}
		}
	})
}
