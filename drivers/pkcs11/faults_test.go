//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/faults"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
)

func slotOf(t *testing.T, tok *pkcs11.Token) uint {
	t.Helper()
	info, err := tok.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.SlotID
}

// SoftHSM never locks a PIN; the injector gives the token a counter of 3 tries, as real
// tokens have.
func TestUserPINLocksAndSOResetsIt(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	_, serial := newToken(t)
	mod := openModule(t, pkcs11.Options{Wrap: inj.Wrap})
	tok := openToken(t, mod, serial)
	inj.LimitPINTries(slotOf(t, tok), 3, 3)

	for i, s := range []struct {
		code pkcs11.Code
		pin  pkcs11.PINStatus
	}{
		{pkcs11.CodePINIncorrect, pkcs11.PINStatus{CountLow: true}},
		{pkcs11.CodePINIncorrect, pkcs11.PINStatus{CountLow: true, FinalTry: true}},
		{pkcs11.CodePINLocked, pkcs11.PINStatus{Locked: true}},
	} {
		e := codeErr(t, tok.Login(ctx, "000000"), s.code)
		if e.PIN == nil || *e.PIN != s.pin {
			t.Fatalf("wrong PIN #%d: PIN status %+v, want %+v", i+1, e.PIN, s.pin)
		}
	}
	// Locked: even the right PIN is refused, and the token says so.
	err := tok.Login(ctx, userPIN)
	wantCode(t, err, pkcs11.CodePINLocked)
	if !errors.Is(err, pkcs11.ErrPINLocked) || pkcs11.Retryable(err) {
		t.Error("a locked PIN must match ErrPINLocked and not be retryable")
	}
	info, err := tok.Info(ctx)
	if err != nil || !info.UserPIN.Locked {
		t.Fatalf("token info after lockout: %+v, %v", info.UserPIN, err)
	}
	wantCode(t, tok.ChangeUserPIN(ctx, userPIN, "13572468"), pkcs11.CodePINLocked)

	// The unblock job: the SO sets a new user PIN.
	const fresh = "97531864"
	if err := tok.InitUserPIN(ctx, soPIN, fresh); err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(ctx, fresh); err != nil {
		t.Fatalf("login after the reset: %v", err)
	}
	info, _ = tok.Info(ctx)
	if info.UserPIN != (pkcs11.PINStatus{}) {
		t.Errorf("PIN status after the reset: %+v", info.UserPIN)
	}
	// A good PIN resets the count.
	wantCode(t, tok.Login(ctx, "000000"), pkcs11.CodePINIncorrect)
	if err := tok.Login(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if e := codeErr(t, tok.Login(ctx, "000000"), pkcs11.CodePINIncorrect); e.PIN.FinalTry {
		t.Error("count not reset by a good PIN")
	}
}

func TestSOPINLocks(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	label, serial := newToken(t)
	mod := openModule(t, pkcs11.Options{Wrap: inj.Wrap})
	tok := openToken(t, mod, serial)
	inj.LimitPINTries(slotOf(t, tok), 3, 2)

	wantCode(t, tok.ChangeSOPIN(ctx, "00000000", "11111111"), pkcs11.CodePINIncorrect)
	if e := codeErr(t, tok.InitUserPIN(ctx, "00000000", userPIN), pkcs11.CodePINLocked); e.PIN == nil || !e.PIN.Locked {
		t.Errorf("SO PIN status %+v", e.PIN)
	}
	wantCode(t, tok.InitUserPIN(ctx, soPIN, userPIN), pkcs11.CodePINLocked)
	_, err := tok.Init(ctx, pkcs11.InitOptions{Label: label, SOPIN: soPIN, Force: true})
	wantCode(t, err, pkcs11.CodePINLocked)
	info, _ := tok.Info(ctx)
	if !info.SOPIN.Locked || info.UserPIN.Locked {
		t.Errorf("token PIN flags: user %+v, SO %+v", info.UserPIN, info.SOPIN)
	}
	// The user PIN still works: the SO PIN has its own counter.
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
}

func TestTokenPulledOutAndPutBack(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	_, tok, _ := loggedIn(t, pkcs11.Options{Wrap: inj.Wrap})
	mod := openModule(t, pkcs11.Options{Wrap: inj.Wrap})
	slot := slotOf(t, tok)
	key := generate(t, tok, []byte{0x99}, "ec-p256", 0)
	digest := make([]byte, 32)

	inj.Remove(slot)
	_, err := key.Sign(rand.Reader, digest, nil)
	wantCode(t, err, pkcs11.CodeDeviceRemoved)
	if !pkcs11.Retryable(err) {
		t.Errorf("removal error %v is not retryable", err)
	}
	_, err = key.Sign(rand.Reader, digest, nil)
	wantCode(t, err, pkcs11.CodeNotPresent)
	if !errors.Is(err, pkcs11.ErrNotPresent) || !pkcs11.Retryable(err) {
		t.Errorf("not-present error %v", err)
	}
	_, err = tok.Info(ctx)
	wantCode(t, err, pkcs11.CodeNotPresent)
	slots, err := mod.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if s.ID == slot && (s.TokenPresent || s.Token != nil) {
			t.Errorf("slot %d still shows a token: %+v", slot, s)
		}
	}
	_, err = mod.FindToken(ctx, &uri.URI{Serial: tok.Serial()})
	wantCode(t, err, pkcs11.CodeNotFound)

	// Back in: a new session, logged out, as after a real reinsertion.
	inj.Insert(slot)
	_, err = key.Sign(rand.Reader, digest, nil)
	wantCode(t, err, pkcs11.CodeNotLoggedIn)
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	if _, err := key.Sign(rand.Reader, digest, nil); err != nil {
		t.Fatalf("sign after reinsertion and login: %v", err)
	}
}

