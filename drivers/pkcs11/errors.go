package pkcs11

import (
	"context"
	"errors"
	"strings"

	p11 "github.com/miekg/pkcs11"
)

// Code says what went wrong, as data: callers branch on it and the wire protocol carries
// it. Codes are stable: add new ones, never rename or reuse one.
type Code string

// The codes. Those that come from the module keep the PKCS#11 return value in Error.RV.
const (
	CodePINIncorrect           Code = "token.pin_incorrect"
	CodePINLocked              Code = "token.pin_locked"
	CodePINLenRange            Code = "token.pin_len_range" // too short or too long for this token
	CodePINInvalid             Code = "token.pin_invalid"   // characters the token refuses
	CodePINExpired             Code = "token.pin_expired"
	CodeNotPresent             Code = "token.not_present" // the token is not (or no longer) in its slot
	CodeDeviceRemoved          Code = "token.device_removed"
	CodeDeviceError            Code = "token.device_error"
	CodeNotInitialized         Code = "token.not_initialized" // the token, or its user PIN, is not initialised
	CodeAlreadyInitialized     Code = "token.already_initialized"
	CodeNotLoggedIn            Code = "token.not_logged_in"
	CodeFunctionNotSupported   Code = "token.function_not_supported"
	CodeMechanismNotSupported  Code = "token.mechanism_not_supported" // algorithm, key size or curve
	CodeKeyNotFound            Code = "token.key_not_found"
	CodeCertificateNotFound    Code = "token.certificate_not_found"
	CodeCertificateKeyMismatch Code = "token.certificate_key_mismatch"
	CodeNotFound               Code = "token.not_found" // no present token is selected
	CodeAmbiguous              Code = "token.ambiguous" // more than one present token is selected
	CodeWriteProtected         Code = "token.write_protected"
	CodeMemoryFull             Code = "token.memory_full"
	CodeModuleLoadFailed       Code = "token.module_load_failed"
	CodeSessionError           Code = "token.session_error" // the session died or is in use; a new one may work
	CodeGeneralError           Code = "token.general_error"

	// Beyond the wire protocol's list: conditions of this package's callers, not of tokens.
	CodeInvalidArgument Code = "token.invalid_argument" // bad input from the caller
	CodeCancelled       Code = "token.cancelled"        // the context ended, or the user cancelled on a PIN pad
	CodeKeyExists       Code = "token.key_exists"       // another key already holds the CKA_ID
)

// Retryable reports whether the same operation may succeed later without anyone changing
// its input: the token comes back, or the session trouble passes. A PIN error never is:
// retrying it burns the token's retry counter.
func Retryable(err error) bool {
	switch CodeOf(err) {
	case CodeNotPresent, CodeDeviceRemoved, CodeSessionError, CodeDeviceError, CodeNotFound:
		return true
	}
	return false
}

// Error is every error this package returns. It names the operation and the token, never a
// PIN, and wraps the module's pkcs11.Error when there is one.
type Error struct {
	Op    string     // what was being done: "login", "generate key", ...
	Code  Code       // what went wrong
	RV    uint       // the PKCS#11 return value (CKR_*); 0 when the module did not answer one
	Token string     // serial number of the token, when known
	Label string     // label of the token, when known
	PIN   *PINStatus // the PIN's retry state after a PIN error, when the token reported it
	Err   error      // the underlying error, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("pkcs11: ")
	b.WriteString(e.Op)
	switch {
	case e.Label != "" && e.Token != "":
		b.WriteString(" on token \"" + e.Label + "\" (serial " + e.Token + ")")
	case e.Token != "":
		b.WriteString(" on token " + e.Token)
	}
	b.WriteString(": ")
	b.WriteString(string(e.Code))
	if e.PIN != nil {
		switch {
		case e.PIN.Locked:
			b.WriteString(" (PIN locked)")
		case e.PIN.FinalTry:
			b.WriteString(" (one try left)")
		case e.PIN.CountLow:
			b.WriteString(" (few tries left)")
		}
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrPINLocked) and the like compare codes.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code != "" && t.Code == e.Code && t.Op == "" && t.Err == nil
}

