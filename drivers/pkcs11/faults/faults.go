//go:build cgo

package faults

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
)

// Injector changes what a real module answers. Its zero value is ready; pass its Wrap to
// pkcs11.Options. All methods are safe for concurrent use.
type Injector struct {
	mu       sync.Mutex // guards the fields below
	fails    map[string][]uint
	after    map[string][]uint
	hooks    map[string]func()
	calls    map[string]int
	removed  map[uint]bool                 // slots whose token is pulled out
	sessions map[p11.SessionHandle]session // open sessions, opened through a wrapper
	dead     map[p11.SessionHandle]bool    // sessions a removal killed, until closed
	pins     map[uint]*pinCounters         // slots with emulated retry counters
	hidden   map[uint]bool                 // mechanisms the token seems not to have
	tears    []uint                        // answers of the certificate writes to tear
	keyTears []uint                        // answers of the key generations to tear
}

type session struct {
	slot  uint
	inner pkcs11.Backend // the module that opened it
}

type pinCounters struct {
	userMax, userLeft int
	soMax, soLeft     int
}

// calls lists the functions a rule may name.
var calls = map[string]bool{
	"GetInfo": true, "GetSlotList": true, "GetSlotInfo": true, "GetTokenInfo": true,
	"GetMechanismList": true, "GetMechanismInfo": true, "InitToken": true, "OpenSession": true,
	"CloseSession": true, "GetSessionInfo": true, "Login": true, "Logout": true, "InitPIN": true,
	"SetPIN": true, "CreateObject": true, "DestroyObject": true, "GetAttributeValue": true,
	"FindObjectsInit": true, "FindObjects": true, "FindObjectsFinal": true,
	"GenerateKeyPair": true, "SignInit": true, "Sign": true, "DecryptInit": true, "Decrypt": true,
	"DeriveKey": true, "Finalize": true, "Initialize": true,
}

func checkCall(call string) {
	if !calls[call] {
		panic(fmt.Sprintf("faults: unknown PKCS#11 call %q", call))
	}
}

// Wrap puts the injector in front of a module: pkcs11.Options{Wrap: inj.Wrap}. In front of
// a module that takes C_Finalize and C_Initialize (pkcs11.Reloader: a loaded library, not
// a backend in this process), it stands in front of those too, which the driver calls
// when it reloads the module: rules may name "Finalize" and "Initialize".
func (f *Injector) Wrap(b pkcs11.Backend) pkcs11.Backend {
	w := &backend{inner: b, f: f}
	if r, ok := b.(pkcs11.Reloader); ok {
		return &reloadingBackend{backend: w, reloader: r}
	}
	return w
}

// Fail makes the next n calls of the function (its C_ name without "C_", e.g.
// "GenerateKeyPair") return rv without reaching the module.
func (f *Injector) Fail(call string, rv uint, n int) {
	checkCall(call)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fails == nil {
		f.fails = map[string][]uint{}
	}
	for range n {
		f.fails[call] = append(f.fails[call], rv)
	}
}

// afterCalls are the functions FailAfter may name: those whose half-done effect matters.
var afterCalls = map[string]bool{
	"GenerateKeyPair": true, "CreateObject": true, "DestroyObject": true,
	"InitToken": true, "InitPIN": true, "SetPIN": true,
}

// FailAfter lets the next n calls of the function reach the module and then answers rv, as
// a token does when it is pulled out or loses power during the call: the caller hears of
// a failure, the token keeps what the call did. GenerateKeyPair keeps only its public key
// (its private key is destroyed), as when power goes between the two writes. With
// CKR_DEVICE_REMOVED or CKR_TOKEN_NOT_PRESENT the token is then out of its slot, until
// Insert. The function must be one of GenerateKeyPair, CreateObject, DestroyObject,
// InitToken, InitPIN, SetPIN.
func (f *Injector) FailAfter(call string, rv uint, n int) {
	if !afterCalls[call] {
		panic(fmt.Sprintf("faults: FailAfter does not support %q", call))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.after == nil {
		f.after = map[string][]uint{}
	}
	for range n {
		f.after[call] = append(f.after[call], rv)
	}
}

// TearCertificateWrites makes the next n C_CreateObject calls of a certificate tear: the
// token keeps what SoftHSM2 keeps when the process dies or the token loses power inside the
// call (it stores an object's defaults first, then the caller's template in a transaction
// that never commits): a certificate object with no ID, label, subject or value. The caller
// hears rv; with CKR_DEVICE_REMOVED or CKR_TOKEN_NOT_PRESENT the token is then out of its
// slot, until Insert.
func (f *Injector) TearCertificateWrites(rv uint, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.tears = append(f.tears, rv)
	}
}

