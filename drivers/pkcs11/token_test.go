//go:build cgo

package pkcs11_test

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/faults"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

func freeSlot(t *testing.T, mod *pkcs11.Module) pkcs11.Slot {
	t.Helper()
	slots, err := mod.Slots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if s.Free {
			return s
		}
	}
	t.Fatalf("no free slot in %+v", slots)
	return pkcs11.Slot{}
}

func TestInitialiseFreshToken(t *testing.T) {
	ctx := context.Background()
	mod := openModule(t, pkcs11.Options{})
	slot := freeSlot(t, mod)

	label := newLabel(t)
	for _, tc := range []struct {
		name string
		opts pkcs11.InitOptions
		code pkcs11.Code
	}{
		{"label too long", pkcs11.InitOptions{Label: strings.Repeat("x", 33), SOPIN: soPIN}, pkcs11.CodeInvalidArgument},
		{"no label", pkcs11.InitOptions{SOPIN: soPIN}, pkcs11.CodeInvalidArgument},
		{"SO PIN too short", pkcs11.InitOptions{Label: label, SOPIN: "123"}, pkcs11.CodePINLenRange},
		{"no SO PIN", pkcs11.InitOptions{Label: label}, pkcs11.CodePINLenRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mod.InitToken(ctx, slot.ID, tc.opts)
			wantCode(t, err, tc.code)
		})
	}
	info, err := mod.InitToken(ctx, slot.ID, pkcs11.InitOptions{Label: label, SOPIN: soPIN})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Initialized || info.UserPINInitialized || info.Label != label || info.Serial == "" {
		t.Fatalf("after InitToken: %+v", info)
	}
	// Initialised now: a second init needs Force.
	_, err = mod.InitToken(ctx, info.SlotID, pkcs11.InitOptions{Label: label, SOPIN: soPIN})
	wantCode(t, err, pkcs11.CodeAlreadyInitialized)

	tok := openToken(t, mod, info.Serial)
	wantCode(t, tok.Login(ctx, userPIN), pkcs11.CodeNotInitialized)
	wantCode(t, tok.InitUserPIN(ctx, "wrong-so-pin", userPIN), pkcs11.CodePINIncorrect)
	wantCode(t, tok.InitUserPIN(ctx, soPIN, "1"), pkcs11.CodePINLenRange)
	if err := tok.InitUserPIN(ctx, soPIN, userPIN); err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	// OpenSC logs in with the PIN we set.
	tool(t, label, "--login", "--pin", userPIN, "--list-objects")
}

