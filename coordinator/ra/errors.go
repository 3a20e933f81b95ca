package ra

import (
	"errors"
	"fmt"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Error is a refused CSR. Code is one of the protocol's csr_rejected, key_mismatch,
// weak_key and policy_violation; the agent and the operator see it with Msg.
type Error struct {
	Code    protocol.ErrorCode
	JobID   string
	Attempt int
	Msg     string // what was wrong, for people; the cause's text included
	Err     error  // the underlying cause, if any
}

func (e *Error) Error() string {
	return fmt.Sprintf("CSR of job %s attempt %d: %s: %s", e.JobID, e.Attempt, e.Code, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches an *Error or a *protocol.Error with the same code, so errors.Is(err,
// ErrWeakKey) and errors.Is(err, &protocol.Error{Code: protocol.CodeWeakKey}) both work.
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case *Error:
		return t.Code == e.Code
	case *protocol.Error:
		return t.Code == e.Code
	}
	return false
}

// As gives the wire form: errors.As(err, &pe) with pe a *protocol.Error yields the code
// and the message to send back, so protocol.CodeOf works on these errors.
func (e *Error) As(target any) bool {
	pe, ok := target.(**protocol.Error)
	if !ok {
		return false
	}
	*pe = &protocol.Error{Code: e.Code, Message: e.Msg, Retryable: e.Code.Retryable()}
	return true
}

// Sentinels for errors.Is; they match by code.
var (
	ErrCSRRejected     = &Error{Code: protocol.CodeCSRRejected}
	ErrKeyMismatch     = &Error{Code: protocol.CodeKeyMismatch}
	ErrWeakKey         = &Error{Code: protocol.CodeWeakKey}
	ErrPolicyViolation = &Error{Code: protocol.CodePolicyViolation}
)

// refuse builds the error for the attempt exp describes; a %w verb makes its argument the
// cause.
func (exp Expectation) refuse(code protocol.ErrorCode, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, JobID: exp.JobID, Attempt: exp.Attempt, Msg: err.Error(), Err: errors.Unwrap(err)}
}
