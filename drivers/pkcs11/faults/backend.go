//go:build cgo

package faults

import (
	"slices"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
)

// backend is one wrapped module.
type backend struct {
	inner pkcs11.Backend
	f     *Injector
}

var _ pkcs11.Backend = (*backend)(nil)

// reloadingBackend is a wrapped module that takes C_Finalize and C_Initialize as well.
type reloadingBackend struct {
	*backend
	reloader pkcs11.Reloader
}

var _ pkcs11.Reloader = (*reloadingBackend)(nil)

func (w *reloadingBackend) Finalize() error {
	if err := w.none("Finalize"); err != nil {
		return err
	}
	return w.reloader.Finalize()
}

func (w *reloadingBackend) Initialize(opts ...p11.InitializeOption) error {
	if err := w.none("Initialize"); err != nil {
		return err
	}
	return w.reloader.Initialize(opts...)
}

func (w *backend) none(call string) error { return w.f.enter(call, 0, false, 0, false) }
func (w *backend) slot(call string, slot uint) error {
	return w.f.enter(call, slot, true, 0, false)
}
func (w *backend) sess(call string, sh p11.SessionHandle) error {
	return w.f.enter(call, 0, false, sh, true)
}

func (w *backend) GetInfo() (p11.Info, error) {
	if err := w.none("GetInfo"); err != nil {
		return p11.Info{}, err
	}
	return w.inner.GetInfo()
}

func (w *backend) GetSlotList(tokenPresent bool) ([]uint, error) {
	if err := w.none("GetSlotList"); err != nil {
		return nil, err
	}
	ids, err := w.inner.GetSlotList(tokenPresent)
	if err != nil || !tokenPresent {
		return ids, err
	}
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	return slices.DeleteFunc(ids, func(id uint) bool { return w.f.removed[id] }), nil
}

func (w *backend) GetSlotInfo(slotID uint) (p11.SlotInfo, error) {
	if err := w.none("GetSlotInfo"); err != nil {
		return p11.SlotInfo{}, err
	}
	si, err := w.inner.GetSlotInfo(slotID)
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	if w.f.removed[slotID] {
		si.Flags &^= p11.CKF_TOKEN_PRESENT
	}
	return si, err
}

func (w *backend) GetTokenInfo(slotID uint) (p11.TokenInfo, error) {
	if err := w.slot("GetTokenInfo", slotID); err != nil {
		return p11.TokenInfo{}, err
	}
	ti, err := w.inner.GetTokenInfo(slotID)
	ti.Flags = w.f.overlayFlags(slotID, ti.Flags)
	return ti, err
}

func (w *backend) GetMechanismList(slotID uint) ([]*p11.Mechanism, error) {
	if err := w.slot("GetMechanismList", slotID); err != nil {
		return nil, err
	}
	ms, err := w.inner.GetMechanismList(slotID)
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	return slices.DeleteFunc(ms, func(m *p11.Mechanism) bool { return w.f.hidden[m.Mechanism] }), err
}

func (w *backend) GetMechanismInfo(slotID uint, m []*p11.Mechanism) (p11.MechanismInfo, error) {
	if err := w.slot("GetMechanismInfo", slotID); err != nil {
		return p11.MechanismInfo{}, err
	}
	return w.inner.GetMechanismInfo(slotID, m)
}

func (w *backend) InitToken(slotID uint, soPIN string, label string) error {
	if err := w.slot("InitToken", slotID); err != nil {
		return err
	}
	err := w.f.checkPIN(slotID, true, func() error { return w.inner.InitToken(slotID, soPIN, label) })
	if err == nil {
		w.f.resetPIN(slotID, false)
	}
	err, _ = w.f.leave("InitToken", slotID, err)
	return err
}

func (w *backend) OpenSession(slotID uint, flags uint) (p11.SessionHandle, error) {
	if err := w.slot("OpenSession", slotID); err != nil {
		return 0, err
	}
	sh, err := w.inner.OpenSession(slotID, flags)
	if err == nil {
		w.f.mu.Lock()
		if w.f.sessions == nil {
			w.f.sessions = map[p11.SessionHandle]session{}
		}
		w.f.sessions[sh] = session{slot: slotID, inner: w.inner}
		w.f.mu.Unlock()
	}
	return sh, err
}