// recoverToken puts the token back (if it was pulled out) and logs in again, as the agent
// does before retrying a job.
func recoverToken(t *testing.T, inj *faults.Injector, tok *pkcs11.Token, slot uint) {
	t.Helper()
	inj.Insert(slot)
	if err := tok.Login(context.Background(), userPIN); err != nil {
		t.Fatalf("login after the fault: %v", err)
	}
}

func TestInterruptedKeyGenerationRecovers(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	_, tok, label := loggedIn(t, pkcs11.Options{Wrap: inj.Wrap})
	slot := slotOf(t, tok)
	for i, tc := range []struct {
		name  string
		fault func()
		code  pkcs11.Code
		half  bool // the fault leaves a public key without its private key
	}{
		{"pulled out between the two halves", func() { inj.FailAfter("GenerateKeyPair", p11.CKR_DEVICE_REMOVED, 1) }, pkcs11.CodeDeviceRemoved, true},
		{"gone between the two halves", func() { inj.FailAfter("GenerateKeyPair", p11.CKR_TOKEN_NOT_PRESENT, 1) }, pkcs11.CodeNotPresent, true},
		{"device error between the two halves", func() { inj.FailAfter("GenerateKeyPair", p11.CKR_DEVICE_ERROR, 1) }, pkcs11.CodeDeviceError, true},
		{"generation fails", func() { inj.Fail("GenerateKeyPair", p11.CKR_GENERAL_ERROR, 1) }, pkcs11.CodeGeneralError, false},
		{"generation fails on the device", func() { inj.Fail("GenerateKeyPair", p11.CKR_DEVICE_ERROR, 1) }, pkcs11.CodeDeviceError, false},
		{"token full", func() { inj.Fail("GenerateKeyPair", p11.CKR_DEVICE_MEMORY, 1) }, pkcs11.CodeMemoryFull, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := []byte{0x60, byte(i)}
			req := pkcs11.KeyRequest{ID: id, Label: "job-key", Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}}
			tc.fault()
			_, _, err := tok.GenerateKey(ctx, req)
			wantCode(t, err, tc.code)
			pubs := 0
			if tc.half {
				pubs = 1
			}
			if priv, pub := countObjects(t, label, id, "Private Key"), countObjects(t, label, id, "Public Key"); priv != 0 || pub != pubs {
				t.Fatalf("after the fault: %d private and %d public keys, want 0 and %d", priv, pub, pubs)
			}

			recoverToken(t, &inj, tok, slot)
			key, created, err := tok.GenerateKey(ctx, req)
			if err != nil || !created {
				t.Fatalf("retry: created %v, %v", created, err)
			}
			if _, created, err := tok.GenerateKey(ctx, req); err != nil || created {
				t.Fatalf("third delivery: created %v, %v", created, err)
			}
			if priv, pub := countObjects(t, label, id, "Private Key"), countObjects(t, label, id, "Public Key"); priv != 1 || pub != 1 {
				t.Fatalf("after the retry: %d private and %d public keys with the ID, want 1 and 1", priv, pub)
			}
			d := sha256.Sum256([]byte("works"))
			sig, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
			if err != nil || !ecdsa.VerifyASN1(key.Public().(*ecdsa.PublicKey), d[:], sig) {
				t.Fatalf("the recovered key does not sign: %v", err)
			}
		})
	}
}

