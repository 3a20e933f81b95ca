package store

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// idEncoding is lower-case base32 without padding: URL-safe, case-insensitive-safe and
// easy to read out over the phone.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns a random ID of 128 bits (26 characters).
func newID() string { return randomString(16) }

func randomString(nbytes int) string {
	b := make([]byte, nbytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return idEncoding.EncodeToString(b)
}

// checkID accepts IDs that are safe in URLs, routing keys and queue names.
func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%s: empty ID: %w", what, ErrInvalid)
	}
	if len(id) > 128 {
		return fmt.Errorf("%s: ID longer than 128 characters: %w", what, ErrInvalid)
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("%s: ID %q: only letters, digits, '-', '_' and '.' are allowed: %w", what, id, ErrInvalid)
		}
	}
	return nil
}

// required checks that the named fields are not empty.
func required(what string, fields ...string) error {
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i+1] == "" {
			return fmt.Errorf("%s: %s is required: %w", what, fields[i], ErrInvalid)
		}
	}
	return nil
}

// checkJSON accepts empty (stored as the default) or well-formed JSON.
func checkJSON(what string, raw []byte) error {
	if len(raw) > 0 && !json.Valid(raw) {
		return fmt.Errorf("%s: not valid JSON: %w", what, ErrInvalid)
	}
	return nil
}

// limit returns the page size to query, or an error for a negative one.
func (p Page) limit() (int, error) {
	switch {
	case p.Limit < 0:
		return 0, fmt.Errorf("page limit %d is negative: %w", p.Limit, ErrInvalid)
	case p.Limit == 0:
		return DefaultPageLimit, nil
	case p.Limit > MaxPageLimit:
		return MaxPageLimit, nil
	}
	return p.Limit, nil
}

// Cursors are opaque to callers: the sort key of the last row returned, base64url-encoded.
const cursorSep = "\x00"

func encodeCursor(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.Join(parts, cursorSep)))
}

func decodeCursor(c string, n int) ([]string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, fmt.Errorf("malformed page cursor: %w", ErrInvalid)
	}
	parts := strings.Split(string(raw), cursorSep)
	if len(parts) != n {
		return nil, fmt.Errorf("malformed page cursor: %w", ErrInvalid)
	}
	return parts, nil
}
