package protocol

import (
	"bytes"
	"crypto/ecdh"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// invalid reports a bad field value. Field paths are dotted JSON names
// ("token.serial", "tokens[3].label") so the message points at the spot.
func invalid(field, format string, args ...any) *Error {
	return fieldError(CodeBadRequest, field, fmt.Sprintf(format, args...))
}

// tooLarge reports a field or list over its limit with the too_large code,
// so a sender can tell "trim this" from "fix this".
func tooLarge(field string, got, limit int, unit string) *Error {
	return fieldError(CodeTooLarge, field, fmt.Sprintf("%d %s, limit %d", got, unit, limit))
}

func fieldError(code ErrorCode, field, detail string) *Error {
	e := &Error{Code: code, Retryable: code.Retryable(), field: field, detail: detail}
	e.Message = joinField(field, detail)
	return e
}

func joinField(field, detail string) string {
	if field == "" {
		return detail
	}
	return field + ": " + detail
}

// within puts a nested validation error under the field path prefix.
func within(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var pe *Error
	if !errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	c := *pe
	if pe.detail == "" {
		c.Message = joinField(prefix, pe.Message)
		return &c
	}
	switch {
	case pe.field == "":
		c.field = prefix
	case strings.HasPrefix(pe.field, "["):
		c.field = prefix + pe.field
	default:
		c.field = prefix + "." + pe.field
	}
	c.Message = joinField(c.field, c.detail)
	return &c
}

// checkText accepts valid UTF-8 without control characters: these strings
// end up in logs, UIs and audit entries, where a newline or escape sequence
// could forge a line.
func checkText(field, s string, limit int, required bool) error {
	if s == "" {
		if required {
			return invalid(field, "required")
		}
		return nil
	}
	if len(s) > limit {
		return tooLarge(field, len(s), limit, "bytes")
	}
	if !utf8.ValidString(s) {
		return invalid(field, "not valid UTF-8")
	}
	for i, r := range s {
		if unicode.IsControl(r) {
			return invalid(field, "control character %U at byte %d", r, i)
		}
	}
	return nil
}

// checkHex accepts lowercase hex of whole bytes. One spelling only, so that
// IDs compare equal as strings everywhere (database keys, dedupe, logs).
func checkHex(field, s string, maxBytes int, required bool) error {
	if s == "" {
		if required {
			return invalid(field, "required")
		}
		return nil
	}
	if len(s) > 2*maxBytes {
		return tooLarge(field, len(s)/2, maxBytes, "bytes")
	}
	if len(s)%2 != 0 {
		return invalid(field, "odd number of hex digits (%d)", len(s))
	}
	for i := 0; i < len(s); i++ {
		if !isLowerHex(s[i]) {
			return invalid(field, "byte %d (%q) is not a lowercase hex digit", i, s[i])
		}
	}
	return nil
}

func isLowerAlnum(b byte) bool {
	return (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9')
}

func isLowerHex(b byte) bool {
	return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f')
}

// checkDER checks that b is exactly one DER SEQUENCE. It does not parse the
// contents: what a certificate or CSR says is judged by the coordinator and
// agent, which know the job; this only keeps junk from travelling further.
func checkDER(field string, b []byte, limit int, required bool) error {
	if len(b) == 0 {
		if required {
			return invalid(field, "required")
		}
		return nil
	}
	if len(b) > limit {
		return tooLarge(field, len(b), limit, "bytes")
	}
	if bytes.HasPrefix(b, []byte("-----BEGIN")) {
		return invalid(field, "PEM; send the DER bytes (base64 in JSON)")
	}
	var rv asn1.RawValue
	rest, err := asn1.Unmarshal(b, &rv)
	if err != nil {
		return invalid(field, "not DER: %v", err)
	}
	if len(rest) > 0 {
		return invalid(field, "%d bytes of trailing data after the DER value", len(rest))
	}
	if rv.Class != asn1.ClassUniversal || rv.Tag != asn1.TagSequence || !rv.IsCompound {
		return invalid(field, "DER value is not a SEQUENCE")
	}
	return nil
}

// checkPublicKey checks a PKIX (SubjectPublicKeyInfo) DER public key that Go
// can parse.
func checkPublicKey(field string, b []byte, required bool) error {
	if len(b) == 0 {
		if required {
			return invalid(field, "required")
		}
		return nil
	}
	if len(b) > MaxPublicKeySize {
		return tooLarge(field, len(b), MaxPublicKeySize, "bytes")
	}
	if _, err := x509.ParsePKIXPublicKey(b); err != nil {
		return invalid(field, "not a PKIX public key: %v", err)
	}
	return nil
}

// checkSealKey checks a public key others seal secrets to: X25519 is the
// only sealing algorithm of this protocol version.
func checkSealKey(field string, b []byte, required bool) error {
	if len(b) == 0 {
		if required {
			return invalid(field, "required")
		}
		return nil
	}
	if len(b) > MaxPublicKeySize {
		return tooLarge(field, len(b), MaxPublicKeySize, "bytes")
	}
	pub, err := x509.ParsePKIXPublicKey(b)
	if err != nil {
		return invalid(field, "not a PKIX public key: %v", err)
	}
	if k, ok := pub.(*ecdh.PublicKey); !ok || k.Curve() != ecdh.X25519() {
		return invalid(field, "a %T is not an X25519 key, the only key type secrets are sealed to", pub)
	}
	return nil
}

// checkTime requires UTC: one zone on the wire keeps logs, audit and
// deadline arithmetic free of offset surprises.
func checkTime(field string, t time.Time, required bool) error {
	if t.IsZero() {
		if required {
			return invalid(field, "required")
		}
		return nil
	}
	if _, off := t.Zone(); off != 0 {
		return invalid(field, "not UTC (offset %+d s); times on the wire are UTC", off)
	}
	return nil
}

// checkList bounds a list's length.
func checkList(field string, n, limit int) error {
	if n > limit {
		return tooLarge(field, n, limit, "entries")
	}
	return nil
}