func TestInterruptedCertificateWriteRecovers(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	_, tok, label := loggedIn(t, pkcs11.Options{Wrap: inj.Wrap})
	slot := slotOf(t, tok)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := newCA(t, caKey)
	for i, tc := range []struct {
		name    string
		renewal bool // a certificate is there already, and the new one replaces it
		fault   func()
		code    pkcs11.Code
		left    int // certificates under the ID after the fault
	}{
		{"written, answer lost to removal", false, func() { inj.FailAfter("CreateObject", p11.CKR_DEVICE_REMOVED, 1) }, pkcs11.CodeDeviceRemoved, 1},
		{"write fails", false, func() { inj.Fail("CreateObject", p11.CKR_DEVICE_ERROR, 1) }, pkcs11.CodeDeviceError, 0},
		{"renewal written, answer lost", true, func() { inj.FailAfter("CreateObject", p11.CKR_TOKEN_NOT_PRESENT, 1) }, pkcs11.CodeNotPresent, 2},
		{"renewal cut before the old one went", true, func() { inj.Fail("DestroyObject", p11.CKR_DEVICE_REMOVED, 1) }, pkcs11.CodeDeviceRemoved, 2},
		{"renewal cut after the old one went", true, func() { inj.FailAfter("DestroyObject", p11.CKR_DEVICE_REMOVED, 1) }, pkcs11.CodeDeviceRemoved, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := []byte{0x70, byte(i)}
			key := generate(t, tok, id, "ec-p256", 0)
			if tc.renewal {
				if _, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Cert: ca.issue(t, "first", key.Public())}); err != nil {
					t.Fatal(err)
				}
			}
			cert := ca.issue(t, "current", key.Public())
			w := pkcs11.CertificateWrite{ID: id, Label: "current", Cert: cert}
			tc.fault()
			_, err := tok.WriteCertificate(ctx, w)
			wantCode(t, err, tc.code)
			if n := countObjects(t, label, id, "Certificate"); n != tc.left {
				t.Fatalf("after the fault: %d certificates with the ID, want %d", n, tc.left)
			}

			recoverToken(t, &inj, tok, slot)
			if _, err := tok.WriteCertificate(ctx, w); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if res, err := tok.WriteCertificate(ctx, w); err != nil || res != pkcs11.AlreadyPresent {
				t.Fatalf("third delivery: %v, %v", res, err)
			}
			if n := countObjects(t, label, id, "Certificate"); n != 1 {
				t.Fatalf("%d certificates with the ID after the retry, want 1", n)
			}
			got, err := tok.Certificate(ctx, id)
			if err != nil || !bytes.Equal(got.DER, cert.Raw) {
				t.Fatalf("the certificate on the token is not the one written: %v", err)
			}
		})
	}
}