func TestInitNeedsForceToWipe(t *testing.T) {
	ctx := context.Background()
	_, tok, label := loggedIn(t, pkcs11.Options{})
	id := []byte{0xa1}
	key := generate(t, tok, id, "ec-p256", 0)

	_, err := tok.Init(ctx, pkcs11.InitOptions{Label: label, SOPIN: soPIN})
	wantCode(t, err, pkcs11.CodeAlreadyInitialized)
	if in, err := tok.LoggedIn(ctx); err != nil || !in {
		t.Fatalf("a refused wipe must change nothing: logged in %v, %v", in, err)
	}
	if _, err := tok.Key(ctx, id); err != nil {
		t.Fatalf("a refused wipe must change nothing: %v", err)
	}
	_, err = tok.Init(ctx, pkcs11.InitOptions{Label: label, SOPIN: "wrong-so-pin", Force: true})
	wantCode(t, err, pkcs11.CodePINIncorrect)

	wiped := label + "-w"
	info, err := tok.Init(ctx, pkcs11.InitOptions{Label: wiped, SOPIN: soPIN, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if info.Label != wiped || info.UserPINInitialized || info.Serial != tok.Serial() {
		t.Fatalf("after wipe: %+v", info)
	}
	wantCode(t, tok.Login(ctx, userPIN), pkcs11.CodeNotInitialized)
	if err := tok.InitUserPIN(ctx, soPIN, userPIN); err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	keys, err := tok.Keys(ctx)
	if err != nil || len(keys) != 0 {
		t.Errorf("keys after wipe: %+v, %v", keys, err)
	}
	_, err = key.Sign(nil, make([]byte, 32), crypto.SHA256)
	wantCode(t, err, pkcs11.CodeKeyNotFound)
	if n := len(objectBlocks(tool(t, wiped, "--login", "--pin", userPIN, "--list-objects"))); n != 0 {
		t.Errorf("pkcs11-tool lists %d objects after the wipe", n)
	}
}

// TestInitEndsOtherSessions: a token is wiped while another Token on it, from another
// Module of the same library (an inventory scan's, say), holds a session between its
// calls: C_InitToken would refuse with CKR_SESSION_EXISTS, so the wipe ends that session
// first, and the other Token opens a new one at its next call.
func TestInitEndsOtherSessions(t *testing.T) {
	ctx := context.Background()
	_, tok, label := loggedIn(t, pkcs11.Options{})
	other := openToken(t, openModule(t, pkcs11.Options{}), tok.Serial())
	if _, err := other.Certificates(ctx); err != nil { // opens its session, which stays
		t.Fatal(err)
	}
	wiped := label + "-o"
	if _, err := tok.Init(ctx, pkcs11.InitOptions{Label: wiped, SOPIN: soPIN, Force: true}); err != nil {
		t.Fatalf("wipe while another Token holds a session: %v", err)
	}
	info, err := other.Info(ctx)
	if err != nil || info.Label != wiped {
		t.Fatalf("the other Token after the wipe: %+v, %v", info, err)
	}
	if certs, err := other.Certificates(ctx); err != nil || len(certs) != 0 {
		t.Errorf("the other Token's next call after the wipe: %d certificates, %v", len(certs), err)
	}
}

func TestChangePINs(t *testing.T) {
	ctx := context.Background()
	_, tok, label := loggedIn(t, pkcs11.Options{})

	const newUser = "24681357"
	wantCode(t, tok.ChangeUserPIN(ctx, "000000", newUser), pkcs11.CodePINIncorrect)
	wantCode(t, tok.ChangeUserPIN(ctx, userPIN, "12"), pkcs11.CodePINLenRange)
	wantCode(t, tok.ChangeUserPIN(ctx, userPIN, strings.Repeat("9", 256)), pkcs11.CodePINLenRange)
	if err := tok.ChangeUserPIN(ctx, userPIN, newUser); err != nil {
		t.Fatal(err)
	}
	if in, err := tok.LoggedIn(ctx); err != nil || !in {
		t.Errorf("after changing the PIN: logged in %v, %v", in, err)
	}
	tool(t, label, "--login", "--pin", newUser, "--list-objects")
	if out, err := toolErr(label, "--login", "--pin", userPIN, "--list-objects"); err == nil {
		t.Errorf("pkcs11-tool still logs in with the old PIN:\n%s", out)
	}

	const newSO = "11223344"
	wantCode(t, tok.ChangeSOPIN(ctx, "00000000", newSO), pkcs11.CodePINIncorrect)
	wantCode(t, tok.ChangeSOPIN(ctx, soPIN, "1"), pkcs11.CodePINLenRange)
	if err := tok.ChangeSOPIN(ctx, soPIN, newSO); err != nil {
		t.Fatal(err)
	}
	if in, _ := tok.LoggedIn(ctx); in {
		t.Error("still logged in as user after an SO operation")
	}
	// OpenSC proves the new SO PIN by setting the user PIN with it (to the PIN it has:
	// SoftHSM keeps token state in memory per process, so a PIN another process changes
	// is not seen here until the module is initialized again).
	tool(t, label, "--login", "--login-type", "so", "--so-pin", newSO, "--init-pin", "--new-pin", newUser)
	if out, err := toolErr(label, "--login", "--login-type", "so", "--so-pin", soPIN, "--init-pin", "--new-pin", newUser); err == nil {
		t.Errorf("pkcs11-tool still logs in as SO with the old SO PIN:\n%s", out)
	}
	if err := tok.Login(ctx, newUser); err != nil {
		t.Fatal(err)
	}
}

func TestLoginAndLogout(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	label, serial := newToken(t)
	mod := openModule(t, pkcs11.Options{Wrap: inj.Wrap})
	tok := openToken(t, mod, serial)

	err := tok.Login(ctx, "999999")
	e := codeErr(t, err, pkcs11.CodePINIncorrect)
	if !errors.Is(err, pkcs11.ErrPINIncorrect) || e.Token != serial || e.Label != label || e.RV == 0 {
		t.Errorf("error %#v", e)
	}
	if e.PIN == nil || !e.PIN.CountLow {
		t.Errorf("after a wrong PIN, SoftHSM reports CKF_USER_PIN_COUNT_LOW; got PIN status %+v", e.PIN)
	}
	if strings.Contains(err.Error(), "999999") {
		t.Errorf("error text shows the PIN: %v", err)
	}
	if pkcs11.Retryable(err) {
		t.Error("a wrong PIN must not be retryable")
	}
	// A PIN the token cannot take is refused before it costs a try.
	calls := inj.Calls("Login")
	wantCode(t, tok.Login(ctx, "12"), pkcs11.CodePINLenRange)
	wantCode(t, tok.Login(ctx, ""), pkcs11.CodePINLenRange)
	if inj.Calls("Login") != calls {
		t.Error("a PIN of the wrong length reached the token")
	}

	if in, err := tok.LoggedIn(ctx); err != nil || in {
		t.Fatalf("logged in %v, %v", in, err)
	}
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	// Logging in again checks the PIN again.
	wantCode(t, tok.Login(ctx, "999999"), pkcs11.CodePINIncorrect)
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	if in, err := tok.LoggedIn(ctx); err != nil || !in {
		t.Fatalf("logged in %v, %v", in, err)
	}
	info, err := tok.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.UserPIN.CountLow {
		t.Error("a good PIN should clear CKF_USER_PIN_COUNT_LOW")
	}
	if err := tok.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tok.Logout(ctx); err != nil {
		t.Fatalf("second logout: %v", err)
	}
	if in, _ := tok.LoggedIn(ctx); in {
		t.Error("still logged in after Logout")
	}

	// Close logs out too: a new Token on the same serial starts logged out.
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	_ = tok.Close()
	if err := tok.Login(ctx, userPIN); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("login on a closed token: %v", err)
	}
	tok2 := openToken(t, mod, serial)
	if in, _ := tok2.LoggedIn(ctx); in {
		t.Error("logged in after the previous Token was closed")
	}
}

func TestClosedModuleClosesTokens(t *testing.T) {
	ctx := context.Background()
	_, serial := newToken(t)
	mod, err := pkcs11.Open(testenv.SoftHSMModule, pkcs11.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := mod.FindToken(ctx, &uri.URI{Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	if err := mod.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(ctx, userPIN); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("login on a token of a closed module: %v", err)
	}
	if _, err := mod.FindToken(ctx, &uri.URI{Serial: serial}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("FindToken on a closed module: %v", err)
	}
	if err := tok.Close(); err != nil {
		t.Errorf("closing a token of a closed module: %v", err)
	}
}
