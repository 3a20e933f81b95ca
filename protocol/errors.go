package protocol

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrorCode is a stable, machine-readable reason carried on the wire and
// into the dead-letter queue. Receivers branch on codes, never on messages:
// a code, once published, keeps its spelling and meaning forever.
type ErrorCode string

// ErrorInfo is one row of the error table.
type ErrorInfo struct {
	Code        ErrorCode `json:"code"`
	Retryable   bool      `json:"retryable"`
	Description string    `json:"description"`
}

// The table is data (errors.json) so that documentation, the help desk and
// tools outside Go read the same list the code uses; the constants are
// generated from it (errors_codes.go).
//
//go:generate go run ./internal/errorsgen/cmd/errorsgen errors.json errors_codes.go
//go:embed errors.json
var errorsJSON []byte

var errorTable, errorIndex = mustLoadErrorTable(errorsJSON)

func mustLoadErrorTable(data []byte) ([]ErrorInfo, map[ErrorCode]ErrorInfo) {
	table, index, err := loadErrorTable(data)
	if err != nil {
		// The file is compiled in and checked by the tests: failing here
		// means the build itself is broken.
		panic(fmt.Sprintf("protocol: errors.json: %v", err))
	}
	return table, index
}

func loadErrorTable(data []byte) ([]ErrorInfo, map[ErrorCode]ErrorInfo, error) {
	var table []ErrorInfo
	if err := json.Unmarshal(data, &table); err != nil {
		return nil, nil, err
	}
	index := make(map[ErrorCode]ErrorInfo, len(table))
	for i, info := range table {
		if err := info.Code.checkSyntax(); err != nil {
			return nil, nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if info.Description == "" {
			return nil, nil, fmt.Errorf("entry %d (%s): description is empty", i, info.Code)
		}
		if _, dup := index[info.Code]; dup {
			return nil, nil, fmt.Errorf("entry %d: code %q listed twice", i, info.Code)
		}
		index[info.Code] = info
	}
	return table, index, nil
}

// ErrorCodes returns the error table in its documented order.
func ErrorCodes() []ErrorInfo {
	return append([]ErrorInfo(nil), errorTable...)
}

// Info returns the table row for c.
func (c ErrorCode) Info() (ErrorInfo, bool) {
	info, ok := errorIndex[c]
	return info, ok
}

// Known reports whether c is in the table of this protocol version.
func (c ErrorCode) Known() bool {
	_, ok := errorIndex[c]
	return ok
}

// Retryable is the table's default for c; unknown codes are not retryable.
func (c ErrorCode) Retryable() bool {
	return errorIndex[c].Retryable
}

const maxErrorCodeLen = 64

// checkSyntax accepts dotted lowercase snake_case words ("token.pin_locked").
// Codes are checked for shape only on the wire, not against the table: a
// newer agent may report a code this coordinator does not know yet, and the
// sender's retryable flag still tells the receiver what to do with it.
func (c ErrorCode) checkSyntax() error {
	if c == "" {
		return errors.New("code: required")
	}
	if len(c) > maxErrorCodeLen {
		return fmt.Errorf("code: %d bytes, limit %d", len(c), maxErrorCodeLen)
	}
	wordStart := true
	for i := 0; i < len(c); i++ {
		b := c[i]
		switch {
		case b >= 'a' && b <= 'z':
		case (b >= '0' && b <= '9') || b == '_':
			if wordStart {
				return fmt.Errorf("code %q: each dot-separated word must start with a letter", string(c))
			}
		case b == '.':
			if wordStart {
				return fmt.Errorf("code %q: empty word", string(c))
			}
			wordStart = true
			continue
		default:
			return fmt.Errorf("code %q: byte %d (%q) is not a lowercase letter, digit, '_' or '.'", string(c), i, b)
		}
		wordStart = false
	}
	if wordStart {
		return fmt.Errorf("code %q: ends with '.'", string(c))
	}
	return nil
}

// Error is an error as it travels on the wire, and the error type every
// function of this package returns for bad input. Code is what receivers act
// on; Message says what exactly was wrong (which field, which limit) and is
// for people. Retryable is the sender's judgement for this occurrence; the
// table gives the default.
type Error struct {
	Code      ErrorCode `json:"code"`
	Message   string    `json:"message"`
	Retryable bool      `json:"retryable"`

	cause error // local only: the underlying error, never sent

	// Set by this package's validators so that nesting can extend the field
	// path ("label" inside "tokens[2]" becomes "tokens[2].label").
	field, detail string
}

// NewError builds an Error with the table's retryable default. The format
// may wrap an underlying error with %w; it stays reachable via errors.Unwrap
// locally but only its text crosses the wire.
func NewError(code ErrorCode, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Message: err.Error(), Retryable: code.Retryable(), cause: errors.Unwrap(err)}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.cause }

// Is matches any *Error with the same code, so errors.Is(err, ErrMalformed)
// asks "is this a malformed-message error" whatever its message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Validate checks an Error received inside a message body.
func (e *Error) Validate() error {
	if err := e.Code.checkSyntax(); err != nil {
		return invalid("", "%v", err)
	}
	return checkText("message", e.Message, MaxTextLen, true)
}

// Sentinels for errors.Is; they match by code (see Error.Is).
var (
	ErrBadRequest         = &Error{Code: CodeBadRequest}
	ErrUnsupportedVersion = &Error{Code: CodeUnsupportedVersion}
	ErrUnknownType        = &Error{Code: CodeUnknownType}
	ErrTooLarge           = &Error{Code: CodeTooLarge}
	ErrMalformed          = &Error{Code: CodeMalformed}
	ErrForgedSender       = &Error{Code: CodeForgedSender}
)

// CodeOf returns the code of the first *Error in err's chain, CodeInternal
// for any other non-nil error (the receiver failed on its own), and "" for
// nil.
func CodeOf(err error) ErrorCode {
	if err == nil {
		return ""
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return CodeInternal
}
