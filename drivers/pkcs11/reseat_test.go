//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	p11 "github.com/miekg/pkcs11"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/faults"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// SoftHSM2 keeps a token as a directory: token.object, and per object <uuid>.object and
// <uuid>.lock. Writing a new object creates its .object file, then its .lock file; a
// process killed between the two leaves an empty .object without its .lock (5 kills in
// 400 of a process running an agent's calls in a loop did). C_InitToken then removes
// that .object, fails on the missing .lock (CKR_DEVICE_ERROR), and fails the same way
// for as long as the process keeps the module loaded: SoftHSM2 lists a token's objects
// once and does not see that the file is gone. The tests below leave a token's files as
// such a kill does, from outside the process and before it loads the module, as a killed
// agent's successor finds them.

// objectFiles lists the token directory's object files (<uuid>.object), token.object aside.
func objectFiles(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if strings.HasSuffix(e.Name(), ".object") && e.Name() != "token.object" {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// damagedToken makes a token with a key and a second token with a key, through the
// module, closes the module as a killed process would have it closed, and leaves n
// objects cut short on the first token, in a store of the test's own. It returns the
// tokens' labels and serials.
func damagedToken(t *testing.T, n int) (label, serial, otherSerial string) {
	t.Helper()
	testenv.NewSoftHSMStore(t)
	label, serial = newToken(t)
	_, otherSerial = newToken(t)
	mod, err := pkcs11.Open(testenv.SoftHSMModule, pkcs11.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range []string{serial, otherSerial} {
		tok, err := mod.FindToken(context.Background(), &uri.URI{Serial: s})
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.Login(context.Background(), userPIN); err != nil {
			t.Fatal(err)
		}
		generate(t, tok, []byte{byte(i + 1)}, "ec-p256", pkcs11.UsageSign)
	}
	if err := mod.Close(); err != nil {
		t.Fatal(err)
	}
	dir := testenv.SoftHSMTokenDir(t, serial)
	for range n {
		testenv.CutObjectWriteShort(t, dir)
	}
	return label, serial, otherSerial
}

func TestInitAfterObjectWritesCutShort(t *testing.T) {
	ctx := context.Background()
	label, serial, otherSerial := damagedToken(t, 2) // two kills, two objects cut short
	dir := testenv.SoftHSMTokenDir(t, serial)

	var logs bytes.Buffer
	mod := openModule(t, pkcs11.Options{Logger: zerolog.New(&logs).Level(zerolog.InfoLevel)})
	tok := openToken(t, mod, serial)
	// Another token of the module, logged in, its key in use: the reloads must not cost it
	// its login.
	other := openToken(t, mod, otherSerial)
	if err := other.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	otherKey, err := other.Key(ctx, []byte{2})
	if err != nil {
		t.Fatal(err)
	}

	info, err := tok.Init(ctx, pkcs11.InitOptions{Label: label + "-w", SOPIN: soPIN, Force: true})
	if err != nil {
		t.Fatalf("initialise a token with two objects cut short: %v", err)
	}
	wipedThroughReloads(t, info, label+"-w", &logs, dir)

	// The other token was logged in again after each reload: its key still signs, and its
	// private key is still seen.
	stillLoggedIn(t, other, "the other token after the reloads")
	digest := sha256.Sum256([]byte("after the reload"))
	sig, err := otherKey.SignContext(ctx, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("sign with the other token's key after the reloads: %v", err)
	}
	if !ecdsa.VerifyASN1(otherKey.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("the other token's signature does not verify")
	}
	keys, err := other.Keys(ctx)
	if err != nil || len(keys) != 1 || !keys[0].Private {
		t.Fatalf("the other token's keys after the reloads: %+v, %v", keys, err)
	}
}

// A token that still fails after the reloads (injected: SoftHSM2 gets past whatever a
// kill leaves, given enough of them) is reported with what the operator can do.
func TestInitOfATokenStillFailingAfterTheReloads(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	label, serial := newToken(t)
	var logs bytes.Buffer
	mod := openModule(t, pkcs11.Options{Wrap: inj.Wrap, Logger: zerolog.New(&logs).Level(zerolog.InfoLevel)})
	tok := openToken(t, mod, serial)
	inj.Fail("InitToken", p11.CKR_DEVICE_ERROR, 5) // the first try and the tries after 4 reloads

	_, err := tok.Init(ctx, pkcs11.InitOptions{Label: label, SOPIN: soPIN, Force: true})
	e := codeErr(t, err, pkcs11.CodeDeviceError)
	says(t, e, "could not be reset, even after reloading the module 4 times", "re-initialise it with its vendor's tool, or replace it", "CKR_DEVICE_ERROR")
	if !pkcs11.Retryable(err) {
		t.Error("a device error is not retryable")
	}
	if got := reloadsLogged(&logs); got != 4 {
		t.Errorf("module reloads logged: %d, want 4:\n%s", got, logs.String())
	}
	// The token answers again: the next initialisation (a retry of the job) succeeds.
	info, err := tok.Init(ctx, pkcs11.InitOptions{Label: label, SOPIN: soPIN, Force: true})
	if err != nil || !info.Initialized {
		t.Fatalf("initialise again: %+v, %v", info, err)
	}
}

// reloadsLogged counts the module reloads the driver logged.
func reloadsLogged(logs *bytes.Buffer) int {
	return strings.Count(logs.String(), "the module was reloaded")
}

// reloadRig is a module with fault injection and its log, and two tokens: serial, the one
// a test watches, and zSerial, the one whose initialisation reloads the module (reload).
type reloadRig struct {
	inj             faults.Injector
	logs            bytes.Buffer
	mod             *pkcs11.Module
	serial, zSerial string
}

func newReloadRig(t *testing.T) *reloadRig {
	t.Helper()
	r := &reloadRig{}
	_, r.serial = newToken(t)
	_, r.zSerial = newToken(t)
	r.mod = openModule(t, pkcs11.Options{Wrap: r.inj.Wrap, Logger: zerolog.New(&r.logs).Level(zerolog.InfoLevel)})
	return r
}

// reload reloads the module under the tokens open on it: initialising the token z fails
// once with a device error, so Init reloads the module and tries again.
func (r *reloadRig) reload(t *testing.T, z *pkcs11.Token) {
	t.Helper()
	r.inj.Fail("InitToken", p11.CKR_DEVICE_ERROR, 1)
	before := reloadsLogged(&r.logs)
	if _, err := z.Init(context.Background(), pkcs11.InitOptions{Label: "reloaded", SOPIN: soPIN, Force: true}); err != nil {
		t.Fatalf("initialise a token through one reload: %v", err)
	}
	if got := reloadsLogged(&r.logs) - before; got != 1 {
		t.Fatalf("module reloads logged: %d, want 1:\n%s", got, r.logs.String())
	}
}

// Login state belongs to the token, not to a Token handle: a logout through one handle
// logs out every handle on the token, and a reload must not log the user back in with
// the PIN another handle kept.
func TestReloadAfterALogoutThroughAnotherHandle(t *testing.T) {
	ctx := context.Background()
	r := newReloadRig(t)
	a, b, z := openToken(t, r.mod, r.serial), openToken(t, r.mod, r.serial), openToken(t, r.mod, r.zSerial)
	if err := a.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	for _, logout := range []func() error{
		func() error { return b.Logout(ctx) },
		func() error { return b.InitUserPIN(ctx, soPIN, userPIN) },
		func() error { return b.ChangeSOPIN(ctx, soPIN, soPIN) },
	} {
		if err := a.Login(ctx, userPIN); err != nil {
			t.Fatal(err)
		}
		if err := logout(); err != nil {
			t.Fatal(err)
		}
		if in, err := a.LoggedIn(ctx); err != nil || in {
			t.Fatalf("after a logout through another handle: logged in %t, %v", in, err)
		}
		r.reload(t, z)
		if in, err := a.LoggedIn(ctx); err != nil || in {
			t.Fatalf("after a logout through another handle and a reload: logged in %t, %v", in, err)
		}
	}
}

// A user PIN changed through another handle is the one a reload logs in with again: the
// old one would fail, and count as a wrong PIN on a token that locks it.
func TestReloadAfterAPINChangeThroughAnotherHandle(t *testing.T) {
	ctx := context.Background()
	r := newReloadRig(t)
	a, b, z := openToken(t, r.mod, r.serial), openToken(t, r.mod, r.serial), openToken(t, r.mod, r.zSerial)
	info, err := a.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.inj.LimitPINTries(info.SlotID, 3, 3)
	if err := a.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	const newPIN = "246810"
	if err := b.ChangeUserPIN(ctx, userPIN, newPIN); err != nil {
		t.Fatal(err)
	}
	r.reload(t, z)
	stillLoggedIn(t, a, "after a PIN change through another handle and a reload")
	if info, err := a.Info(ctx); err != nil || info.UserPIN.CountLow {
		t.Fatalf("after the reload the user PIN says %+v, %v: a wrong PIN was tried", info.UserPIN, err)
	}
}

// Two handles on one token the user logged in through both log in again after a reload,
// whichever calls first, and neither logs the other out doing so.
func TestReloadUnderTwoHandlesLoggedIn(t *testing.T) {
	ctx := context.Background()
	r := newReloadRig(t)
	a, b, z := openToken(t, r.mod, r.serial), openToken(t, r.mod, r.serial), openToken(t, r.mod, r.zSerial)
	for _, tok := range []*pkcs11.Token{a, b} {
		if err := tok.Login(ctx, userPIN); err != nil {
			t.Fatal(err)
		}
	}
	for _, order := range [][]*pkcs11.Token{{a, b}, {b, a}} {
		r.reload(t, z)
		for _, tok := range order {
			stillLoggedIn(t, tok, "a handle called after a reload")
		}
	}
	r.reload(t, z)
	stillLoggedIn(t, b, "the second handle called after a reload") // b's login again logged a in
	if strings.Contains(r.logs.String(), "could not log in again") {
		t.Errorf("a login again failed:\n%s", r.logs.String())
	}
}

// A reload while a call on another token is in flight and a third waits for that token's
// turn: the call in flight ends as it would have, the waiting one runs logged in again,
// and the initialisation succeeds after the reload.
func TestReloadBesideACallInFlight(t *testing.T) {
	ctx := context.Background()
	r := newReloadRig(t)
	x, z := openToken(t, r.mod, r.serial), openToken(t, r.mod, r.zSerial)
	if err := x.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	key := generate(t, x, []byte{7}, "ec-p256", pkcs11.UsageSign)

	signing, release := make(chan struct{}), make(chan struct{})
	var signOnce, initOnce sync.Once
	r.inj.Hook("Sign", func() { signOnce.Do(func() { close(signing); <-release }) })
	initTried := make(chan struct{})
	r.inj.Hook("InitToken", func() { initOnce.Do(func() { close(initTried) }) })
	r.inj.Fail("InitToken", p11.CKR_DEVICE_ERROR, 1)

	digest := sha256.Sum256([]byte("in flight"))
	type signed struct {
		sig []byte
		err error
	}
	signs := make(chan signed, 1)
	go func() {
		sig, err := key.SignContext(ctx, digest[:], crypto.SHA256)
		signs <- signed{sig, err}
	}()
	<-signing
	type state struct {
		in  bool
		err error
	}
	states := make(chan state, 1)
	go func() { // waits for x's turn, which the signature holds
		in, err := x.LoggedIn(ctx)
		states <- state{in, err}
	}()
	inits := make(chan error, 1)
	go func() {
		_, err := z.Init(ctx, pkcs11.InitOptions{Label: "beside", SOPIN: soPIN, Force: true})
		inits <- err
	}()
	<-initTried // the first try ran beside the signature
	close(release)

	pub := key.Public().(*ecdsa.PublicKey)
	if s := <-signs; s.err != nil {
		t.Errorf("the signature in flight: %v", s.err)
	} else if !ecdsa.VerifyASN1(pub, digest[:], s.sig) {
		t.Error("the signature in flight does not verify")
	}
	if err := <-inits; err != nil {
		t.Fatalf("initialise beside a call in flight: %v", err)
	}
	if s := <-states; s.err != nil || !s.in {
		t.Errorf("the call that waited for the token: logged in %t, %v", s.in, s.err)
	}
	if got := reloadsLogged(&r.logs); got != 1 {
		t.Errorf("module reloads logged: %d, want 1:\n%s", got, r.logs.String())
	}
	r.inj.Hook("Sign", nil)
	sig, err := key.SignContext(ctx, digest[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
		t.Fatalf("sign after the reload: %v", err)
	}
}

// holdSign starts a signature with the key and holds it inside the module (in C_Sign)
// until release is called; it returns once the signature is there. The signature's
// outcome (nil when it verifies) comes on the channel. Later signatures are not held.
func (r *reloadRig) holdSign(t *testing.T, key *pkcs11.Key) (release func(), signed <-chan error) {
	t.Helper()
	inside, held := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.inj.Hook("Sign", func() { once.Do(func() { close(inside); <-held }) })
	out := make(chan error, 1)
	go func() {
		digest := sha256.Sum256([]byte("held in the module"))
		sig, err := key.SignContext(context.Background(), digest[:], crypto.SHA256)
		if err == nil && !ecdsa.VerifyASN1(key.Public().(*ecdsa.PublicKey), digest[:], sig) {
			err = errors.New("the signature does not verify")
		}
		out <- err
	}()
	<-inside
	var releaseOnce sync.Once
	release = func() { releaseOnce.Do(func() { close(held) }) }
	t.Cleanup(release) // a test that fails early must not leave the module held
	return release, out
}

// untilReloadHolds waits until a reload of the module holds calls back.
func untilReloadHolds(mod *pkcs11.Module) {
	for !pkcs11.ReloadHolding(mod) {
		runtime.Gosched()
	}
}

// signs fails unless the key still signs.
func signs(t *testing.T, key *pkcs11.Key) {
	t.Helper()
	digest := sha256.Sum256([]byte("still signs"))
	sig, err := key.SignContext(context.Background(), digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if !ecdsa.VerifyASN1(key.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("the signature does not verify")
	}
}

// loggedInKey logs the user in through tok and makes a signing key on it.
func loggedInKey(t *testing.T, tok *pkcs11.Token) *pkcs11.Key {
	t.Helper()
	if err := tok.Login(context.Background(), userPIN); err != nil {
		t.Fatal(err)
	}
	return generate(t, tok, []byte{9}, "ec-p256", pkcs11.UsageSign)
}

// A reload waiting for a call in flight (a real token's key generation takes seconds)
// gives up when the initialisation's context ends, while that call is still in the
// module: nothing is finalized, the calls it held back go on, and every session stays.
func TestReloadGivesUpWhenItsContextEnds(t *testing.T) {
	ctx := context.Background()
	r := newReloadRig(t)
	x, z := openToken(t, r.mod, r.serial), openToken(t, r.mod, r.zSerial)
	key := loggedInKey(t, x)
	opened := r.inj.Calls("OpenSession")

	release, signed := r.holdSign(t, key)
	r.inj.Fail("InitToken", p11.CKR_DEVICE_ERROR, 1)
	initCtx, cancel := context.WithCancel(ctx)
	inits := make(chan error, 1)
	go func() {
		_, err := z.Init(initCtx, pkcs11.InitOptions{Label: "given-up", SOPIN: soPIN, Force: true})
		inits <- err
	}()
	untilReloadHolds(r.mod) // the first try failed, and the reload waits for the signature
	cancel()
	err := <-inits // the signature is still held in the module
	e := codeErr(t, err, pkcs11.CodeCancelled)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("the initialisation's error does not wrap the context's: %v", err)
	}
	says(t, e, "could not be reset", "CKR_DEVICE_ERROR", "gave up waiting for the calls in flight")
	if pkcs11.ReloadHolding(r.mod) {
		t.Fatal("the reload given up still holds calls back")
	}
	// Calls on other tokens go on while the signature is still in the module.
	if _, err := z.Info(ctx); err != nil {
		t.Fatalf("a call beside the signature after the reload gave up: %v", err)
	}

	release()
	if err := <-signed; err != nil {
		t.Fatalf("the signature in flight: %v", err)
	}
	if n := r.inj.Calls("Finalize") + r.inj.Calls("Initialize"); n != 0 {
		t.Errorf("C_Finalize or C_Initialize called %d times by a reload that gave up", n)
	}
	if got := reloadsLogged(&r.logs); got != 0 {
		t.Errorf("module reloads logged: %d, want 0:\n%s", got, r.logs.String())
	}
	// The session and its login stayed: no session was opened again.
	stillLoggedIn(t, x, "after the reload gave up")
	signs(t, key)
	if got := r.inj.Calls("OpenSession"); got != opened {
		t.Errorf("sessions opened after the reload gave up: %d, want none", got-opened)
	}
	// A reload with time to wait still works.
	r.reload(t, z)
	stillLoggedIn(t, x, "after a reload")
	signs(t, key)
}

// A call waiting to enter the module behind a reload that waits for a call in flight gives
// up when its context ends, through a Token or the Module; the reload then goes on.
func TestCallBehindAReloadGivesUpWhenItsContextEnds(t *testing.T) {
	ctx := context.Background()
	r := newReloadRig(t)
	x, z := openToken(t, r.mod, r.serial), openToken(t, r.mod, r.zSerial)
	key := loggedInKey(t, x)

	release, signed := r.holdSign(t, key)
	r.inj.Fail("InitToken", p11.CKR_DEVICE_ERROR, 1)
	inits := make(chan error, 1)
	go func() {
		_, err := z.Init(ctx, pkcs11.InitOptions{Label: "held-back", SOPIN: soPIN, Force: true})
		inits <- err
	}()
	untilReloadHolds(r.mod)

	callCtx, cancel := context.WithCancel(ctx)
	calls := make(chan error, 2)
	go func() { _, err := z.Info(callCtx); calls <- err }() // z's turn is free: it waits for the module
	go func() { _, err := r.mod.Slots(callCtx); calls <- err }()
	cancel()
	for range 2 {
		err := <-calls // the signature, and so the reload, are still held
		wantCode(t, err, pkcs11.CodeCancelled)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the call's error does not wrap the context's: %v", err)
		}
	}
	if !pkcs11.ReloadHolding(r.mod) {
		t.Fatal("the reload stopped holding calls back when the calls behind it gave up")
	}

	release()
	if err := <-signed; err != nil {
		t.Fatalf("the signature in flight: %v", err)
	}
	if err := <-inits; err != nil {
		t.Fatalf("initialise through the reload: %v", err)
	}
	if got := reloadsLogged(&r.logs); got != 1 {
		t.Errorf("module reloads logged: %d, want 1:\n%s", got, r.logs.String())
	}
	stillLoggedIn(t, x, "after the reload")
}

// A C_Finalize that fails ends no session: the Tokens keep theirs, logged in, and open
// none again; the initialisation reports the failed reload.
func TestReloadWhoseFinalizeFails(t *testing.T) {
	ctx := context.Background()
	r := newReloadRig(t)
	x, z := openToken(t, r.mod, r.serial), openToken(t, r.mod, r.zSerial)
	key := loggedInKey(t, x)
	opened := r.inj.Calls("OpenSession")

	r.inj.Fail("Finalize", p11.CKR_GENERAL_ERROR, 1)
	r.inj.Fail("InitToken", p11.CKR_DEVICE_ERROR, 1)
	_, err := z.Init(ctx, pkcs11.InitOptions{Label: "not-reloaded", SOPIN: soPIN, Force: true})
	e := codeErr(t, err, pkcs11.CodeDeviceError)
	says(t, e, "the module could not be reloaded to try again", "C_Finalize", "nothing was finalized", "CKR_GENERAL_ERROR", "restarting the process may help")
	if n := r.inj.Calls("Initialize"); n != 0 {
		t.Errorf("C_Initialize called %d times after a C_Finalize that failed", n)
	}
	stillLoggedIn(t, x, "after a C_Finalize that failed")
	signs(t, key)
	if got := r.inj.Calls("OpenSession"); got != opened {
		t.Errorf("sessions opened after a C_Finalize that failed: %d, want none (the old ones would leak)", got-opened)
	}
	r.reload(t, z)
	stillLoggedIn(t, x, "after a reload")
}

// A C_Initialize that fails after C_Finalize leaves the module down: each call tries it
// again, once, and says what happened while it fails; the first that succeeds brings the
// module up, and the Tokens go on, logged in again.
func TestReloadWhoseInitializeFails(t *testing.T) {
	ctx := context.Background()
	r := newReloadRig(t)
	x, z := openToken(t, r.mod, r.serial), openToken(t, r.mod, r.zSerial)
	key := loggedInKey(t, x)

	r.inj.Fail("Initialize", p11.CKR_GENERAL_ERROR, 2) // the reload's, then the next call's
	r.inj.Fail("InitToken", p11.CKR_DEVICE_ERROR, 1)
	_, err := z.Init(ctx, pkcs11.InitOptions{Label: "down", SOPIN: soPIN, Force: true})
	e := codeErr(t, err, pkcs11.CodeDeviceError)
	says(t, e, "the module could not be reloaded to try again", "C_Initialize after C_Finalize", "stays uninitialised")
	if n := r.inj.Calls("Finalize"); n != 1 {
		t.Errorf("C_Finalize called %d times, want 1", n)
	}

	_, err = x.LoggedIn(ctx)
	e = codeErr(t, err, pkcs11.CodeModuleLoadFailed)
	says(t, e, "could not be initialised again after a reload", "CKR_GENERAL_ERROR", "restart the process")
	if n := r.inj.Calls("Initialize"); n != 2 {
		t.Errorf("C_Initialize called %d times, want 2: the reload's and one by the call", n)
	}

	// The next call's C_Initialize reaches the module and succeeds.
	stillLoggedIn(t, x, "the call that initialised the module again")
	signs(t, key)
	if _, err := r.mod.Slots(ctx); err != nil {
		t.Fatalf("list slots once the module is up: %v", err)
	}
	if n := r.inj.Calls("Initialize"); n != 3 {
		t.Errorf("C_Initialize called %d times, want 3: the module is up, calls need not try it", n)
	}
	r.reload(t, z)
}

// Module.InitToken, initialising a token by its slot, reloads the module after a device
// error as Token.Init does, with real SoftHSM2 objects cut short.
func TestModuleInitTokenAfterObjectWritesCutShort(t *testing.T) {
	ctx := context.Background()
	label, serial, _ := damagedToken(t, 2)
	dir := testenv.SoftHSMTokenDir(t, serial)
	var logs bytes.Buffer
	mod := openModule(t, pkcs11.Options{Logger: zerolog.New(&logs).Level(zerolog.InfoLevel)})
	slot := slotHolding(t, mod, serial)

	info, err := mod.InitToken(ctx, slot, pkcs11.InitOptions{Label: label + "-m", SOPIN: soPIN, Force: true})
	if err != nil {
		t.Fatalf("initialise the token in slot %d with two objects cut short: %v", slot, err)
	}
	wipedThroughReloads(t, info, label+"-m", &logs, dir)
}

// Module.InitToken on a token still failing after the reloads says what the operator can
// do, as Token.Init does.
func TestModuleInitTokenStillFailingAfterTheReloads(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	label, serial := newToken(t)
	var logs bytes.Buffer
	mod := openModule(t, pkcs11.Options{Wrap: inj.Wrap, Logger: zerolog.New(&logs).Level(zerolog.InfoLevel)})
	slot := slotHolding(t, mod, serial)
	inj.Fail("InitToken", p11.CKR_DEVICE_ERROR, 5)

	_, err := mod.InitToken(ctx, slot, pkcs11.InitOptions{Label: label, SOPIN: soPIN, Force: true})
	e := codeErr(t, err, pkcs11.CodeDeviceError)
	says(t, e, "could not be reset, even after reloading the module 4 times", "re-initialise it with its vendor's tool, or replace it", "CKR_DEVICE_ERROR")
	if got := reloadsLogged(&logs); got != 4 {
		t.Errorf("module reloads logged: %d, want 4:\n%s", got, logs.String())
	}
	if n := inj.Calls("Finalize"); n != 4 {
		t.Errorf("C_Finalize called %d times, want 4", n)
	}
	if info, err := mod.InitToken(ctx, slot, pkcs11.InitOptions{Label: label, SOPIN: soPIN, Force: true}); err != nil || !info.Initialized {
		t.Fatalf("initialise again: %+v, %v", info, err)
	}
}

// slotHolding is the slot the token with the serial is in.
func slotHolding(t *testing.T, mod *pkcs11.Module, serial string) uint {
	t.Helper()
	slots, err := mod.Slots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if s.Token != nil && s.Token.Serial == serial {
			return s.ID
		}
	}
	t.Fatalf("no slot holds token %s", serial)
	return 0
}

// says fails t unless err's text says each of wants.
func says(t *testing.T, err error, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err.Error(), want)
		}
	}
}

