//go:build cgo

package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"time"

	p11 "github.com/miekg/pkcs11"
	"github.com/rs/zerolog"
)

// Token is one token, followed by its serial number in whatever slot it sits.
//
// A Token holds one read/write session, opened on first use. Login state belongs to the
// token, not the session, and lasts while the session is open: Close (or pulling the token
// out) logs out. Calls on one token run one at a time, in no promised order, whichever
// Token handle they go through: every handle on the same token (same serial, same library,
// from any Module in the process) shares one turn. A token does one operation at a time
// anyway, and modules do not all cope with sessions of one token used at once: SoftHSM2
// encrypts and decrypts the private objects of a token with one cipher state shared by
// all its sessions, so a key generated while another session reads private objects can
// fail (CKR_GENERAL_ERROR, CKR_TEMPLATE_INCONSISTENT) or be stored under a damaged
// CKA_ID. A call waiting its turn gives up when its context ends, as does one waiting for
// a reload of the module to end (see Init). After the token was pulled out and put back,
// the next call opens a new session, and calls that need the user get CodeNotLoggedIn
// until Login. After the module was reloaded (Init does that after a device error, see
// Init), the next call opens a new session and logs the user in again with the PIN it
// logged in with, which a Token keeps in memory while the user is logged in through it.
// Login state and the user PIN belong to the token: a logout through any Token on it
// forgets the PIN in all of them, and a PIN change through any Token on it replaces it.
type Token struct {
	mod    *Module
	serial string // identity; never changes

	// sem is the token's turn, shared by every Token on the same token (library.turn): a
	// 1-slot semaphore held while calling the module; it guards the fields below.
	sem chan struct{}
	// label is the token's label as last seen, for error messages.
	label string
	// slot is where the token was last seen.
	slot uint
	// minPIN and maxPIN are the token's PIN length range (0, 0 when it reports none).
	minPIN, maxPIN uint
	// sess is the token's session, valid while open and opened in the library's current
	// seat (see library.reseat).
	sess p11.SessionHandle
	open bool
	seat uint64
	// userPIN is kept while the user is logged in through this Token, to log in again
	// when the module is reloaded under it (library.reseat); empty otherwise.
	userPIN string
	// epoch changes whenever object handles may have gone stale (new session, login or
	// logout, objects destroyed, token initialised): a Key finds its handle again then.
	epoch uint64
	// mechs caches the token's mechanism list.
	mechs []Mechanism
	// closed is set by Close; every later call fails.
	closed bool
}

// Serial is the token's serial number: its identity.
func (t *Token) Serial() string { return t.serial }

// remember keeps what the token says of itself that later calls need.
func (t *Token) remember(ti TokenInfo) {
	t.minPIN, t.maxPIN, t.label = ti.MinPINLen, ti.MaxPINLen, ti.Label
}

// acquire waits for the token, or for ctx to end.
func (t *Token) acquire(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return ctxErr(op, err)
	}
	select {
	case t.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctxErr(op, ctx.Err())
	}
}

func (t *Token) release() { <-t.sem }

// locked runs fn holding the token, without opening a session. Every error leaves as an
// *Error naming the token; every call is logged at debug level.
func (t *Token) locked(ctx context.Context, op string, fn func() error) error {
	start := time.Now()
	label, err := t.run(ctx, op, fn)
	if err != nil {
		e := wrapErr(op, err)
		if e.Token == "" {
			e.Token = t.serial
		}
		if e.Label == "" {
			e.Label = label
		}
		err = e
	}
	t.mod.log.Debug().Str("op", op).Str("serial", t.serial).Str("label", label).Dur("took_ms", time.Since(start)).
		Str("code", string(CodeOf(err))).Msg("pkcs11")
	return err
}

