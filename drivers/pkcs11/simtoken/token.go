//go:build cgo

package simtoken

import (
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	p11 "github.com/miekg/pkcs11"
)

// Who is logged in on a token.
const (
	nobody = iota
	userIn
	soIn
)

// token is one simulated token. Its serial, model and slot never change.
type token struct {
	serial  string
	model   *Model
	profile *Profile // nil: the backend's
	slot    uint

	// busy is held for a whole operation that takes token time: a token does one at a
	// time. It is taken before mu, never while holding it.
	busy  sync.Mutex
	spent atomic.Int64 // token time, in nanoseconds

	mu       sync.Mutex // guards the fields below
	present  bool
	backAt   time.Time // when a token pulled out by a fault comes back; zero: on Insert
	gen      uint64    // bumped at every removal: sessions of an older one are dead
	latRNG   *rand.Rand
	faultRNG *rand.Rand

	initialized bool
	label       string
	soPIN       string
	userPIN     string
	userPINSet  bool
	soLeft      int
	userLeft    int
	login       int // nobody, userIn or soIn: login belongs to the token, not a session
	sessions    int // live sessions
	roSessions  int // of which read-only
	objects     map[p11.ObjectHandle]*object
	used        int // bytes of object memory in use
}

func newToken(serial string, m *Model, seed uint64) *token {
	k := serialKey(serial)
	return &token{
		serial: serial, model: m, present: true,
		// Two streams, so that changing fault rates leaves latencies as they were.
		latRNG:   rand.New(rand.NewPCG(seed, k)),
		faultRNG: rand.New(rand.NewPCG(seed^0x9e3779b97f4a7c15, k)),
		soLeft:   m.SOTries, userLeft: m.UserPINTries,
	}
}

// isPresent reports whether the token is in its slot, bringing it back when its time out
// is over.
func (t *token) isPresent(now func() time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.presentLocked(now)
}

func (t *token) presentLocked(now func() time.Time) bool {
	if !t.present && !t.backAt.IsZero() && !now().Before(t.backAt) {
		t.present, t.backAt = true, time.Time{}
	}
	return t.present
}

// removeLocked takes the token out of its slot, until back (zero: until Insert). Its
// sessions die, and the login and session objects with them.
func (t *token) removeLocked(back time.Time) {
	t.present, t.backAt = false, back
	t.gen++
	t.login = nobody
	t.sessions, t.roSessions = 0, 0
	for h, o := range t.objects {
		if o.session != 0 {
			t.dropLocked(h, o)
		}
	}
}

// initialise wipes the token and sets its SO PIN and label (C_InitToken).
func (t *token) initialise(soPIN, label string) {
	t.initialized = true
	t.soPIN, t.label = soPIN, strings.TrimRight(label, " ")
	t.userPIN, t.userPINSet = "", false
	t.soLeft, t.userLeft = t.model.SOTries, t.model.UserPINTries
	t.objects, t.used = nil, 0
}

func (t *token) setUserPIN(pin string) {
	t.userPIN, t.userPINSet, t.userLeft = pin, true, t.model.UserPINTries
}

// checkPINLocked checks a PIN against the user's or the SO's, counting a wrong one.
func (t *token) checkPINLocked(so bool, pin string) error {
	want, left, max := t.userPIN, &t.userLeft, t.model.UserPINTries
	if so {
		want, left, max = t.soPIN, &t.soLeft, t.model.SOTries
	}
	if *left <= 0 {
		return p11.Error(p11.CKR_PIN_LOCKED)
	}
	if pin != want {
		*left--
		return p11.Error(p11.CKR_PIN_INCORRECT)
	}
	*left = max
	return nil
}

func (t *token) pinLenOK(pin string) bool {
	return len(pin) >= t.model.MinPINLen && len(pin) <= t.model.MaxPINLen
}

func (t *token) flagsLocked() uint {
	f := uint(p11.CKF_RNG | p11.CKF_LOGIN_REQUIRED)
	if t.initialized {
		f |= p11.CKF_TOKEN_INITIALIZED
	}
	if t.userPINSet {
		f |= p11.CKF_USER_PIN_INITIALIZED
	}
	f |= pinFlags(t.userLeft, t.model.UserPINTries, p11.CKF_USER_PIN_COUNT_LOW, p11.CKF_USER_PIN_FINAL_TRY, p11.CKF_USER_PIN_LOCKED)
	f |= pinFlags(t.soLeft, t.model.SOTries, p11.CKF_SO_PIN_COUNT_LOW, p11.CKF_SO_PIN_FINAL_TRY, p11.CKF_SO_PIN_LOCKED)
	return f
}

func pinFlags(left, max int, low, final, locked uint) uint {
	switch {
	case left <= 0:
		return locked
	case left == 1 && max > 1:
		return final | low
	case left < max:
		return low
	}
	return 0
}

// unavailable is CK_UNAVAILABLE_INFORMATION.
const unavailable = ^uint(0)

func (t *token) infoLocked() p11.TokenInfo {
	mem, free := unavailable, unavailable
	if t.model.Memory > 0 {
		mem, free = uint(t.model.Memory), uint(max(t.model.Memory-t.used, 0))
	}
	return p11.TokenInfo{
		Label:              pad(t.label, 32),
		ManufacturerID:     pad(t.model.Manufacturer, 32),
		Model:              pad(t.model.Model, 16),
		SerialNumber:       pad(t.serial, 16),
		Flags:              t.flagsLocked(),
		SessionCount:       uint(t.sessions),
		RwSessionCount:     uint(t.sessions - t.roSessions),
		MaxPinLen:          uint(t.model.MaxPINLen),
		MinPinLen:          uint(t.model.MinPINLen),
		TotalPublicMemory:  mem,
		FreePublicMemory:   free,
		TotalPrivateMemory: mem,
		FreePrivateMemory:  free,
		HardwareVersion:    p11.Version{Major: 1},
		FirmwareVersion:    p11.Version{Major: 1},
	}
}

// pad blank-pads s to n bytes, as CK_TOKEN_INFO's fixed fields are.
func pad(s string, n int) string {
	if len(s) >= n {
		return s[:n]
	}
	return s + strings.Repeat(" ", n-len(s))
}

// session is an open session on a token. Its fields are guarded by its token's mu.
type session struct {
	h   p11.SessionHandle
	tok *token
	gen uint64 // the token's gen when opened
	rw  bool

	finding bool
	found   []p11.ObjectHandle
	sign    *cryptoOp
	decrypt *cryptoOp
}

// aliveLocked fails unless the session's token is in and the session outlived no removal.
func (s *session) aliveLocked(now func() time.Time) error {
	t := s.tok
	if !t.presentLocked(now) {
		return p11.Error(p11.CKR_DEVICE_REMOVED)
	}
	if s.gen != t.gen {
		return p11.Error(p11.CKR_SESSION_HANDLE_INVALID)
	}
	return nil
}

func (s *session) state() uint {
	switch s.tok.login {
	case userIn:
		if s.rw {
			return p11.CKS_RW_USER_FUNCTIONS
		}
		return p11.CKS_RO_USER_FUNCTIONS
	case soIn:
		return p11.CKS_RW_SO_FUNCTIONS
	}
	if s.rw {
		return p11.CKS_RW_PUBLIC_SESSION
	}
	return p11.CKS_RO_PUBLIC_SESSION
}
