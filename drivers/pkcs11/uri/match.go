package uri

import "strings"

// PKCS#11 returns fixed-width text fields padded with blanks (and some modules pad with
// NULs); callers may pass them raw, so matching ignores trailing padding on both sides.
func trimPad(s string) string { return strings.TrimRight(s, " \x00") }

func fieldMatches(want, got string) bool {
	return want == "" || trimPad(want) == trimPad(got)
}

// MatchToken reports whether a token with the given CK_TOKEN_INFO fields is selected by the
// token, manufacturer, serial and model attributes. Absent attributes match anything.
func (u *URI) MatchToken(label, manufacturer, serial, model string) bool {
	return fieldMatches(u.Token, label) &&
		fieldMatches(u.Manufacturer, manufacturer) &&
		fieldMatches(u.Serial, serial) &&
		fieldMatches(u.Model, model)
}

// MatchesLibrary reports whether a module with the given CK_INFO fields is selected by the
// library-manufacturer, library-description and library-version attributes.
// library-version "M" selects version M.0 only, as "M.m" selects M.m.
func (u *URI) MatchesLibrary(manufacturer, description string, major, minor uint8) bool {
	if !fieldMatches(u.LibraryManufacturer, manufacturer) ||
		!fieldMatches(u.LibraryDescription, description) {
		return false
	}
	if u.LibraryVersion == "" {
		return true
	}
	wantMajor, wantMinor, err := ParseVersion(u.LibraryVersion)
	if err != nil {
		// A URI built by hand rather than parsed may hold garbage: it selects nothing.
		return false
	}
	return wantMajor == major && wantMinor == minor
}

// MatchSlot reports whether a slot is selected by the slot-description, slot-manufacturer
// and slot-id attributes.
func (u *URI) MatchSlot(description, manufacturer string, id uint) bool {
	if u.SlotID != nil && *u.SlotID != id {
		return false
	}
	return fieldMatches(u.SlotDescription, description) &&
		fieldMatches(u.SlotManufacturer, manufacturer)
}

// SelectsToken reports whether the URI names a token by any token or slot attribute. A URI
// that does not (e.g. "pkcs11:" or one with only object attributes) matches every token,
// which callers that act on a single token usually want to refuse as ambiguous.
func (u *URI) SelectsToken() bool {
	return u.Token != "" || u.Manufacturer != "" || u.Serial != "" || u.Model != "" ||
		u.SlotDescription != "" || u.SlotManufacturer != "" || u.SlotID != nil
}
