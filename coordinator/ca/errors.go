package ca

import (
	"errors"
	"fmt"
)

// Code is a stable error code; the coordinator records it with the job and returns it
// from its API. Codes shared with the wire protocol keep the protocol's spelling.
type Code string

// Error codes of this package and of its back ends.
const (
	// CodeConfig: the CA cannot start: a missing or unreadable file, a key others can
	// read, a certificate that is not a CA, a key that does not match, a bad option.
	CodeConfig Code = "ca_config"
	// CodeBadRequest: the sign or revoke request is incomplete or inconsistent.
	CodeBadRequest Code = "ca_bad_request"
	// CodeWeakKey: the public key to certify is of a type or size the CA refuses (the
	// protocol's weak_key).
	CodeWeakKey Code = "weak_key"
	// CodeExpired: the CA's own certificate has expired or is not yet valid.
	CodeExpired Code = "ca_expired"
	// CodeAlreadyRevoked: the certificate is already revoked.
	CodeAlreadyRevoked Code = "already_revoked"
	// CodeNotOnHold: a hold was to be lifted from a certificate that is not on hold.
	CodeNotOnHold Code = "not_on_hold"
	// CodeUnknownCertificate: the serial names no certificate of this CA.
	CodeUnknownCertificate Code = "unknown_certificate"
	// CodeUnavailable: the CA or its revocation store failed; the operation may succeed
	// when retried.
	CodeUnavailable Code = "ca_unavailable"
)

// Error is the error type of this package and of its back ends.
type Error struct {
	Code Code
	Msg  string // for people: what went wrong, the cause's text included
	Err  error  // the underlying cause, if any
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return "ca: " + string(e.Code)
	}
	return "ca: " + string(e.Code) + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches on the code alone, so errors.Is(err, ErrAlreadyRevoked) works whatever the
// message.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// Errorf builds an *Error; back ends use it so that every failure carries a code. A %w
// verb in format makes its argument the cause.
func Errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// CodeOf returns the code of the first *Error in err's chain, CodeUnavailable for any
// other non-nil error, and "" for nil.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeUnavailable
}

// Sentinels for errors.Is; they match by code.
var (
	ErrConfig             = &Error{Code: CodeConfig}
	ErrBadRequest         = &Error{Code: CodeBadRequest}
	ErrWeakKey            = &Error{Code: CodeWeakKey}
	ErrExpired            = &Error{Code: CodeExpired}
	ErrAlreadyRevoked     = &Error{Code: CodeAlreadyRevoked}
	ErrUnknownCertificate = &Error{Code: CodeUnknownCertificate}
	ErrNotOnHold          = &Error{Code: CodeNotOnHold}
	ErrUnavailable        = &Error{Code: CodeUnavailable}
)
