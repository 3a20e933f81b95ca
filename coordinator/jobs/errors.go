package jobs

import "fmt"

// Code is a stable error code; the HTTP API returns it as data.
type Code string

// Error codes returned by this package.
const (
	CodeIllegalTransition Code = "illegal_transition"
	CodeIllegalStep       Code = "illegal_step"
	CodeSelfApproval      Code = "self_approval"
	CodeAlreadyDecided    Code = "already_decided"
	CodeRoleNotPermitted  Code = "role_not_permitted"
	CodeOutOfScope        Code = "out_of_scope"
	CodeApprovalExpired   Code = "approval_expired"
	CodeBindingMismatch   Code = "binding_mismatch"
	CodeNotPending        Code = "not_pending"
	CodeReasonRequired    Code = "reason_required"
	CodeNotCancellable    Code = "not_cancellable"
	CodeNotRetryable      Code = "not_retryable"
	CodeNotPermitted      Code = "not_permitted"
	CodeInvalidInput      Code = "invalid_input"
)

// Error is the error type of this package. Match a kind of error with errors.Is against
// the Err* values (which compare by Code) or read Code after errors.As.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return "jobs: " + e.Msg }

// Is makes errors.Is(err, ErrSelfApproval) and friends match on the code alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is; they carry only a code.
var (
	ErrIllegalTransition = &Error{Code: CodeIllegalTransition, Msg: "illegal transition"}
	ErrIllegalStep       = &Error{Code: CodeIllegalStep, Msg: "illegal step"}
	ErrSelfApproval      = &Error{Code: CodeSelfApproval, Msg: "self approval"}
	ErrAlreadyDecided    = &Error{Code: CodeAlreadyDecided, Msg: "already decided"}
	ErrRoleNotPermitted  = &Error{Code: CodeRoleNotPermitted, Msg: "role not permitted"}
	ErrOutOfScope        = &Error{Code: CodeOutOfScope, Msg: "out of scope"}
	ErrApprovalExpired   = &Error{Code: CodeApprovalExpired, Msg: "approval expired"}
	ErrBindingMismatch   = &Error{Code: CodeBindingMismatch, Msg: "binding mismatch"}
	ErrNotPending        = &Error{Code: CodeNotPending, Msg: "not pending"}
	ErrReasonRequired    = &Error{Code: CodeReasonRequired, Msg: "reason required"}
	ErrNotCancellable    = &Error{Code: CodeNotCancellable, Msg: "not cancellable"}
	ErrNotRetryable      = &Error{Code: CodeNotRetryable, Msg: "not retryable"}
	ErrNotPermitted      = &Error{Code: CodeNotPermitted, Msg: "not permitted"}
	ErrInvalidInput      = &Error{Code: CodeInvalidInput, Msg: "invalid input"}
)

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}
