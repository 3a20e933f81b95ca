package service

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Code is a stable error code; the HTTP API returns it as data (coordinator/api/openapi.yaml
// lists them with their status).
type Code string

// Error codes.
const (
	CodeUnauthenticated   Code = "unauthenticated"
	CodeForbidden         Code = "forbidden"
	CodeNotFound          Code = "not_found"
	CodeBadRequest        Code = "bad_request"
	CodeInvalidProfile    Code = "invalid_profile"
	CodeConflict          Code = "conflict"
	CodeIllegalTransition Code = "illegal_transition"
	CodeSelfApproval      Code = "self_approval"
	CodeAlreadyDecided    Code = "already_decided"
	CodeRoleNotPermitted  Code = "role_not_permitted"
	CodeOutOfScope        Code = "out_of_scope"
	CodeApprovalExpired   Code = "approval_expired"
	CodeBindingMismatch   Code = "binding_mismatch"
	CodeNotPending        Code = "not_pending"
	CodeNotCancellable    Code = "not_cancellable"
	CodeReasonRequired    Code = "reason_required"
	CodeMissingAttribute  Code = "missing_holder_attribute"
	CodeInvalidAttribute  Code = "invalid_holder_attribute"
	CodeTooLarge          Code = "too_large"
	// CodePINsUnknown: the job needs a PIN of the token that no tokenfleet job set.
	CodePINsUnknown Code = "pins_unknown"
	// CodeNotHoldersToken: the token carries another holder's certificates.
	CodeNotHoldersToken Code = "not_holders_token"
	// CodeTokenNotActive: the job would issue to a token that is suspended, lost, stolen,
	// damaged, retired or replaced.
	CodeTokenNotActive Code = "token_not_active"
	// CodeTokenNotSuspended: a temporary token was asked for a token that is not suspended.
	CodeTokenNotSuspended Code = "token_not_suspended"
	// CodeIdempotencyKeyReused: a job creation request's idempotency key was used before
	// with another request.
	CodeIdempotencyKeyReused Code = "idempotency_key_reused"
	// CodeUnavailable: something the operation needs (the broker's management API, a
	// setting) is not there now; the same request may succeed later.
	CodeUnavailable Code = "unavailable"
	// CodeApprovalRequired: the operation needs approvals first (a rollout its brake
	// paused resumes only when approved again).
	CodeApprovalRequired Code = "approval_required"
	// CodeLocked: too many wrong passwords; sign-in is locked for a while (the message
	// says until when).
	CodeLocked   Code = "locked"
	CodeInternal Code = "internal"
)

// HTTPStatus is the HTTP status that answers a code, the one table the API and the console
// share (coordinator/api/openapi.yaml lists it). Unknown codes are internal errors.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeUnauthenticated:
		return http.StatusUnauthorized
	case CodeForbidden, CodeSelfApproval, CodeRoleNotPermitted, CodeOutOfScope:
		return http.StatusForbidden
	case CodeNotFound:
		return http.StatusNotFound
	case CodeBadRequest, CodeInvalidProfile, CodeReasonRequired, CodeMissingAttribute, CodeInvalidAttribute:
		return http.StatusBadRequest
	case CodePINsUnknown, CodeNotHoldersToken, CodeIdempotencyKeyReused, CodeTokenNotActive, CodeTokenNotSuspended:
		return http.StatusUnprocessableEntity
	case CodeConflict, CodeIllegalTransition, CodeAlreadyDecided, CodeApprovalExpired,
		CodeBindingMismatch, CodeNotPending, CodeNotCancellable, CodeApprovalRequired:
		return http.StatusConflict
	case CodeLocked:
		return http.StatusTooManyRequests
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Error is what every operation of the service returns on failure: a stable code, a
// message for people, and the request field at fault when there is one.
type Error struct {
	Code  Code
	Msg   string
	Field string
	Err   error // the cause, for logs; never shown to clients for internal errors
	// Entries name each refused entry of a batch request, which is refused whole.
	Entries []EntryError
}

// EntryError is what is wrong with one entry of a batch request.
type EntryError struct {
	Index int    // the entry's position in the request, from 0
	ID    string // the entry's ID as given
	Code  Code   // bad_request or conflict
	Field string // the entry's field at fault
	Msg   string
}

func (e *Error) Error() string {
	s := string(e.Code) + ": " + e.Msg
	if e.Field != "" {
		s = string(e.Code) + ": " + e.Field + ": " + e.Msg
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches on the code alone: errors.Is(err, &Error{Code: CodeNotFound}).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

func newErr(code Code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func badRequest(field, format string, args ...any) *Error {
	return newErr(CodeBadRequest, field, format, args...)
}

func forbidden(format string, args ...any) *Error {
	return newErr(CodeForbidden, "", format, args...)
}

func internal(err error) *Error {
	return &Error{Code: CodeInternal, Msg: "internal error", Err: err}
}

// AsError turns any error into an *Error: errors of the rule, profile and store packages
// keep their meaning; anything else is internal.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) {
		return se
	}
	var je *jobs.Error
	if errors.As(err, &je) {
		return &Error{Code: jobsCode(je.Code), Msg: strings.TrimPrefix(je.Error(), "jobs: "), Err: err}
	}
	var pe *profile.Error
	if errors.As(err, &pe) {
		code := CodeInvalidProfile
		switch pe.Code {
		case profile.CodeMissingAttribute:
			code = CodeMissingAttribute
		case profile.CodeInvalidAttribute:
			code = CodeInvalidAttribute
		}
		// Every problem of a joined error goes in the message; the field is the first one's.
		return &Error{Code: code, Field: pe.Field, Msg: oneLine(err.Error()), Err: err}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &Error{Code: CodeNotFound, Msg: trimStore(err), Err: err}
	case errors.Is(err, store.ErrConflict):
		return &Error{Code: CodeConflict, Msg: trimStore(err), Err: err}
	case errors.Is(err, store.ErrAborted):
		// Only after the store ran the transaction again a few times: other
		// coordinators sharing the database keep writing the same records.
		return &Error{Code: CodeConflict, Msg: "the database kept aborting this change to resolve conflicts with concurrent ones; try again", Err: err}
	case errors.Is(err, store.ErrInvalid):
		return &Error{Code: CodeBadRequest, Msg: trimStore(err), Err: err}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: CodeInternal, Msg: "request cancelled or timed out", Err: err}
	}
	return internal(err)
}

func jobsCode(c jobs.Code) Code {
	switch c {
	case jobs.CodeIllegalTransition, jobs.CodeIllegalStep:
		return CodeIllegalTransition
	case jobs.CodeSelfApproval:
		return CodeSelfApproval
	case jobs.CodeAlreadyDecided:
		return CodeAlreadyDecided
	case jobs.CodeRoleNotPermitted:
		return CodeRoleNotPermitted
	case jobs.CodeOutOfScope:
		return CodeOutOfScope
	case jobs.CodeApprovalExpired:
		return CodeApprovalExpired
	case jobs.CodeBindingMismatch:
		return CodeBindingMismatch
	case jobs.CodeNotPending:
		return CodeNotPending
	case jobs.CodeReasonRequired:
		return CodeReasonRequired
	case jobs.CodeNotCancellable:
		return CodeNotCancellable
	case jobs.CodeNotPermitted:
		return CodeForbidden
	case jobs.CodeNotRetryable:
		return CodeConflict
	}
	return CodeBadRequest
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ") }

// trimStore drops the "store: " prefix of store errors for messages shown to clients.
func trimStore(err error) string { return strings.TrimPrefix(err.Error(), "store: ") }

// retryable marks a lost compare-and-set: the operation reads again and decides again.
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

// casLost wraps err as retryable when it is a store conflict.
func casLost(err error) error {
	if errors.Is(err, store.ErrConflict) {
		return retryable{err}
	}
	return err
}
