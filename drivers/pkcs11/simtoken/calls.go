//go:build cgo

package simtoken

import (
	"slices"
	"strconv"

	p11 "github.com/miekg/pkcs11"
)

// The PKCS#11 calls, as pkcs11.Backend has them. Errors are p11.Error CKR_ values, as a
// module's are.

// GetInfo implements pkcs11.Backend.
func (b *Backend) GetInfo() (p11.Info, error) {
	return p11.Info{
		CryptokiVersion:    p11.Version{Major: 2, Minor: 40},
		ManufacturerID:     pad("tokenfleet", 32),
		LibraryDescription: pad("tokenfleet simulated tokens", 32),
		LibraryVersion:     p11.Version{Major: 1},
	}, nil
}

// GetSlotList implements pkcs11.Backend.
func (b *Backend) GetSlotList(tokenPresent bool) ([]uint, error) {
	var ids []uint
	err := b.spend(nil, OpSlotList, func() error {
		b.mu.Lock()
		ts := b.slots
		b.mu.Unlock()
		ids = make([]uint, 0, len(ts))
		for _, t := range ts {
			if !tokenPresent || t.isPresent(b.now) {
				ids = append(ids, t.slot)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// GetSlotInfo implements pkcs11.Backend.
func (b *Backend) GetSlotInfo(slotID uint) (p11.SlotInfo, error) {
	t, err := b.slotToken(slotID)
	if err != nil {
		return p11.SlotInfo{}, err
	}
	flags := uint(p11.CKF_REMOVABLE_DEVICE | p11.CKF_HW_SLOT)
	if t.isPresent(b.now) {
		flags |= p11.CKF_TOKEN_PRESENT
	}
	return p11.SlotInfo{
		SlotDescription: pad("tokenfleet simulated reader "+strconv.FormatUint(uint64(slotID), 10), 64),
		ManufacturerID:  pad("tokenfleet", 32),
		Flags:           flags,
	}, nil
}

// GetTokenInfo implements pkcs11.Backend.
func (b *Backend) GetTokenInfo(slotID uint) (p11.TokenInfo, error) {
	t, err := b.presentToken(slotID)
	if err != nil {
		return p11.TokenInfo{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.infoLocked(), nil
}

// mechanisms lists what the model offers, with its CK_MECHANISM_INFO.
func (m *Model) mechanisms() map[uint]p11.MechanismInfo {
	out := map[uint]p11.MechanismInfo{}
	if m.MinRSABits > 0 {
		lo, hi := uint(m.MinRSABits), uint(m.MaxRSABits)
		out[p11.CKM_RSA_PKCS_KEY_PAIR_GEN] = p11.MechanismInfo{MinKeySize: lo, MaxKeySize: hi, Flags: p11.CKF_HW | p11.CKF_GENERATE_KEY_PAIR}
		out[p11.CKM_RSA_PKCS] = p11.MechanismInfo{MinKeySize: lo, MaxKeySize: hi,
			Flags: p11.CKF_HW | p11.CKF_SIGN | p11.CKF_VERIFY | p11.CKF_DECRYPT | p11.CKF_ENCRYPT}
		if m.PSS {
			out[p11.CKM_RSA_PKCS_PSS] = p11.MechanismInfo{MinKeySize: lo, MaxKeySize: hi, Flags: p11.CKF_HW | p11.CKF_SIGN | p11.CKF_VERIFY}
		}
	}
	if len(m.Curves) > 0 {
		lo, hi := ^uint(0), uint(0)
		for _, c := range m.Curves {
			bits := uint(curves[c].curve.Params().BitSize)
			lo, hi = min(lo, bits), max(hi, bits)
		}
		ec := uint(p11.CKF_HW | p11.CKF_EC_F_P | p11.CKF_EC_NAMEDCURVE | p11.CKF_EC_UNCOMPRESS)
		out[p11.CKM_EC_KEY_PAIR_GEN] = p11.MechanismInfo{MinKeySize: lo, MaxKeySize: hi, Flags: ec | p11.CKF_GENERATE_KEY_PAIR}
		out[p11.CKM_ECDSA] = p11.MechanismInfo{MinKeySize: lo, MaxKeySize: hi, Flags: ec | p11.CKF_SIGN | p11.CKF_VERIFY}
	}
	return out
}

// GetMechanismList implements pkcs11.Backend.
func (b *Backend) GetMechanismList(slotID uint) ([]*p11.Mechanism, error) {
	t, err := b.presentToken(slotID)
	if err != nil {
		return nil, err
	}
	ms := t.model.mechanisms()
	types := make([]uint, 0, len(ms))
	for typ := range ms {
		types = append(types, typ)
	}
	slices.Sort(types)
	out := make([]*p11.Mechanism, len(types))
	for i, typ := range types {
		out[i] = p11.NewMechanism(typ, nil)
	}
	return out, nil
}

// GetMechanismInfo implements pkcs11.Backend.
func (b *Backend) GetMechanismInfo(slotID uint, m []*p11.Mechanism) (p11.MechanismInfo, error) {
	t, err := b.presentToken(slotID)
	if err != nil {
		return p11.MechanismInfo{}, err
	}
	if len(m) != 1 {
		return p11.MechanismInfo{}, p11.Error(p11.CKR_ARGUMENTS_BAD)
	}
	info, ok := t.model.mechanisms()[m[0].Mechanism]
	if !ok {
		return p11.MechanismInfo{}, p11.Error(p11.CKR_MECHANISM_INVALID)
	}
	return info, nil
}

// InitToken implements pkcs11.Backend: it wipes the token, checking the SO PIN of an
// initialised one.
func (b *Backend) InitToken(slotID uint, soPIN string, label string) error {
	t, err := b.presentToken(slotID)
	if err != nil {
		return err
	}
	return b.spend(t, OpInitToken, func() error {
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.presentLocked(b.now) {
			return p11.Error(p11.CKR_DEVICE_REMOVED)
		}
		if t.sessions > 0 {
			return p11.Error(p11.CKR_SESSION_EXISTS)
		}
		if !t.pinLenOK(soPIN) {
			return p11.Error(p11.CKR_PIN_LEN_RANGE)
		}
		if t.initialized {
			if err := t.checkPINLocked(true, soPIN); err != nil {
				return err
			}
		}
		t.initialise(soPIN, label)
		return nil
	})
}

// OpenSession implements pkcs11.Backend.
func (b *Backend) OpenSession(slotID uint, flags uint) (p11.SessionHandle, error) {
	t, err := b.presentToken(slotID)
	if err != nil {
		return 0, err
	}
	if flags&p11.CKF_SERIAL_SESSION == 0 {
		return 0, p11.Error(p11.CKR_SESSION_PARALLEL_NOT_SUPPORTED)
	}
	var s *session
	err = b.spend(t, OpSession, func() error {
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.presentLocked(b.now) {
			return p11.Error(p11.CKR_DEVICE_REMOVED)
		}
		rw := flags&p11.CKF_RW_SESSION != 0
		if !rw && t.login == soIn {
			return p11.Error(p11.CKR_SESSION_READ_WRITE_SO_EXISTS)
		}
		s = &session{h: p11.SessionHandle(b.newHandle()), tok: t, gen: t.gen, rw: rw}
		t.sessions++
		if !rw {
			t.roSessions++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	b.sessions[s.h] = s
	b.mu.Unlock()
	return s.h, nil
}

// lookup returns the open session with the handle, alive or not.
func (b *Backend) lookup(sh p11.SessionHandle) (*session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[sh]
	if s == nil {
		return nil, p11.Error(p11.CKR_SESSION_HANDLE_INVALID)
	}
	return s, nil
}

// live returns the session with the handle if its token is in and it outlived no removal.
func (b *Backend) live(sh p11.SessionHandle) (*session, error) {
	s, err := b.lookup(sh)
	if err != nil {
		return nil, err
	}
	s.tok.mu.Lock()
	defer s.tok.mu.Unlock()
	if err := s.aliveLocked(b.now); err != nil {
		return nil, err
	}
	return s, nil
}

// inSession runs fn holding the session's token's mu, the session alive.
func (b *Backend) inSession(s *session, fn func(t *token) error) error {
	t := s.tok
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := s.aliveLocked(b.now); err != nil {
		return err
	}
	return fn(t)
}

// CloseSession implements pkcs11.Backend. Closing the token's last session logs it out
// and destroys the session's objects.
func (b *Backend) CloseSession(sh p11.SessionHandle) error {
	b.mu.Lock()
	s := b.sessions[sh]
	delete(b.sessions, sh)
	b.mu.Unlock()
	if s == nil {
		return p11.Error(p11.CKR_SESSION_HANDLE_INVALID)
	}
	t := s.tok
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.gen != t.gen {
		return nil // died with a removal: nothing of it is left on the token
	}
	for h, o := range t.objects {
		if o.session == sh {
			t.dropLocked(h, o)
		}
	}
	t.sessions--
	if !s.rw {
		t.roSessions--
	}
	if t.sessions == 0 {
		t.login = nobody
	}
	return nil
}

// GetSessionInfo implements pkcs11.Backend.
func (b *Backend) GetSessionInfo(sh p11.SessionHandle) (p11.SessionInfo, error) {
	s, err := b.lookup(sh)
	if err != nil {
		return p11.SessionInfo{}, err
	}
	var info p11.SessionInfo
	err = b.inSession(s, func(t *token) error {
		flags := uint(p11.CKF_SERIAL_SESSION)
		if s.rw {
			flags |= p11.CKF_RW_SESSION
		}
		info = p11.SessionInfo{SlotID: t.slot, State: s.state(), Flags: flags}
		return nil
	})
	return info, err
}

// Login implements pkcs11.Backend.
func (b *Backend) Login(sh p11.SessionHandle, userType uint, pin string) error {
	s, err := b.live(sh)
	if err != nil {
		return err
	}
	return b.spend(s.tok, OpLogin, func() error {
		return b.inSession(s, func(t *token) error {
			if userType != p11.CKU_SO && userType != p11.CKU_USER {
				return p11.Error(p11.CKR_USER_TYPE_INVALID)
			}
			want := userIn
			if userType == p11.CKU_SO {
				want = soIn
			}
			switch t.login {
			case want:
				return p11.Error(p11.CKR_USER_ALREADY_LOGGED_IN)
			case nobody:
			default:
				return p11.Error(p11.CKR_USER_ANOTHER_ALREADY_LOGGED_IN)
			}
			if want == soIn {
				if t.roSessions > 0 {
					return p11.Error(p11.CKR_SESSION_READ_ONLY_EXISTS)
				}
				if !t.initialized {
					return p11.Error(p11.CKR_USER_PIN_NOT_INITIALIZED)
				}
			} else if !t.userPINSet {
				return p11.Error(p11.CKR_USER_PIN_NOT_INITIALIZED)
			}
			if err := t.checkPINLocked(want == soIn, pin); err != nil {
				return err
			}
			t.login = want
			return nil
		})
	})
}

// Logout implements pkcs11.Backend.
func (b *Backend) Logout(sh p11.SessionHandle) error {
	s, err := b.lookup(sh)
	if err != nil {
		return err
	}
	return b.inSession(s, func(t *token) error {
		if t.login == nobody {
			return p11.Error(p11.CKR_USER_NOT_LOGGED_IN)
		}
		t.login = nobody
		return nil
	})
}

// InitPIN implements pkcs11.Backend: the SO sets the user PIN, which unblocks it.
func (b *Backend) InitPIN(sh p11.SessionHandle, pin string) error {
	s, err := b.live(sh)
	if err != nil {
		return err
	}
	return b.spend(s.tok, OpPIN, func() error {
		return b.inSession(s, func(t *token) error {
			if t.login != soIn || !s.rw {
				return p11.Error(p11.CKR_USER_NOT_LOGGED_IN)
			}
			if !t.pinLenOK(pin) {
				return p11.Error(p11.CKR_PIN_LEN_RANGE)
			}
			t.setUserPIN(pin)
			return nil
		})
	})
}

// SetPIN implements pkcs11.Backend: the SO's PIN when the SO is logged in, else the
// user's.
func (b *Backend) SetPIN(sh p11.SessionHandle, oldPIN string, newPIN string) error {
	s, err := b.live(sh)
	if err != nil {
		return err
	}
	return b.spend(s.tok, OpPIN, func() error {
		return b.inSession(s, func(t *token) error {
			if !s.rw {
				return p11.Error(p11.CKR_SESSION_READ_ONLY)
			}
			so := t.login == soIn
			if !so && !t.userPINSet {
				return p11.Error(p11.CKR_USER_PIN_NOT_INITIALIZED)
			}
			if !t.pinLenOK(newPIN) {
				return p11.Error(p11.CKR_PIN_LEN_RANGE)
			}
			if err := t.checkPINLocked(so, oldPIN); err != nil {
				return err
			}
			if so {
				t.soPIN = newPIN
			} else {
				t.setUserPIN(newPIN)
			}
			return nil
		})
	})
}

// visibleLocked returns the object if the session may see it.
func (t *token) visibleLocked(h p11.ObjectHandle) *object {
	o := t.objects[h]
	if o == nil || (o.private() && t.login != userIn) {
		return nil
	}
	return o
}

// storeLocked puts objects on the token, if they fit and the session may write them.
func (t *token) storeLocked(s *session, objs ...*object) ([]p11.ObjectHandle, error) {
	need := 0
	for _, o := range objs {
		if o.onToken() && !s.rw {
			return nil, p11.Error(p11.CKR_SESSION_READ_ONLY)
		}
		if o.private() && t.login != userIn {
			return nil, p11.Error(p11.CKR_USER_NOT_LOGGED_IN)
		}
		need += o.size
	}
	if t.model.Memory > 0 && t.used+need > t.model.Memory {
		return nil, p11.Error(p11.CKR_DEVICE_MEMORY)
	}
	if t.objects == nil {
		t.objects = map[p11.ObjectHandle]*object{}
	}
	hs := make([]p11.ObjectHandle, len(objs))
	for i, o := range objs {
		if !o.onToken() {
			o.session = s.h
		}
		hs[i] = p11.ObjectHandle(s.tok.newHandle())
		t.objects[hs[i]] = o
		t.used += o.size
	}
	return hs, nil
}

func (t *token) dropLocked(h p11.ObjectHandle, o *object) {
	delete(t.objects, h)
	t.used -= o.size
}

func (t *token) newHandle() uint { return uint(handleCounter.Add(1)) }

// CreateObject implements pkcs11.Backend.
func (b *Backend) CreateObject(sh p11.SessionHandle, temp []*p11.Attribute) (p11.ObjectHandle, error) {
	s, err := b.live(sh)
	if err != nil {
		return 0, err
	}
	o, err := newObject(s.tok.model, temp)
	if err != nil {
		return 0, err
	}
	var h p11.ObjectHandle
	err = b.spend(s.tok, OpWrite, func() error {
		return b.inSession(s, func(t *token) error {
			hs, err := t.storeLocked(s, o)
			if err == nil {
				h = hs[0]
			}
			return err
		})
	})
	return h, err
}

// DestroyObject implements pkcs11.Backend.
func (b *Backend) DestroyObject(sh p11.SessionHandle, oh p11.ObjectHandle) error {
	s, err := b.live(sh)
	if err != nil {
		return err
	}
	return b.spend(s.tok, OpWrite, func() error {
		return b.inSession(s, func(t *token) error {
			o := t.visibleLocked(oh)
			if o == nil {
				return p11.Error(p11.CKR_OBJECT_HANDLE_INVALID)
			}
			if o.onToken() && !s.rw {
				return p11.Error(p11.CKR_SESSION_READ_ONLY)
			}
			t.dropLocked(oh, o)
			return nil
		})
	})
}

// GetAttributeValue implements pkcs11.Backend. Private key material answers
// CKR_ATTRIBUTE_SENSITIVE; an attribute the object lacks, CKR_ATTRIBUTE_TYPE_INVALID.
func (b *Backend) GetAttributeValue(sh p11.SessionHandle, oh p11.ObjectHandle, a []*p11.Attribute) ([]*p11.Attribute, error) {
	s, err := b.live(sh)
	if err != nil {
		return nil, err
	}
	var out []*p11.Attribute
	err = b.spend(s.tok, OpRead, func() error {
		return b.inSession(s, func(t *token) error {
			o := t.visibleLocked(oh)
			if o == nil {
				return p11.Error(p11.CKR_OBJECT_HANDLE_INVALID)
			}
			out = make([]*p11.Attribute, len(a))
			for i, q := range a {
				if o.key != nil && (secret[q.Type] || q.Type == p11.CKA_VALUE) {
					return p11.Error(p11.CKR_ATTRIBUTE_SENSITIVE)
				}
				v, ok := o.attrs.get(q.Type)
				if !ok {
					return p11.Error(p11.CKR_ATTRIBUTE_TYPE_INVALID)
				}
				out[i] = &p11.Attribute{Type: q.Type, Value: slices.Clone(v)}
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// FindObjectsInit implements pkcs11.Backend.
func (b *Backend) FindObjectsInit(sh p11.SessionHandle, temp []*p11.Attribute) error {
	s, err := b.live(sh)
	if err != nil {
		return err
	}
	return b.spend(s.tok, OpFind, func() error {
		return b.inSession(s, func(t *token) error {
			if s.finding {
				return p11.Error(p11.CKR_OPERATION_ACTIVE)
			}
			var found []p11.ObjectHandle
			for h := range t.objects {
				if o := t.visibleLocked(h); o != nil && o.matches(temp) {
					found = append(found, h)
				}
			}
			slices.Sort(found)
			s.finding, s.found = true, found
			return nil
		})
	})
}

// FindObjects implements pkcs11.Backend.
func (b *Backend) FindObjects(sh p11.SessionHandle, max int) ([]p11.ObjectHandle, bool, error) {
	s, err := b.lookup(sh)
	if err != nil {
		return nil, false, err
	}
	var out []p11.ObjectHandle
	err = b.inSession(s, func(*token) error {
		if !s.finding {
			return p11.Error(p11.CKR_OPERATION_NOT_INITIALIZED)
		}
		n := min(max, len(s.found))
		out = slices.Clone(s.found[:n])
		s.found = s.found[n:]
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, false, nil
}

// FindObjectsFinal implements pkcs11.Backend.
func (b *Backend) FindObjectsFinal(sh p11.SessionHandle) error {
	s, err := b.lookup(sh)
	if err != nil {
		return err
	}
	return b.inSession(s, func(*token) error {
		if !s.finding {
			return p11.Error(p11.CKR_OPERATION_NOT_INITIALIZED)
		}
		s.finding, s.found = false, nil
		return nil
	})
}

// GenerateKeyPair implements pkcs11.Backend. The key is made with Go's crypto while the
// token is held; the drawn latency covers that time.
func (b *Backend) GenerateKeyPair(sh p11.SessionHandle, m []*p11.Mechanism, public, private []*p11.Attribute) (p11.ObjectHandle, p11.ObjectHandle, error) {
	s, err := b.live(sh)
	if err != nil {
		return 0, 0, err
	}
	req, err := checkKeyRequest(s.tok.model, m, public, private)
	if err != nil {
		return 0, 0, err
	}
	op, scale := OpKeygenEC, 1.0
	if req.rsaBits > 0 {
		op, scale = OpKeygenRSA, rsaScale(req.rsaBits)
	}
	// Refuse at once, as a token does, what could not be stored: no latency, no CPU.
	err = b.inSession(s, func(t *token) error {
		if isTrue(req.pub[p11.CKA_TOKEN]) || isTrue(req.priv[p11.CKA_TOKEN]) {
			if !s.rw {
				return p11.Error(p11.CKR_SESSION_READ_ONLY)
			}
		}
		if t.login != userIn {
			return p11.Error(p11.CKR_USER_NOT_LOGGED_IN)
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	var pubH, privH p11.ObjectHandle
	err = b.spendScaled(s.tok, op, scale, func() error {
		pub, priv, err := req.generate()
		if err != nil {
			return err
		}
		return b.inSession(s, func(t *token) error {
			hs, err := t.storeLocked(s, pub, priv)
			if err == nil {
				pubH, privH = hs[0], hs[1]
			}
			return err
		})
	})
	if err != nil {
		return 0, 0, err
	}
	return pubH, privH, nil
}

// keyForLocked checks that the object is a private key that may do what usage says, with
// the mechanism, and returns the operation.
func (t *token) keyForLocked(oh p11.ObjectHandle, usage uint, m []*p11.Mechanism) (*cryptoOp, error) {
	o := t.objects[oh]
	if o == nil || o.class() != p11.CKO_PRIVATE_KEY || o.key == nil {
		return nil, p11.Error(p11.CKR_KEY_HANDLE_INVALID)
	}
	if o.private() && t.login != userIn {
		return nil, p11.Error(p11.CKR_USER_NOT_LOGGED_IN)
	}
	if !isTrue(o.attrs.value(usage)) {
		return nil, p11.Error(p11.CKR_KEY_FUNCTION_NOT_PERMITTED)
	}
	if len(m) != 1 {
		return nil, p11.Error(p11.CKR_MECHANISM_INVALID)
	}
	mech := m[0].Mechanism
	if _, ok := t.model.mechanisms()[mech]; !ok {
		return nil, p11.Error(p11.CKR_MECHANISM_INVALID)
	}
	op := &cryptoOp{mech: mech, key: o.key}
	switch mech {
	case p11.CKM_ECDSA:
		if o.keyType() != p11.CKK_EC || usage != p11.CKA_SIGN {
			return nil, p11.Error(p11.CKR_KEY_TYPE_INCONSISTENT)
		}
	case p11.CKM_RSA_PKCS:
		if o.keyType() != p11.CKK_RSA {
			return nil, p11.Error(p11.CKR_KEY_TYPE_INCONSISTENT)
		}
	case p11.CKM_RSA_PKCS_PSS:
		if o.keyType() != p11.CKK_RSA || usage != p11.CKA_SIGN {
			return nil, p11.Error(p11.CKR_KEY_TYPE_INCONSISTENT)
		}
		pss, ok := pssParams(m[0].Parameter)
		if !ok {
			return nil, p11.Error(p11.CKR_MECHANISM_PARAM_INVALID)
		}
		op.pss = pss
	default:
		return nil, p11.Error(p11.CKR_MECHANISM_INVALID)
	}
	return op, nil
}

// SignInit implements pkcs11.Backend.
func (b *Backend) SignInit(sh p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error {
	s, err := b.lookup(sh)
	if err != nil {
		return err
	}
	return b.inSession(s, func(t *token) error {
		if s.sign != nil {
			return p11.Error(p11.CKR_OPERATION_ACTIVE)
		}
		op, err := t.keyForLocked(o, p11.CKA_SIGN, m)
		if err != nil {
			return err
		}
		s.sign = op
		return nil
	})
}

// takeOp ends the session's operation and returns it: a C_Sign or C_Decrypt ends it
// whether it succeeds or not.
func (b *Backend) takeOp(s *session, decrypt bool) (*cryptoOp, error) {
	var op *cryptoOp
	err := b.inSession(s, func(*token) error {
		p := &s.sign
		if decrypt {
			p = &s.decrypt
		}
		op, *p = *p, nil
		if op == nil {
			return p11.Error(p11.CKR_OPERATION_NOT_INITIALIZED)
		}
		return nil
	})
	return op, err
}

// Sign implements pkcs11.Backend.
func (b *Backend) Sign(sh p11.SessionHandle, message []byte) ([]byte, error) {
	s, err := b.lookup(sh)
	if err != nil {
		return nil, err
	}
	op, err := b.takeOp(s, false)
	if err != nil {
		return nil, err
	}
	class := OpSignRSA
	if op.mech == p11.CKM_ECDSA {
		class = OpSignEC
	}
	var sig []byte
	err = b.spend(s.tok, class, func() error {
		if err := b.inSession(s, func(*token) error { return nil }); err != nil {
			return err
		}
		sig, err = op.sign(message)
		return err
	})
	return sig, err
}

// DecryptInit implements pkcs11.Backend. Only CKM_RSA_PKCS: see the package doc on OAEP.
func (b *Backend) DecryptInit(sh p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error {
	s, err := b.lookup(sh)
	if err != nil {
		return err
	}
	return b.inSession(s, func(t *token) error {
		if s.decrypt != nil {
			return p11.Error(p11.CKR_OPERATION_ACTIVE)
		}
		op, err := t.keyForLocked(o, p11.CKA_DECRYPT, m)
		if err != nil {
			return err
		}
		s.decrypt = op
		return nil
	})
}

// Decrypt implements pkcs11.Backend.
func (b *Backend) Decrypt(sh p11.SessionHandle, cipher []byte) ([]byte, error) {
	s, err := b.lookup(sh)
	if err != nil {
		return nil, err
	}
	op, err := b.takeOp(s, true)
	if err != nil {
		return nil, err
	}
	var plain []byte
	err = b.spend(s.tok, OpDecrypt, func() error {
		if err := b.inSession(s, func(*token) error { return nil }); err != nil {
			return err
		}
		plain, err = op.decrypt(cipher)
		return err
	})
	return plain, err
}

// DeriveKey implements pkcs11.Backend. Simulated tokens derive nothing: an EC key that
// may only derive (an imported encryption key) cannot be checked on them, and the driver
// reports that as an unsupported mechanism.
func (b *Backend) DeriveKey(sh p11.SessionHandle, _ []*p11.Mechanism, _ p11.ObjectHandle, _ []*p11.Attribute) (p11.ObjectHandle, error) {
	if _, err := b.lookup(sh); err != nil {
		return 0, err
	}
	return 0, p11.Error(p11.CKR_MECHANISM_INVALID)
}