// stillLoggedIn fails t unless tok's user is logged in; when says at what point.
func stillLoggedIn(t *testing.T, tok *pkcs11.Token, when string) {
	t.Helper()
	if in, err := tok.LoggedIn(context.Background()); err != nil || !in {
		t.Fatalf("%s: logged in %t, %v", when, in, err)
	}
}

// wipedThroughReloads checks a token initialised with two object writes cut short on it:
// labelled as asked, no object file left, after one or two module reloads (a try gets
// past one object cut short at least; SoftHSM2 sometimes gets past more), and pkcs11-tool,
// from another process, sees it with its new label.
func wipedThroughReloads(t *testing.T, info pkcs11.TokenInfo, label string, logs *bytes.Buffer, dir string) {
	t.Helper()
	if info.Label != label || !info.Initialized || info.UserPINInitialized {
		t.Fatalf("after the initialisation the token says %+v", info)
	}
	if got := reloadsLogged(logs); got < 1 || got > 2 {
		t.Errorf("module reloads logged: %d, want 1 or 2:\n%s", got, logs.String())
	}
	if files := objectFiles(t, dir); len(files) != 0 {
		t.Errorf("object files left on the initialised token: %v", files)
	}
	if out := testenv.PKCS11Tool(t, "--list-token-slots"); !strings.Contains(out, label) {
		t.Errorf("pkcs11-tool does not list the token as %q:\n%s", label, out)
	}
}
