//go:build cgo

package pkcs11

import (
	"errors"

	p11 "github.com/miekg/pkcs11"
)

// Backend is the part of a PKCS#11 module this package calls: exactly the functions it
// uses, with miekg/pkcs11's signatures, so *pkcs11.Ctx is one and a wrapper (fault
// injection, tracing) can stand between. Loading, C_Initialize and C_Finalize stay outside
// (see Reloader).
type Backend interface {
	GetInfo() (p11.Info, error)
	GetSlotList(tokenPresent bool) ([]uint, error)
	GetSlotInfo(slotID uint) (p11.SlotInfo, error)
	GetTokenInfo(slotID uint) (p11.TokenInfo, error)
	GetMechanismList(slotID uint) ([]*p11.Mechanism, error)
	GetMechanismInfo(slotID uint, m []*p11.Mechanism) (p11.MechanismInfo, error)
	InitToken(slotID uint, soPIN string, label string) error
	OpenSession(slotID uint, flags uint) (p11.SessionHandle, error)
	CloseSession(sh p11.SessionHandle) error
	GetSessionInfo(sh p11.SessionHandle) (p11.SessionInfo, error)
	Login(sh p11.SessionHandle, userType uint, pin string) error
	Logout(sh p11.SessionHandle) error
	InitPIN(sh p11.SessionHandle, pin string) error
	SetPIN(sh p11.SessionHandle, oldPIN string, newPIN string) error
	CreateObject(sh p11.SessionHandle, temp []*p11.Attribute) (p11.ObjectHandle, error)
	DestroyObject(sh p11.SessionHandle, oh p11.ObjectHandle) error
	GetAttributeValue(sh p11.SessionHandle, o p11.ObjectHandle, a []*p11.Attribute) ([]*p11.Attribute, error)
	FindObjectsInit(sh p11.SessionHandle, temp []*p11.Attribute) error
	FindObjects(sh p11.SessionHandle, max int) ([]p11.ObjectHandle, bool, error)
	FindObjectsFinal(sh p11.SessionHandle) error
	GenerateKeyPair(sh p11.SessionHandle, m []*p11.Mechanism, public, private []*p11.Attribute) (p11.ObjectHandle, p11.ObjectHandle, error)
	SignInit(sh p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error
	Sign(sh p11.SessionHandle, message []byte) ([]byte, error)
	DecryptInit(sh p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error
	Decrypt(sh p11.SessionHandle, cipher []byte) ([]byte, error)
	DeriveKey(sh p11.SessionHandle, m []*p11.Mechanism, base p11.ObjectHandle, a []*p11.Attribute) (p11.ObjectHandle, error)
}

var _ Backend = (*p11.Ctx)(nil)

// Reloader is what a wrapper (Options.Wrap) implements to stand between this package and
// the module's C_Finalize and C_Initialize as well, when the module is reloaded (see
// Module.initWithReloads): to fail them in tests, or to trace them. *pkcs11.Ctx is one. A
// wrapper that implements it must pass both calls on to the module it wraps; one that
// does not leaves them to the module itself.
type Reloader interface {
	Finalize() error
	Initialize(opts ...p11.InitializeOption) error
}

var _ Reloader = (*p11.Ctx)(nil)

// rvOf returns the PKCS#11 return value inside err, 0 if there is none.
func rvOf(err error) uint {
	var e p11.Error
	if errors.As(err, &e) {
		return uint(e)
	}
	return 0
}