func TestInterruptedImportRecovers(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	_, tok, label := loggedIn(t, pkcs11.Options{Wrap: inj.Wrap})
	slot := slotOf(t, tok)
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	req := pkcs11.ImportRequest{ID: []byte{0x80}, Label: "escrowed", Key: priv, Usage: pkcs11.UsageDecrypt}

	// The public key lands, then the token is gone before the private key.
	inj.FailAfter("CreateObject", p11.CKR_DEVICE_REMOVED, 1)
	_, _, err := tok.ImportKey(ctx, req)
	wantCode(t, err, pkcs11.CodeDeviceRemoved)
	if p, q := countObjects(t, label, req.ID, "Private Key"), countObjects(t, label, req.ID, "Public Key"); p != 0 || q != 1 {
		t.Fatalf("after the fault: %d private and %d public keys, want 0 and 1", p, q)
	}
	recoverToken(t, &inj, tok, slot)
	if _, created, err := tok.ImportKey(ctx, req); err != nil || !created {
		t.Fatalf("retry: created %v, %v", created, err)
	}
	if p, q := countObjects(t, label, req.ID, "Private Key"), countObjects(t, label, req.ID, "Public Key"); p != 1 || q != 1 {
		t.Fatalf("after the retry: %d private and %d public keys, want 1 and 1", p, q)
	}
}

// A key generation on a real token can take minutes; a call waiting behind it gives up
// when its context ends, and the token is usable afterwards.
func TestWaitingCallHonoursItsContext(t *testing.T) {
	var inj faults.Injector
	_, tok, _ := loggedIn(t, pkcs11.Options{Wrap: inj.Wrap})
	entered, release := make(chan struct{}), make(chan struct{})
	inj.Hook("GenerateKeyPair", func() {
		close(entered)
		<-release
	})
	done := make(chan error, 1)
	go func() {
		_, _, err := tok.GenerateKey(context.Background(), pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
		done <- err
	}()
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := tok.Login(ctx, userPIN)
	wantCode(t, err, pkcs11.CodeCancelled)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	cancelled, stop := context.WithCancel(context.Background())
	stop()
	_, err = tok.Info(cancelled)
	wantCode(t, err, pkcs11.CodeCancelled)

	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the key generation that held the token: %v", err)
	}
	if _, err := tok.Key(context.Background(), []byte{1}); err != nil {
		t.Fatalf("token after the wait: %v", err)
	}
}

// A handle that went stale behind the Token's back (another process, another session) is
// looked up again once, and the signature is made.
func TestStaleKeyHandleIsFoundAgain(t *testing.T) {
	var inj faults.Injector
	_, tok, _ := loggedIn(t, pkcs11.Options{Wrap: inj.Wrap})
	key := generate(t, tok, []byte{0x32}, "ec-p256", 0)
	d := sha256.Sum256([]byte("x"))
	finds := inj.Calls("FindObjectsInit")
	inj.Fail("SignInit", p11.CKR_KEY_HANDLE_INVALID, 1)
	sig, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(key.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatalf("sign over a stale handle: %v", err)
	}
	if inj.Calls("FindObjectsInit") == finds {
		t.Error("the key was not looked up again")
	}
	// Twice stale is not a stale handle: the error comes through.
	inj.Fail("SignInit", p11.CKR_KEY_HANDLE_INVALID, 2)
	_, err = key.Sign(rand.Reader, d[:], crypto.SHA256)
	wantCode(t, err, pkcs11.CodeKeyNotFound)
}