func (w *backend) CloseSession(sh p11.SessionHandle) error {
	err := w.sess("CloseSession", sh)
	w.f.mu.Lock()
	_, known := w.f.sessions[sh]
	delete(w.f.sessions, sh)
	delete(w.f.dead, sh)
	w.f.mu.Unlock()
	if known || err == nil {
		// Close it on the module even when it is "dead": the token is gone for the caller.
		if cerr := w.inner.CloseSession(sh); err == nil {
			err = cerr
		}
	}
	return err
}

func (w *backend) GetSessionInfo(sh p11.SessionHandle) (p11.SessionInfo, error) {
	if err := w.sess("GetSessionInfo", sh); err != nil {
		return p11.SessionInfo{}, err
	}
	return w.inner.GetSessionInfo(sh)
}

func (w *backend) Login(sh p11.SessionHandle, userType uint, pin string) error {
	if err := w.sess("Login", sh); err != nil {
		return err
	}
	slot, ok := w.f.slotOf(sh)
	if !ok {
		return w.inner.Login(sh, userType, pin)
	}
	return w.f.checkPIN(slot, userType == p11.CKU_SO, func() error { return w.inner.Login(sh, userType, pin) })
}

func (w *backend) Logout(sh p11.SessionHandle) error {
	if err := w.sess("Logout", sh); err != nil {
		return err
	}
	return w.inner.Logout(sh)
}

func (w *backend) InitPIN(sh p11.SessionHandle, pin string) error {
	if err := w.sess("InitPIN", sh); err != nil {
		return err
	}
	err := w.inner.InitPIN(sh, pin)
	slot, ok := w.f.slotOf(sh)
	if ok && err == nil {
		w.f.resetPIN(slot, false)
	}
	err, _ = w.f.leave("InitPIN", slot, err)
	return err
}

func (w *backend) SetPIN(sh p11.SessionHandle, oldPIN string, newPIN string) error {
	if err := w.sess("SetPIN", sh); err != nil {
		return err
	}
	slot, ok := w.f.slotOf(sh)
	if !ok {
		return w.inner.SetPIN(sh, oldPIN, newPIN)
	}
	si, err := w.inner.GetSessionInfo(sh)
	if err != nil {
		return err
	}
	so := si.State == p11.CKS_RW_SO_FUNCTIONS
	err = w.f.checkPIN(slot, so, func() error { return w.inner.SetPIN(sh, oldPIN, newPIN) })
	err, _ = w.f.leave("SetPIN", slot, err)
	return err
}

func (w *backend) CreateObject(sh p11.SessionHandle, temp []*p11.Attribute) (p11.ObjectHandle, error) {
	if err := w.sess("CreateObject", sh); err != nil {
		return 0, err
	}
	slot, _ := w.f.slotOf(sh)
	if rv, ok := w.f.tear(temp); ok {
		_, err := w.inner.CreateObject(sh, tornCertificate(temp))
		if err == nil {
			err = p11.Error(rv)
			if rv == p11.CKR_DEVICE_REMOVED || rv == p11.CKR_TOKEN_NOT_PRESENT {
				w.f.Remove(slot)
			}
		}
		return 0, err
	}
	h, err := w.inner.CreateObject(sh, temp)
	if err, cut := w.f.leave("CreateObject", slot, err); cut {
		return 0, err // the object stays on the token
	}
	return h, err
}

// tornCertificate is the template of what a torn certificate write leaves: the object's
// defaults, none of the caller's identifying attributes or value.
func tornCertificate(temp []*p11.Attribute) []*p11.Attribute {
	keep := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_CERTIFICATE),
		p11.NewAttribute(p11.CKA_CERTIFICATE_TYPE, p11.CKC_X_509),
		p11.NewAttribute(p11.CKA_SUBJECT, []byte{}),
		p11.NewAttribute(p11.CKA_VALUE, []byte{}),
	}
	for _, a := range temp {
		if a.Type == p11.CKA_TOKEN { // where the object lives is decided before its template
			keep = append(keep, a)
		}
	}
	return keep
}

