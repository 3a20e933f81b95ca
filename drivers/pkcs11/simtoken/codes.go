//go:build cgo

package simtoken

import (
	"fmt"
	"sort"
	"strings"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
)

// rvFor is, for each driver code a module's answer can give, a CKR_ value that gives it:
// the one real modules answer most for that condition.
var rvFor = map[pkcs11.Code]uint{
	pkcs11.CodePINIncorrect:          p11.CKR_PIN_INCORRECT,
	pkcs11.CodePINLocked:             p11.CKR_PIN_LOCKED,
	pkcs11.CodePINLenRange:           p11.CKR_PIN_LEN_RANGE,
	pkcs11.CodePINInvalid:            p11.CKR_PIN_INVALID,
	pkcs11.CodePINExpired:            p11.CKR_PIN_EXPIRED,
	pkcs11.CodeNotPresent:            p11.CKR_TOKEN_NOT_PRESENT,
	pkcs11.CodeDeviceRemoved:         p11.CKR_DEVICE_REMOVED,
	pkcs11.CodeDeviceError:           p11.CKR_DEVICE_ERROR,
	pkcs11.CodeNotInitialized:        p11.CKR_USER_PIN_NOT_INITIALIZED,
	pkcs11.CodeNotLoggedIn:           p11.CKR_USER_NOT_LOGGED_IN,
	pkcs11.CodeFunctionNotSupported:  p11.CKR_FUNCTION_NOT_SUPPORTED,
	pkcs11.CodeMechanismNotSupported: p11.CKR_MECHANISM_INVALID,
	pkcs11.CodeWriteProtected:        p11.CKR_TOKEN_WRITE_PROTECTED,
	pkcs11.CodeMemoryFull:            p11.CKR_DEVICE_MEMORY,
	pkcs11.CodeSessionError:          p11.CKR_SESSION_HANDLE_INVALID,
	pkcs11.CodeGeneralError:          p11.CKR_GENERAL_ERROR,
	pkcs11.CodeCancelled:             p11.CKR_FUNCTION_CANCELED,
}

// RVFor returns a CKR_ value that the driver reports as code, for a Fault that should
// end in that code: RVFor(pkcs11.CodeDeviceError) is CKR_DEVICE_ERROR. Codes no module
// answer gives (not_found, ambiguous, key_exists, ...) are refused, naming those it knows.
func RVFor(code pkcs11.Code) (uint, error) {
	if rv, ok := rvFor[code]; ok {
		return rv, nil
	}
	known := make([]string, 0, len(rvFor))
	for c := range rvFor {
		known = append(known, string(c))
	}
	sort.Strings(known)
	return 0, fmt.Errorf("no CKR_ value gives the driver code %q: want one of %s", code, strings.Join(known, ", "))
}