func TestPSSNeedsTheMechanism(t *testing.T) {
	var inj faults.Injector
	inj.HideMechanism(p11.CKM_RSA_PKCS_PSS)
	_, tok, _ := loggedIn(t, pkcs11.Options{Wrap: inj.Wrap})
	key := generate(t, tok, []byte{0x31}, "rsa-2048", 0)
	d := sha256.Sum256([]byte("x"))
	_, err := key.Sign(rand.Reader, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	wantCode(t, err, pkcs11.CodeMechanismNotSupported)
	if _, err := key.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatalf("PKCS #1 v1.5 must still work: %v", err)
	}
}

func TestModuleErrorsBecomeCodes(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	_, tok, _ := loggedIn(t, pkcs11.Options{Wrap: inj.Wrap})
	key := generate(t, tok, []byte{0x07}, "ec-p256", 0)
	sign := func() error { _, err := key.Sign(rand.Reader, make([]byte, 32), nil); return err }
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := newCA(t, caKey).issue(t, "k", key.Public())

	for _, tc := range []struct {
		call string
		rv   uint
		code pkcs11.Code
		run  func() error
	}{
		{"GenerateKeyPair", p11.CKR_MECHANISM_INVALID, pkcs11.CodeMechanismNotSupported, func() error {
			_, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{0x08}, Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
			return err
		}},
		{"Sign", p11.CKR_DEVICE_ERROR, pkcs11.CodeDeviceError, sign},
		{"SignInit", p11.CKR_FUNCTION_CANCELED, pkcs11.CodeCancelled, sign},
		{"SignInit", p11.CKR_FUNCTION_NOT_SUPPORTED, pkcs11.CodeFunctionNotSupported, sign},
		// A session left with an operation active is dropped: this call fails, the next
		// one gets a fresh session instead of the same error for ever.
		{"SignInit", p11.CKR_OPERATION_ACTIVE, pkcs11.CodeSessionError, sign},
		{"Login", p11.CKR_PIN_EXPIRED, pkcs11.CodePINExpired, func() error { return tok.Login(ctx, userPIN) }},
		{"Login", p11.CKR_PIN_INVALID, pkcs11.CodePINInvalid, func() error { return tok.Login(ctx, userPIN) }},
		{"CreateObject", p11.CKR_TOKEN_WRITE_PROTECTED, pkcs11.CodeWriteProtected, func() error {
			_, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: []byte{0x07}, Cert: leaf})
			return err
		}},
		{"GetSlotList", p11.CKR_GENERAL_ERROR, pkcs11.CodeGeneralError, func() error {
			// Reached only when the token is not where it was last seen.
			inj.Fail("GetTokenInfo", p11.CKR_SLOT_ID_INVALID, 1)
			_, err := tok.Info(ctx)
			return err
		}},
	} {
		t.Run(tc.call+"-"+string(tc.code), func(t *testing.T) {
			if err := tok.Login(ctx, userPIN); err != nil {
				t.Fatal(err)
			}
			inj.Fail(tc.call, tc.rv, 1)
			e := codeErr(t, tc.run(), tc.code)
			if e.RV != tc.rv {
				t.Errorf("RV 0x%x, want 0x%x", e.RV, tc.rv)
			}
			var rv p11.Error
			if !errors.As(e, &rv) || uint(rv) != tc.rv {
				t.Errorf("the module's error is not wrapped: %v", e)
			}
		})
	}
	// None of it broke the token.
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	if err := sign(); err != nil {
		t.Fatal(err)
	}
}