// TearKeyGenerations makes the next n C_GenerateKeyPair calls tear: the token keeps what
// SoftHSM2 keeps when the process dies inside the call, a private key object with its
// defaults only (no ID, label or key material) and no key pair. The caller hears rv.
func (f *Injector) TearKeyGenerations(rv uint, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.keyTears = append(f.keyTears, rv)
	}
}

func (f *Injector) keyTear() (rv uint, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.keyTears) == 0 {
		return 0, false
	}
	rv, f.keyTears = f.keyTears[0], f.keyTears[1:]
	return rv, true
}

// tear takes the answer of the next torn certificate write, if one is queued.
func (f *Injector) tear(temp []*p11.Attribute) (rv uint, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.tears) == 0 || !isCertificate(temp) {
		return 0, false
	}
	rv, f.tears = f.tears[0], f.tears[1:]
	return rv, true
}

func isCertificate(temp []*p11.Attribute) bool {
	for _, a := range temp {
		if a.Type == p11.CKA_CLASS {
			return len(a.Value) == 8 && binary.NativeEndian.Uint64(a.Value) == p11.CKO_CERTIFICATE ||
				len(a.Value) == 4 && binary.NativeEndian.Uint32(a.Value) == p11.CKO_CERTIFICATE
		}
	}
	return false
}

// leave runs after a call that reached the module: it turns a success into the failure
// FailAfter queued, if any, pulling the token out for removal codes. interrupted says
// whether it did.
func (f *Injector) leave(call string, slot uint, err error) (out error, interrupted bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.after[call]
	if err != nil || len(q) == 0 {
		return err, false
	}
	f.after[call] = q[1:]
	if rv := q[0]; rv == p11.CKR_DEVICE_REMOVED || rv == p11.CKR_TOKEN_NOT_PRESENT {
		f.removeLocked(slot)
	}
	return p11.Error(q[0]), true
}

// Hook runs fn before every call of the function, outside the injector's lock: to block a
// call until a test lets it go, or to pull the token out at an exact moment. nil removes it.
func (f *Injector) Hook(call string, fn func()) {
	checkCall(call)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hooks == nil {
		f.hooks = map[string]func(){}
	}
	if fn == nil {
		delete(f.hooks, call)
		return
	}
	f.hooks[call] = fn
}

// Calls counts the calls of the function so far.
func (f *Injector) Calls(call string) int {
	checkCall(call)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[call]
}

// Remove pulls the token out of the slot: the slot reports no token, its sessions die
// (CKR_DEVICE_REMOVED, then CKR_SESSION_HANDLE_INVALID once it is back), and the login
// with them.
func (f *Injector) Remove(slot uint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removeLocked(slot)
}

func (f *Injector) removeLocked(slot uint) {
	if f.removed == nil {
		f.removed = map[uint]bool{}
		f.dead = map[p11.SessionHandle]bool{}
	}
	f.removed[slot] = true
	for sh, s := range f.sessions {
		if s.slot == slot {
			f.dead[sh] = true
		}
	}
}

// Insert puts the token back. Sessions the removal killed are closed on the module, so the
// token comes back logged out, as a real one does.
func (f *Injector) Insert(slot uint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.removed, slot)
	for sh := range f.dead {
		if s := f.sessions[sh]; s.slot == slot {
			_ = s.inner.CloseSession(sh)
			delete(f.sessions, sh)
			delete(f.dead, sh)
		}
	}
}

// HideMechanism makes tokens seem to lack the mechanism (CKM_*): it leaves their
// mechanism lists, as on tokens that do not have it.
func (f *Injector) HideMechanism(mech uint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hidden == nil {
		f.hidden = map[uint]bool{}
	}
	f.hidden[mech] = true
}