// run runs fn holding the token and returns the token's label as fn left it.
func (t *Token) run(ctx context.Context, op string, fn func() error) (label string, err error) {
	if err := t.acquire(ctx, op); err != nil {
		return "", err
	}
	defer t.release()
	defer func() { label = t.label }() // still holding the token
	if t.closed {
		return "", &Error{Op: op, Code: CodeGeneralError, Err: errors.New("the token handle is closed")}
	}
	if err := t.mod.check(ctx, op); err != nil {
		return "", err
	}
	if err := t.mod.enter(ctx, op); err != nil {
		return "", err
	}
	defer t.mod.leave()
	return "", fn()
}

// do runs fn holding the token, with its session open.
func (t *Token) do(ctx context.Context, op string, fn func(sh p11.SessionHandle) error) error {
	return t.locked(ctx, op, func() error {
		sh, err := t.sessionLocked(op)
		if err != nil {
			return err
		}
		if err := fn(sh); err != nil {
			e := wrapErr(op, err)
			// The session of a token that went away is dead; one with an operation left
			// active by a module that did not end it is wedged. Either way the next call
			// starts a new session (logged out, if this was the token's last session).
			switch e.Code {
			case CodeNotPresent, CodeDeviceRemoved, CodeSessionError:
				t.dropSessionLocked()
			}
			return e
		}
		return nil
	})
}

// locateLocked finds the slot the token is in now.
func (t *Token) locateLocked(op string) (uint, error) {
	b := t.mod.b
	if ti, err := b.GetTokenInfo(t.slot); err == nil && trim(ti.SerialNumber) == t.serial {
		t.remember(tokenInfo(t.slot, ti))
		return t.slot, nil
	}
	slots, err := b.GetSlotList(true)
	if err != nil {
		return 0, wrapErr(op, err)
	}
	for _, s := range slots {
		if ti, err := b.GetTokenInfo(s); err == nil && trim(ti.SerialNumber) == t.serial {
			t.slot = s
			t.remember(tokenInfo(s, ti))
			return s, nil
		}
	}
	return 0, &Error{Op: op, Code: CodeNotPresent, Err: errors.New("the token is not in any slot")}
}

func (t *Token) sessionLocked(op string) (p11.SessionHandle, error) {
	if t.open && t.seat == t.mod.lib.seat {
		return t.sess, nil
	}
	relogin := ""
	if t.open {
		// The module was reloaded under the session (library.reseat): it is gone, and
		// so is the login it held, which this Token restores.
		relogin = t.userPIN
		t.open, t.userPIN = false, ""
		t.epoch++
	}
	slot, err := t.locateLocked(op)
	if err != nil {
		return 0, err
	}
	sh, err := t.mod.b.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if rvOf(err) == p11.CKR_TOKEN_WRITE_PROTECTED {
		// A write-protected token can still log in and sign.
		sh, err = t.mod.b.OpenSession(slot, p11.CKF_SERIAL_SESSION)
	}
	if err != nil {
		return 0, wrapErr(op, err)
	}
	t.sess, t.open, t.seat = sh, true, t.mod.lib.seat
	t.epoch++
	if relogin != "" {
		if err := t.loginLocked(op, sh, p11.CKU_USER, relogin); err != nil {
			// Left logged out: calls that need the user say so, as after a removal.
			t.mod.log.Info().Str("serial", t.serial).Str("code", string(CodeOf(err))).
				Msg("pkcs11: the user could not log in again after the module was reloaded")
		} else {
			t.userPIN = relogin
		}
	}
	return sh, nil
}

func (t *Token) dropSessionLocked() {
	if t.open {
		if t.seat == t.mod.lib.seat { // else the reload ended it, and the handle is stale
			_ = t.mod.b.CloseSession(t.sess) // the session may be gone already
		}
		t.open = false
		t.epoch++
	}
	t.userPIN = ""
}

// closeSession is how Module.Close closes the token: it waits for a running call.
func (t *Token) closeSession() {
	t.sem <- struct{}{}
	defer t.release()
	// Without a context to end the wait: a reload waiting or running ends by itself. A
	// module down since a reload needs no call here, since the reload ended the session.
	_ = t.mod.lib.use.Acquire(context.Background(), 1)
	defer t.mod.lib.use.Release(1)
	t.dropSessionLocked()
	t.closed = true
	t.mod.lib.track(t, false)
}

