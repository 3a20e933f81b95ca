package pkcs11

import (
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/protocol"
)

func TestCodeForRV(t *testing.T) {
	for rv, want := range map[uint]Code{
		p11.CKR_PIN_INCORRECT:            CodePINIncorrect,
		p11.CKR_PIN_LOCKED:               CodePINLocked,
		p11.CKR_PIN_LEN_RANGE:            CodePINLenRange,
		p11.CKR_PIN_INVALID:              CodePINInvalid,
		p11.CKR_PIN_EXPIRED:              CodePINExpired,
		p11.CKR_TOKEN_NOT_PRESENT:        CodeNotPresent,
		p11.CKR_SLOT_ID_INVALID:          CodeNotPresent,
		p11.CKR_DEVICE_REMOVED:           CodeDeviceRemoved,
		p11.CKR_DEVICE_ERROR:             CodeDeviceError,
		p11.CKR_TOKEN_NOT_RECOGNIZED:     CodeDeviceError,
		p11.CKR_USER_PIN_NOT_INITIALIZED: CodeNotInitialized,
		p11.CKR_USER_NOT_LOGGED_IN:       CodeNotLoggedIn,
		p11.CKR_FUNCTION_NOT_SUPPORTED:   CodeFunctionNotSupported,
		p11.CKR_MECHANISM_INVALID:        CodeMechanismNotSupported,
		p11.CKR_KEY_SIZE_RANGE:           CodeMechanismNotSupported,
		p11.CKR_OBJECT_HANDLE_INVALID:    CodeKeyNotFound,
		p11.CKR_TOKEN_WRITE_PROTECTED:    CodeWriteProtected,
		p11.CKR_DEVICE_MEMORY:            CodeMemoryFull,
		p11.CKR_SESSION_HANDLE_INVALID:   CodeSessionError,
		p11.CKR_SESSION_EXISTS:           CodeSessionError,
		p11.CKR_OPERATION_ACTIVE:         CodeSessionError,
		p11.CKR_GENERAL_ERROR:            CodeGeneralError,
		p11.CKR_TEMPLATE_INCOMPLETE:      CodeGeneralError,
		p11.CKR_FUNCTION_CANCELED:        CodeCancelled,
		p11.CKR_ARGUMENTS_BAD:            CodeInvalidArgument,
	} {
		if got := codeForRV(rv); got != want {
			t.Errorf("codeForRV(0x%x) = %s, want %s", rv, got, want)
		}
	}
}

// Every code this package returns travels on the wire as a protocol error code: the
// protocol's table must know each one, with the same retry advice.
func TestCodesAreProtocolCodes(t *testing.T) {
	codes := []Code{
		CodePINIncorrect, CodePINLocked, CodePINLenRange, CodePINInvalid, CodePINExpired,
		CodeNotPresent, CodeDeviceRemoved, CodeDeviceError, CodeNotInitialized,
		CodeAlreadyInitialized, CodeNotLoggedIn, CodeFunctionNotSupported,
		CodeMechanismNotSupported, CodeKeyNotFound, CodeCertificateNotFound,
		CodeCertificateKeyMismatch, CodeNotFound, CodeAmbiguous, CodeWriteProtected,
		CodeMemoryFull, CodeModuleLoadFailed, CodeSessionError, CodeGeneralError,
		CodeInvalidArgument, CodeCancelled, CodeKeyExists,
	}
	for _, c := range codes {
		pc := protocol.ErrorCode(c)
		if !pc.Known() {
			t.Errorf("%s is not in protocol/errors.json", c)
			continue
		}
		// Retryable is about repeating the same call; the protocol's flag is about a new
		// attempt of the job, which starts over (a new session, a fresh login).
		if c == CodeCancelled || c == CodeNotLoggedIn {
			if !pc.Retryable() {
				t.Errorf("%s: a new attempt of the job may succeed; the protocol should say retryable", c)
			}
			continue
		}
		if got, want := pc.Retryable(), Retryable(&Error{Code: c}); got != want {
			t.Errorf("%s: protocol says retryable=%v, driver says %v", c, got, want)
		}
	}
}