// Sentinels for errors.Is; each matches any *Error with its code.
var (
	ErrPINIncorrect = &Error{Code: CodePINIncorrect}
	ErrPINLocked    = &Error{Code: CodePINLocked}
	ErrNotPresent   = &Error{Code: CodeNotPresent}
	ErrNotFound     = &Error{Code: CodeNotFound}
	ErrNotLoggedIn  = &Error{Code: CodeNotLoggedIn}
	ErrKeyNotFound  = &Error{Code: CodeKeyNotFound}
)

// CodeOf returns the code of err: its own for an *Error, CodeCancelled for an ended
// context, CodeGeneralError for anything else, "" for nil.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return CodeCancelled
	}
	return CodeGeneralError
}

// codeForRV maps a PKCS#11 return value to a code.
func codeForRV(rv uint) Code {
	switch rv {
	case p11.CKR_PIN_INCORRECT:
		return CodePINIncorrect
	case p11.CKR_PIN_LOCKED:
		return CodePINLocked
	case p11.CKR_PIN_LEN_RANGE:
		return CodePINLenRange
	case p11.CKR_PIN_INVALID:
		return CodePINInvalid
	case p11.CKR_PIN_EXPIRED:
		return CodePINExpired
	case p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_SLOT_ID_INVALID:
		return CodeNotPresent
	case p11.CKR_DEVICE_REMOVED:
		return CodeDeviceRemoved
	case p11.CKR_DEVICE_ERROR, p11.CKR_TOKEN_NOT_RECOGNIZED, p11.CKR_FUNCTION_FAILED:
		return CodeDeviceError
	case p11.CKR_USER_PIN_NOT_INITIALIZED, p11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return CodeNotInitialized
	case p11.CKR_USER_NOT_LOGGED_IN:
		return CodeNotLoggedIn
	case p11.CKR_FUNCTION_NOT_SUPPORTED:
		return CodeFunctionNotSupported
	case p11.CKR_MECHANISM_INVALID, p11.CKR_MECHANISM_PARAM_INVALID, p11.CKR_KEY_SIZE_RANGE,
		p11.CKR_KEY_TYPE_INCONSISTENT, p11.CKR_KEY_FUNCTION_NOT_PERMITTED,
		p11.CKR_CURVE_NOT_SUPPORTED, p11.CKR_DOMAIN_PARAMS_INVALID:
		return CodeMechanismNotSupported
	case p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID:
		return CodeKeyNotFound
	case p11.CKR_TOKEN_WRITE_PROTECTED, p11.CKR_SESSION_READ_ONLY:
		return CodeWriteProtected
	case p11.CKR_DEVICE_MEMORY, p11.CKR_HOST_MEMORY:
		return CodeMemoryFull
	case p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_SESSION_EXISTS,
		p11.CKR_SESSION_COUNT, p11.CKR_OPERATION_ACTIVE, p11.CKR_OPERATION_NOT_INITIALIZED,
		p11.CKR_SESSION_READ_WRITE_SO_EXISTS, p11.CKR_SESSION_READ_ONLY_EXISTS,
		p11.CKR_FUNCTION_NOT_PARALLEL:
		return CodeSessionError
	case p11.CKR_FUNCTION_CANCELED, p11.CKR_CANCEL:
		return CodeCancelled
	case p11.CKR_ARGUMENTS_BAD, p11.CKR_DATA_LEN_RANGE, p11.CKR_DATA_INVALID,
		p11.CKR_ENCRYPTED_DATA_INVALID, p11.CKR_ENCRYPTED_DATA_LEN_RANGE:
		return CodeInvalidArgument
	}
	return CodeGeneralError
}