// Close ends the token's session, which logs it out. Calling it twice is harmless.
func (t *Token) Close() error {
	t.closeSession()
	t.mod.mu.Lock()
	delete(t.mod.tokens, t)
	t.mod.mu.Unlock()
	return nil
}

// Info reads the token's current information (PIN counters, free memory, ...).
func (t *Token) Info(ctx context.Context) (TokenInfo, error) {
	const op = "token info"
	var info TokenInfo
	err := t.locked(ctx, op, func() error {
		slot, err := t.locateLocked(op)
		if err != nil {
			return err
		}
		ti, err := t.mod.b.GetTokenInfo(slot)
		if err != nil {
			return err
		}
		info = tokenInfo(slot, ti)
		return nil
	})
	return info, err
}

// stateLocked returns the session's CKS_* state.
func (t *Token) stateLocked(sh p11.SessionHandle) (uint, error) {
	si, err := t.mod.b.GetSessionInfo(sh)
	if err != nil {
		return 0, err
	}
	return si.State, nil
}

func userState(state uint) bool {
	return state == p11.CKS_RO_USER_FUNCTIONS || state == p11.CKS_RW_USER_FUNCTIONS
}

// requireUserLocked fails with CodeNotLoggedIn unless the user is logged in.
func (t *Token) requireUserLocked(op string, sh p11.SessionHandle) error {
	state, err := t.stateLocked(sh)
	if err != nil {
		return err
	}
	if !userState(state) {
		return &Error{Op: op, Code: CodeNotLoggedIn, Err: errors.New("log in with the user PIN first")}
	}
	return nil
}

// logoutLocked logs out whoever is logged in. Private objects' handles go stale.
func (t *Token) logoutLocked(sh p11.SessionHandle) {
	_ = t.mod.b.Logout(sh) // CKR_USER_NOT_LOGGED_IN when nobody was
	t.epoch++
	// The login was the token's, so every Token on it is logged out: none may log in
	// again after a reload.
	for _, o := range t.sameTokenLocked() {
		o.userPIN = ""
	}
}

// sameTokenLocked returns t and the other open Tokens on its token, whichever Module of
// the library they came from. They share t's turn, which the caller holds, so their
// fields are the caller's to change.
func (t *Token) sameTokenLocked() []*Token {
	return append(t.mod.lib.others(t), t)
}

// loginLocked logs in as user or SO, checking the PIN even when someone is logged in
// already.
func (t *Token) loginLocked(op string, sh p11.SessionHandle, userType uint, pin string) error {
	which := "user PIN"
	if userType == p11.CKU_SO {
		which = "SO PIN"
	}
	if err := checkPINLen(op, which, pin, t.minPIN, t.maxPIN); err != nil {
		return err
	}
	err := t.mod.b.Login(sh, userType, pin)
	if rv := rvOf(err); rv == p11.CKR_USER_ALREADY_LOGGED_IN || rv == p11.CKR_USER_ANOTHER_ALREADY_LOGGED_IN {
		var keeping []*Token // the Tokens to log in again after a reload, as before
		for _, o := range t.sameTokenLocked() {
			if o.userPIN != "" {
				keeping = append(keeping, o)
			}
		}
		t.logoutLocked(sh)
		err = t.mod.b.Login(sh, userType, pin)
		if err == nil && userType == p11.CKU_USER {
			for _, o := range keeping {
				o.userPIN = pin // the user PIN is the token's: this one is it
			}
		}
	}
	if err != nil {
		return t.pinErr(op, err, userType == p11.CKU_SO)
	}
	t.epoch++
	return nil
}

// pinErr wraps an error of a call that checked a PIN, adding the PIN's retry state.
func (t *Token) pinErr(op string, err error, so bool) *Error {
	e := wrapErr(op, err)
	if e.Code == CodePINIncorrect || e.Code == CodePINLocked {
		e = pinStatusErr(t.mod.b, t.slot, e, so)
	}
	return e
}

