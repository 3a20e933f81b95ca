package protocol

import "unicode/utf8"

// TruncateText cuts s to at most max bytes without splitting a UTF-8
// character: a text field is refused unless it is valid UTF-8 (checkText),
// so a reason or error message cut mid-character would turn a long but
// acceptable text into an invalid message. Whole characters that do not fit
// are dropped; nothing marks the cut. A string that already fits is returned
// unchanged, and max <= 0 gives "".
//
// Only a valid multi-byte sequence straddling the cut is kept whole; bytes
// that are not valid UTF-8 are cut like any byte, so callers holding text of
// unknown origin run it through strings.ToValidUTF8 first.
func TruncateText(s string, max int) string {
	if max <= 0 {
		return ""
	}
	if len(s) <= max {
		return s
	}
	// The character straddling the cut starts at most UTFMax-1 bytes before it.
	for i := max; i > 0 && i > max-utf8.UTFMax; i-- {
		if !utf8.RuneStart(s[i]) {
			continue
		}
		if i < max {
			if r, size := utf8.DecodeRuneInString(s[i:]); r != utf8.RuneError || size > 1 {
				if i+size > max {
					return s[:i]
				}
			}
		}
		break
	}
	return s[:max]
}