// LimitPINTries gives the token in the slot a retry counter, as real tokens have and
// SoftHSM has not: after user (or so) wrong PINs in a row that PIN is locked; the token
// then reports CKF_*_PIN_COUNT_LOW, _FINAL_TRY and _LOCKED, and logins answer
// CKR_PIN_LOCKED. C_InitPIN by the SO unblocks the user PIN; a good PIN resets its count.
func (f *Injector) LimitPINTries(slot uint, user, so int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pins == nil {
		f.pins = map[uint]*pinCounters{}
	}
	f.pins[slot] = &pinCounters{userMax: user, userLeft: user, soMax: so, soLeft: so}
}

// enter runs before a call: the hook, the count, then a queued failure or the effects of a
// removal. slot is used when hasSlot; sh when hasSession.
func (f *Injector) enter(call string, slot uint, hasSlot bool, sh p11.SessionHandle, hasSession bool) error {
	f.mu.Lock()
	hook := f.hooks[call]
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[call]++
	if q := f.fails[call]; len(q) > 0 {
		f.fails[call] = q[1:]
		return p11.Error(q[0])
	}
	if hasSession {
		if f.dead[sh] {
			if f.removed[f.sessions[sh].slot] {
				return p11.Error(p11.CKR_DEVICE_REMOVED)
			}
			return p11.Error(p11.CKR_SESSION_HANDLE_INVALID)
		}
	}
	if hasSlot && f.removed[slot] {
		return p11.Error(p11.CKR_TOKEN_NOT_PRESENT)
	}
	return nil
}

func (f *Injector) slotOf(sh p11.SessionHandle) (uint, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[sh]
	return s.slot, ok
}

// counter returns the slot's emulated counter for user or SO, nil when there is none.
// Call with f.mu held.
func (f *Injector) counterLocked(slot uint, so bool) (left *int, max int) {
	c := f.pins[slot]
	if c == nil {
		return nil, 0
	}
	if so {
		return &c.soLeft, c.soMax
	}
	return &c.userLeft, c.userMax
}

// checkPIN runs a call that checks a PIN against the emulated counter of the slot.
func (f *Injector) checkPIN(slot uint, so bool, call func() error) error {
	f.mu.Lock()
	left, _ := f.counterLocked(slot, so)
	locked := left != nil && *left <= 0
	f.mu.Unlock()
	if locked {
		return p11.Error(p11.CKR_PIN_LOCKED)
	}
	err := call()
	f.mu.Lock()
	defer f.mu.Unlock()
	left, max := f.counterLocked(slot, so)
	if left == nil {
		return err
	}
	switch {
	case err == nil:
		*left = max
	case isRV(err, p11.CKR_PIN_INCORRECT):
		*left--
	}
	return err
}

func (f *Injector) resetPIN(slot uint, so bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if left, max := f.counterLocked(slot, so); left != nil {
		*left = max
	}
}

// overlayFlags replaces the module's PIN flags by the emulated counters'.
func (f *Injector) overlayFlags(slot uint, flags uint) uint {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.pins[slot]
	if c == nil {
		return flags
	}
	flags &^= p11.CKF_USER_PIN_COUNT_LOW | p11.CKF_USER_PIN_FINAL_TRY | p11.CKF_USER_PIN_LOCKED |
		p11.CKF_SO_PIN_COUNT_LOW | p11.CKF_SO_PIN_FINAL_TRY | p11.CKF_SO_PIN_LOCKED
	flags |= pinFlags(c.userLeft, c.userMax, p11.CKF_USER_PIN_COUNT_LOW, p11.CKF_USER_PIN_FINAL_TRY, p11.CKF_USER_PIN_LOCKED)
	flags |= pinFlags(c.soLeft, c.soMax, p11.CKF_SO_PIN_COUNT_LOW, p11.CKF_SO_PIN_FINAL_TRY, p11.CKF_SO_PIN_LOCKED)
	return flags
}

func pinFlags(left, max int, low, final, locked uint) uint {
	switch {
	case left <= 0:
		return locked
	case left == 1:
		return final | low
	case left < max:
		return low
	}
	return 0
}

func isRV(err error, rv uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == rv
}