// Login logs the user in. A PIN of a length the token cannot take gives CodePINLenRange
// without trying it; a wrong PIN gives CodePINIncorrect with the PIN's retry state in
// Error.PIN; the try that locks it gives CodePINLocked.
func (t *Token) Login(ctx context.Context, pin string) error {
	const op = "login"
	return t.do(ctx, op, func(sh p11.SessionHandle) error {
		if err := t.loginLocked(op, sh, p11.CKU_USER, pin); err != nil {
			return err
		}
		t.userPIN = pin
		return nil
	})
}

// Logout logs out whoever is logged in. Logging out when nobody is logged in is no error.
func (t *Token) Logout(ctx context.Context) error {
	return t.do(ctx, "logout", func(sh p11.SessionHandle) error {
		t.logoutLocked(sh)
		return nil
	})
}

// LoggedIn reports whether the user is logged in.
func (t *Token) LoggedIn(ctx context.Context) (bool, error) {
	var in bool
	err := t.do(ctx, "session state", func(sh p11.SessionHandle) error {
		state, err := t.stateLocked(sh)
		in = userState(state)
		return err
	})
	return in, err
}

// InitUserPIN sets the user PIN with the SO PIN (C_InitPIN): how a fresh token gets its
// user PIN, and how a locked user PIN is reset. It logs out the user.
func (t *Token) InitUserPIN(ctx context.Context, soPIN, userPIN string) error {
	const op = "set user PIN"
	return t.do(ctx, op, func(sh p11.SessionHandle) error {
		if err := checkPINLen(op, "new user PIN", userPIN, t.minPIN, t.maxPIN); err != nil {
			return err
		}
		t.logoutLocked(sh)
		if err := t.loginLocked(op, sh, p11.CKU_SO, soPIN); err != nil {
			return err
		}
		defer t.logoutLocked(sh)
		return t.mod.b.InitPIN(sh, userPIN)
	})
}

// ChangeUserPIN changes the user PIN (C_SetPIN). A wrong old PIN counts as a wrong PIN.
// The user stays logged in if they were.
func (t *Token) ChangeUserPIN(ctx context.Context, oldPIN, newPIN string) error {
	const op = "change user PIN"
	return t.do(ctx, op, func(sh p11.SessionHandle) error {
		if err := checkPINLen(op, "user PIN", oldPIN, t.minPIN, t.maxPIN); err != nil {
			return err
		}
		if err := checkPINLen(op, "new user PIN", newPIN, t.minPIN, t.maxPIN); err != nil {
			return err
		}
		state, err := t.stateLocked(sh)
		if err != nil {
			return err
		}
		if state == p11.CKS_RW_SO_FUNCTIONS {
			t.logoutLocked(sh) // else C_SetPIN would change the SO PIN
		}
		if err := t.mod.b.SetPIN(sh, oldPIN, newPIN); err != nil {
			return t.pinErr(op, err, false)
		}
		// The user PIN is the token's: whichever Token keeps it to log in again keeps
		// the new one.
		for _, o := range t.sameTokenLocked() {
			if o.userPIN != "" {
				o.userPIN = newPIN
			}
		}
		return nil
	})
}

// ChangeSOPIN changes the SO PIN. It logs out the user.
func (t *Token) ChangeSOPIN(ctx context.Context, oldPIN, newPIN string) error {
	const op = "change SO PIN"
	return t.do(ctx, op, func(sh p11.SessionHandle) error {
		if err := checkPINLen(op, "new SO PIN", newPIN, t.minPIN, t.maxPIN); err != nil {
			return err
		}
		t.logoutLocked(sh)
		if err := t.loginLocked(op, sh, p11.CKU_SO, oldPIN); err != nil {
			return err
		}
		defer t.logoutLocked(sh)
		if err := t.mod.b.SetPIN(sh, oldPIN, newPIN); err != nil {
			return t.pinErr(op, err, true)
		}
		return nil
	})
}

