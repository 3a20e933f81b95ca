//go:build !cgo

package pkcs11

import (
	"context"
	"crypto"
	"errors"
	"io"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
)

// Without cgo there is no PKCS#11: Open fails with CodeModuleLoadFailed, and the types
// exist so that programs using this package still build (and say why they cannot reach
// tokens). The methods below mirror the cgo build's; a test keeps them in step.

var errNoCgo = &Error{Op: "open module", Code: CodeModuleLoadFailed,
	Err: errors.New("built without cgo: PKCS#11 unavailable (rebuild with CGO_ENABLED=1)")}

// Backend is the module's functions; without cgo there are none.
type Backend interface{ noCgo() }

// Reloader is the module's C_Finalize and C_Initialize; without cgo there are none.
type Reloader interface{ noCgo() }

// Module is a loaded PKCS#11 module; without cgo, Open never returns one.
type Module struct{}

// Open fails: this build has no cgo.
func Open(path string, opts Options) (*Module, error) { return nil, errNoCgo }

// OpenBackend fails: this build has no cgo.
func OpenBackend(name string, b Backend, opts Options) (*Module, error) { return nil, errNoCgo }

func (m *Module) Close() error                                        { return nil }
func (m *Module) Path() string                                        { return "" }
func (m *Module) Info(context.Context) (ModuleInfo, error)            { return ModuleInfo{}, errNoCgo }
func (m *Module) Slots(context.Context) ([]Slot, error)               { return nil, errNoCgo }
func (m *Module) FindToken(context.Context, *uri.URI) (*Token, error) { return nil, errNoCgo }
func (m *Module) InitToken(context.Context, uint, InitOptions) (TokenInfo, error) {
	return TokenInfo{}, errNoCgo
}

// Token is one token; without cgo there are none.
type Token struct{}

func (t *Token) Serial() string                                         { return "" }
func (t *Token) Close() error                                           { return nil }
func (t *Token) Info(context.Context) (TokenInfo, error)                { return TokenInfo{}, errNoCgo }
func (t *Token) Login(context.Context, string) error                    { return errNoCgo }
func (t *Token) Logout(context.Context) error                           { return errNoCgo }
func (t *Token) LoggedIn(context.Context) (bool, error)                 { return false, errNoCgo }
func (t *Token) InitUserPIN(context.Context, string, string) error      { return errNoCgo }
func (t *Token) ChangeUserPIN(context.Context, string, string) error    { return errNoCgo }
func (t *Token) ChangeSOPIN(context.Context, string, string) error      { return errNoCgo }
func (t *Token) Init(context.Context, InitOptions) (TokenInfo, error)   { return TokenInfo{}, errNoCgo }
func (t *Token) Mechanisms(context.Context) ([]Mechanism, error)        { return nil, errNoCgo }
func (t *Token) CheckKeySpec(context.Context, KeySpec) error            { return errNoCgo }
func (t *Token) Key(context.Context, []byte) (*Key, error)              { return nil, errNoCgo }
func (t *Token) Keys(context.Context) ([]KeyInfo, error)                { return nil, errNoCgo }
func (t *Token) DeleteKey(context.Context, []byte) (int, error)         { return 0, errNoCgo }
func (t *Token) Certificates(context.Context) ([]Certificate, error)    { return nil, errNoCgo }
func (t *Token) DeleteCertificate(context.Context, []byte) (int, error) { return 0, errNoCgo }
func (t *Token) VerifyKeyAndCertificate(context.Context, []byte) error  { return errNoCgo }
func (t *Token) GenerateKey(context.Context, KeyRequest) (*Key, bool, error) {
	return nil, false, errNoCgo
}
func (t *Token) ImportKey(context.Context, ImportRequest) (*Key, bool, error) {
	return nil, false, errNoCgo
}
func (t *Token) WriteCertificate(context.Context, CertificateWrite) (WriteResult, error) {
	return 0, errNoCgo
}
func (t *Token) Certificate(context.Context, []byte) (Certificate, error) {
	return Certificate{}, errNoCgo
}

// Key is a key pair on a token; without cgo there are none.
type Key struct{}

func (k *Key) ID() []byte               { return nil }
func (k *Key) Label() string            { return "" }
func (k *Key) Spec() KeySpec            { return KeySpec{} }
func (k *Key) Token() *Token            { return nil }
func (k *Key) Public() crypto.PublicKey { return nil }
func (k *Key) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errNoCgo
}
func (k *Key) SignContext(context.Context, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errNoCgo
}
func (k *Key) Decrypt(io.Reader, []byte, crypto.DecrypterOpts) ([]byte, error) {
	return nil, errNoCgo
}
func (k *Key) DecryptContext(context.Context, []byte, crypto.DecrypterOpts) ([]byte, error) {
	return nil, errNoCgo
}
