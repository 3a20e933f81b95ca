//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
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

// tokenDir is the SoftHSM2 directory of the token with the serial: its name, without
// dashes, ends with the serial.
func tokenDir(t *testing.T, store *testenv.SoftHSM, serial string) string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(store.Dir, "tokens", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if strings.HasSuffix(strings.ReplaceAll(filepath.Base(d), "-", ""), serial) {
			return d
		}
	}
	t.Fatalf("no SoftHSM2 directory for token %s among %v", serial, dirs)
	return ""
}

// cutShort leaves in the token directory what a process killed while SoftHSM2 created an
// object leaves: the object's empty file, without its lock file.
func cutShort(t *testing.T, dir string) {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%x-%x-%x-%x-%x.object", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

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
// objects cut short on the first token. It returns the module's store and the tokens'
// labels and serials.
func damagedToken(t *testing.T, n int) (store *testenv.SoftHSM, label, serial, otherSerial string) {
	t.Helper()
	store = testenv.NewSoftHSMStore(t)
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
	dir := tokenDir(t, store, serial)
	for range n {
		cutShort(t, dir)
	}
	return store, label, serial, otherSerial
}

func TestInitAfterObjectWritesCutShort(t *testing.T) {
	ctx := context.Background()
	store, label, serial, otherSerial := damagedToken(t, 2) // two kills, two objects cut short
	dir := tokenDir(t, store, serial)

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
	if info.Label != label+"-w" || !info.Initialized || info.UserPINInitialized {
		t.Fatalf("after the initialisation the token says %+v", info)
	}
	// A try gets past one object cut short at least (SoftHSM2 sometimes gets past more).
	if got := strings.Count(logs.String(), "the module was reloaded"); got < 1 || got > 2 {
		t.Errorf("module reloads logged: %d, want 1 or 2:\n%s", got, logs.String())
	}
	if files := objectFiles(t, dir); len(files) != 0 {
		t.Errorf("object files left on the initialised token: %v", files)
	}
	// pkcs11-tool, from another process, sees the token initialised, its label new.
	if out := testenv.PKCS11Tool(t, "--list-token-slots"); !strings.Contains(out, label+"-w") {
		t.Errorf("pkcs11-tool does not list the token as %q:\n%s", label+"-w", out)
	}

	// The other token was logged in again after each reload: its key still signs, and its
	// private key is still seen.
	if in, err := other.LoggedIn(ctx); err != nil || !in {
		t.Fatalf("the other token after the reloads: logged in %t, %v", in, err)
	}
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
	for _, want := range []string{"could not be reset, even after reloading the module 4 times",
		"re-initialise it with its vendor's tool, or replace it", "CKR_DEVICE_ERROR"} {
		if !strings.Contains(e.Error(), want) {
			t.Errorf("error %q does not say %q", e.Error(), want)
		}
	}
	if !pkcs11.Retryable(err) {
		t.Error("a device error is not retryable")
	}
	if got := strings.Count(logs.String(), "the module was reloaded"); got != 4 {
		t.Errorf("module reloads logged: %d, want 4:\n%s", got, logs.String())
	}
	// The token answers again: the next initialisation (a retry of the job) succeeds.
	info, err := tok.Init(ctx, pkcs11.InitOptions{Label: label, SOPIN: soPIN, Force: true})
	if err != nil || !info.Initialized {
		t.Fatalf("initialise again: %+v, %v", info, err)
	}
}