// Init initialises the token (C_InitToken): every object on it goes, the SO PIN and label
// are set, and the user PIN must then be set with InitUserPIN. An initialised token is
// refused with CodeAlreadyInitialized unless opts.Force; re-initialising needs its
// current SO PIN. Keys obtained before are dead. Another session on the token in this
// process (another Token for it) makes it fail with CodeSessionError.
//
// When the token answers CodeDeviceError, the module is reloaded (finalized and
// initialised again) and the initialisation tried again, up to 4 times: SoftHSM2 cannot
// reset a token holding an object a write cut short left half-made until the module is
// reloaded. A token still failing has damaged storage: the error says to re-initialise it
// with its vendor's tool or replace it. A reload waits for the calls in flight on every
// token of the module, and holds new ones back meanwhile; when ctx ends first it gives up
// having finalized nothing, and Init fails with CodeCancelled. A reload whose
// C_Initialize fails leaves the module down: every later call tries C_Initialize again,
// and fails with CodeModuleLoadFailed while it fails.
func (t *Token) Init(ctx context.Context, opts InitOptions) (TokenInfo, error) {
	return t.mod.initWithReloads(ctx, func(e *zerolog.Event) *zerolog.Event { return e.Str("serial", t.serial) },
		func() (TokenInfo, error) { return t.initOnce(ctx, opts) })
}

// initOnce is one try of Init.
func (t *Token) initOnce(ctx context.Context, opts InitOptions) (TokenInfo, error) {
	const op = "initialise token"
	var info TokenInfo
	err := t.locked(ctx, op, func() error {
		slot, err := t.locateLocked(op)
		if err != nil {
			return err
		}
		if ti, err := t.mod.b.GetTokenInfo(slot); err == nil && ti.Flags&p11.CKF_TOKEN_INITIALIZED != 0 && !opts.Force {
			// Refuse before closing the session, so that a refused wipe changes nothing.
			return &Error{Op: op, Code: CodeAlreadyInitialized, Err: errors.New("the token is initialised already; wiping it needs Force")}
		}
		t.dropSessionLocked()
		// C_InitToken refuses while any session is open on the token: other Tokens on it
		// (an inventory scan's, say) may hold one between their calls. Holding the turn,
		// none of them is in a call: end their sessions too; each opens a new one at its
		// next call, as after a removal.
		for _, o := range t.mod.lib.others(t) {
			o.dropSessionLocked()
		}
		info, err = initToken(t.mod.b, op, slot, opts)
		t.epoch++
		t.mechs = nil
		if err == nil {
			t.remember(info)
		}
		return err
	})
	return info, err
}

// mechanismsLocked returns the token's mechanisms, read once.
func (t *Token) mechanismsLocked(op string) ([]Mechanism, error) {
	if t.mechs != nil {
		return t.mechs, nil
	}
	slot, err := t.locateLocked(op)
	if err != nil {
		return nil, err
	}
	ms, err := t.mod.b.GetMechanismList(slot)
	if err != nil {
		return nil, err
	}
	out := make([]Mechanism, 0, len(ms))
	for _, m := range ms {
		mi, err := t.mod.b.GetMechanismInfo(slot, []*p11.Mechanism{m})
		if err != nil {
			return nil, err
		}
		out = append(out, Mechanism{Type: m.Mechanism, Name: mechanismName(m.Mechanism),
			MinKeySize: mi.MinKeySize, MaxKeySize: mi.MaxKeySize, Flags: mi.Flags})
	}
	t.mechs = out
	return out, nil
}

// requireMechanismLocked fails with CodeMechanismNotSupported unless the token offers the
// mechanism for the purpose (a CKF_* flag such as CKF_SIGN).
func (t *Token) requireMechanismLocked(op string, mech, flag uint) error {
	ms, err := t.mechanismsLocked(op)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Type == mech && m.Flags&flag != 0 {
			return nil
		}
	}
	return &Error{Op: op, Code: CodeMechanismNotSupported, Err: fmt.Errorf("the token does not offer %s", mechanismName(mech))}
}