// A process killed inside C_CreateObject leaves, on SoftHSM2, a certificate object with no
// ID, label or value. The retried write takes it away and leaves any other software's
// certificate alone, even one with no ID or label.
func TestTornCertificateWriteIsSweptAway(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	_, tok, label := loggedIn(t, pkcs11.Options{Wrap: inj.Wrap})
	slot := slotOf(t, tok)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := newCA(t, caKey)
	id := []byte{0x71}
	key := generate(t, tok, id, "ec-p256", 0)
	if _, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Label: "first", Cert: ca.issue(t, "first", key.Public())}); err != nil {
		t.Fatal(err)
	}
	// Another application's certificate, written without an ID or a label.
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other := ca.issue(t, "someone else's", otherKey.Public())
	tool(t, label, "--login", "--pin", userPIN, "--write-object", writeFile(t, "other.der", other.Raw), "--type", "cert")

	renewal := ca.issue(t, "renewal", key.Public())
	w := pkcs11.CertificateWrite{ID: id, Label: "renewal", Cert: renewal}
	inj.TearCertificateWrites(p11.CKR_DEVICE_REMOVED, 1)
	_, err := tok.WriteCertificate(ctx, w)
	wantCode(t, err, pkcs11.CodeDeviceRemoved)
	certObjects := func() (n, blank int) {
		for _, b := range objectBlocks(tool(t, label, "--list-objects")) {
			if strings.HasPrefix(b, "Certificate Object") {
				n++
				if !strings.Contains(b, "ID:") && !strings.Contains(b, "subject:") {
					blank++
				}
			}
		}
		return n, blank
	}
	if n, blank := certObjects(); n != 3 || blank != 1 {
		t.Fatalf("after the torn write: %d certificate objects, %d blank; want 3 and 1", n, blank)
	}

	recoverToken(t, &inj, tok, slot)
	if res, err := tok.WriteCertificate(ctx, w); err != nil || res != pkcs11.Replaced {
		t.Fatalf("retry: %v, %v", res, err)
	}
	if n, blank := certObjects(); n != 2 || blank != 0 {
		t.Fatalf("after the retry: %d certificate objects, %d blank; want 2 (the renewal and the other application's) and 0", n, blank)
	}
	certs, err := tok.Certificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, c := range certs {
		kept = append(kept, c.Subject)
	}
	slices.Sort(kept)
	if want := []string{"CN=renewal", "CN=someone else's"}; !slices.Equal(kept, want) {
		t.Fatalf("certificates on the token: %q, want %q", kept, want)
	}
}

// A process killed inside C_GenerateKeyPair leaves, on SoftHSM2, a private key object
// with no ID, label or key material. The retried generation takes it away and leaves any
// other software's key alone, even one with no ID or label.
func TestTornKeyGenerationIsSweptAway(t *testing.T) {
	ctx := context.Background()
	var inj faults.Injector
	_, tok, label := loggedIn(t, pkcs11.Options{Wrap: inj.Wrap})
	slot := slotOf(t, tok)
	// Another application's key pair, with no ID or label.
	tool(t, label, "--login", "--pin", userPIN, "--keypairgen", "--key-type", "EC:prime256v1")

	req := pkcs11.KeyRequest{ID: []byte{0x72}, Label: "job", Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}}
	inj.TearKeyGenerations(p11.CKR_DEVICE_REMOVED, 1)
	_, _, err := tok.GenerateKey(ctx, req)
	wantCode(t, err, pkcs11.CodeDeviceRemoved)
	keyObjects := func() (private, public int) {
		for _, b := range objectBlocks(tool(t, label, "--login", "--pin", userPIN, "--list-objects")) {
			switch {
			case strings.HasPrefix(b, "Private Key Object"):
				private++
			case strings.HasPrefix(b, "Public Key Object"):
				public++
			}
		}
		return private, public
	}
	if p, q := keyObjects(); p != 2 || q != 1 {
		t.Fatalf("after the torn generation: %d private and %d public keys, want 2 (the other application's and the torn one) and 1", p, q)
	}

	recoverToken(t, &inj, tok, slot)
	if _, created, err := tok.GenerateKey(ctx, req); err != nil || !created {
		t.Fatalf("retry: created %v, %v", created, err)
	}
	if p, q := keyObjects(); p != 2 || q != 2 {
		t.Fatalf("after the retry: %d private and %d public keys, want 2 and 2 (the job's and the other application's)", p, q)
	}
	if n := countObjects(t, label, req.ID, "Private Key"); n != 1 {
		t.Fatalf("%d private keys with the job's ID, want 1", n)
	}
}