func (w *backend) DestroyObject(sh p11.SessionHandle, oh p11.ObjectHandle) error {
	if err := w.sess("DestroyObject", sh); err != nil {
		return err
	}
	err := w.inner.DestroyObject(sh, oh)
	slot, _ := w.f.slotOf(sh)
	err, _ = w.f.leave("DestroyObject", slot, err)
	return err
}

func (w *backend) GetAttributeValue(sh p11.SessionHandle, o p11.ObjectHandle, a []*p11.Attribute) ([]*p11.Attribute, error) {
	if err := w.sess("GetAttributeValue", sh); err != nil {
		return nil, err
	}
	return w.inner.GetAttributeValue(sh, o, a)
}

func (w *backend) FindObjectsInit(sh p11.SessionHandle, temp []*p11.Attribute) error {
	if err := w.sess("FindObjectsInit", sh); err != nil {
		return err
	}
	return w.inner.FindObjectsInit(sh, temp)
}

func (w *backend) FindObjects(sh p11.SessionHandle, max int) ([]p11.ObjectHandle, bool, error) {
	if err := w.sess("FindObjects", sh); err != nil {
		return nil, false, err
	}
	return w.inner.FindObjects(sh, max)
}

func (w *backend) FindObjectsFinal(sh p11.SessionHandle) error {
	if err := w.sess("FindObjectsFinal", sh); err != nil {
		return err
	}
	return w.inner.FindObjectsFinal(sh)
}

func (w *backend) GenerateKeyPair(sh p11.SessionHandle, m []*p11.Mechanism, public, private []*p11.Attribute) (p11.ObjectHandle, p11.ObjectHandle, error) {
	if err := w.sess("GenerateKeyPair", sh); err != nil {
		return 0, 0, err
	}
	slot, _ := w.f.slotOf(sh)
	if rv, ok := w.f.keyTear(); ok {
		_, err := w.inner.CreateObject(sh, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_EC_PARAMS, []byte{}), p11.NewAttribute(p11.CKA_VALUE, []byte{}),
		})
		if err == nil {
			err = p11.Error(rv)
			if rv == p11.CKR_DEVICE_REMOVED || rv == p11.CKR_TOKEN_NOT_PRESENT {
				w.f.Remove(slot)
			}
		}
		return 0, 0, err
	}
	pub, priv, err := w.inner.GenerateKeyPair(sh, m, public, private)
	if err, cut := w.f.leave("GenerateKeyPair", slot, err); cut {
		// Only the public half made it to the token.
		_ = w.inner.DestroyObject(sh, priv)
		return 0, 0, err
	}
	return pub, priv, err
}

func (w *backend) SignInit(sh p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error {
	if err := w.sess("SignInit", sh); err != nil {
		return err
	}
	return w.inner.SignInit(sh, m, o)
}

func (w *backend) Sign(sh p11.SessionHandle, message []byte) ([]byte, error) {
	if err := w.sess("Sign", sh); err != nil {
		// A failing C_Sign ends the signing operation (PKCS #11 §5.11): end it on the module.
		_, _ = w.inner.Sign(sh, message)
		return nil, err
	}
	return w.inner.Sign(sh, message)
}

func (w *backend) DecryptInit(sh p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error {
	if err := w.sess("DecryptInit", sh); err != nil {
		return err
	}
	return w.inner.DecryptInit(sh, m, o)
}

func (w *backend) Decrypt(sh p11.SessionHandle, cipher []byte) ([]byte, error) {
	if err := w.sess("Decrypt", sh); err != nil {
		_, _ = w.inner.Decrypt(sh, cipher) // as Sign: the failure ends the operation
		return nil, err
	}
	return w.inner.Decrypt(sh, cipher)
}

func (w *backend) DeriveKey(sh p11.SessionHandle, m []*p11.Mechanism, base p11.ObjectHandle, a []*p11.Attribute) (p11.ObjectHandle, error) {
	if err := w.sess("DeriveKey", sh); err != nil {
		return 0, err
	}
	return w.inner.DeriveKey(sh, m, base, a)
}
