//go:build cgo

package simtoken_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

const (
	soPIN   = "87654321"
	userPIN = "12345678"
)

// open makes a module over b through the real driver, closed when the test ends.
func open(t testing.TB, b *simtoken.Backend) *pkcs11.Module {
	t.Helper()
	mod, err := pkcs11.OpenBackend("simtoken", b, pkcs11.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mod.Close(); err != nil {
			t.Errorf("close module: %v", err)
		}
	})
	return mod
}

func newBackend(t testing.TB, opts simtoken.Options) *simtoken.Backend {
	t.Helper()
	b, err := simtoken.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func addToken(t testing.TB, b *simtoken.Backend, spec simtoken.TokenSpec) uint {
	t.Helper()
	slot, err := b.AddToken(spec)
	if err != nil {
		t.Fatal(err)
	}
	return slot
}

func findToken(t testing.TB, mod *pkcs11.Module, serial string) *pkcs11.Token {
	t.Helper()
	tok, err := mod.FindToken(context.Background(), &uri.URI{Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tok.Close() })
	return tok
}

// ready is a token initialised with both PINs, logged in through the driver.
func ready(t testing.TB, opts simtoken.Options) (*simtoken.Backend, *pkcs11.Module, *pkcs11.Token) {
	t.Helper()
	b := newBackend(t, opts)
	addToken(t, b, simtoken.TokenSpec{Serial: "SIM0001", SOPIN: soPIN, Label: "alice", UserPIN: userPIN})
	mod := open(t, b)
	tok := findToken(t, mod, "SIM0001")
	if err := tok.Login(context.Background(), userPIN); err != nil {
		t.Fatal(err)
	}
	return b, mod, tok
}

func wantCode(t testing.TB, err error, code pkcs11.Code) {
	t.Helper()
	if got := pkcs11.CodeOf(err); got != code {
		t.Fatalf("error %v: code %q, want %q", err, got, code)
	}
}

// The whole issuance as the agent does it, through the real driver: a blank token is
// initialised, gets its PINs, makes RSA-2048 and P-256 keys, signs CSRs that crypto/x509
// and openssl accept, stores the certificates and finds them again.
func TestIssuanceThroughTheDriver(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, simtoken.Options{})
	slot := addToken(t, b, simtoken.TokenSpec{Serial: "SIM0001"})
	mod := open(t, b)

	slots, err := mod.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) != 1 || !slots[0].Free || slots[0].Token == nil || slots[0].Token.Serial != "SIM0001" ||
		slots[0].Token.Model != "SimToken" || !slots[0].Removable {
		t.Fatalf("slots %+v", slots)
	}
	info, err := mod.InitToken(ctx, slot, pkcs11.InitOptions{Label: "alice", SOPIN: soPIN})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Initialized || info.UserPINInitialized || info.Label != "alice" {
		t.Fatalf("after InitToken: %+v", info)
	}
	_, err = mod.InitToken(ctx, slot, pkcs11.InitOptions{Label: "alice", SOPIN: soPIN})
	wantCode(t, err, pkcs11.CodeAlreadyInitialized)

	tok := findToken(t, mod, "SIM0001")
	wantCode(t, tok.Login(ctx, userPIN), pkcs11.CodeNotInitialized)
	if err := tok.InitUserPIN(ctx, soPIN, userPIN); err != nil {
		t.Fatal(err)
	}
	if err := tok.ChangeUserPIN(ctx, userPIN, "24681357"); err != nil {
		t.Fatal(err)
	}
	if err := tok.ChangeSOPIN(ctx, soPIN, "11223344"); err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(ctx, "24681357"); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []string{"rsa-2048", "ec-p256"} {
		t.Run(spec, func(t *testing.T) {
			ks, err := pkcs11.ParseKeySpec(spec)
			if err != nil {
				t.Fatal(err)
			}
			if err := tok.CheckKeySpec(ctx, ks); err != nil {
				t.Fatal(err)
			}
			id := []byte("job-" + spec)
			key, created, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: id, Label: "signing", Spec: ks})
			if err != nil || !created {
				t.Fatalf("GenerateKey: created %t, %v", created, err)
			}
			again, created, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: id, Label: "signing", Spec: ks})
			if err != nil || created || !again.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Fatalf("GenerateKey again: created %t, %v", created, err)
			}

			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
				Subject: pkix.Name{CommonName: "alice " + spec}}, key)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Fatalf("crypto/x509 refuses the CSR: %v", err)
			}
			file := filepath.Join(t.TempDir(), "req.pem")
			if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), 0o600); err != nil {
				t.Fatal(err)
			}
			out := testenv.Run(t, "openssl", "req", "-in", file, "-verify", "-noout", "-subject")
			if !strings.Contains(out, "alice "+spec) || !strings.Contains(strings.ToLower(out), "verify ok") {
				t.Fatalf("openssl req -verify:\n%s", out)
			}

			ca, err := testenv.NewCA("simtoken test CA")
			if err != nil {
				t.Fatal(err)
			}
			certDER, err := ca.Sign(der, "alice")
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(certDER)
			if err != nil {
				t.Fatal(err)
			}
			res, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Label: "signing", Cert: cert,
				Chain: []pkcs11.ChainCertificate{{ID: []byte("ca-" + spec), Label: "CA", Cert: ca.Cert}}})
			if err != nil || res != pkcs11.Written {
				t.Fatalf("WriteCertificate: %v, %v", res, err)
			}
			if res, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Cert: cert}); err != nil || res != pkcs11.AlreadyPresent {
				t.Fatalf("WriteCertificate again: %v, %v", res, err)
			}
			got, err := tok.Certificate(ctx, id)
			if err != nil || !got.Cert.Equal(cert) || got.Authority {
				t.Fatalf("Certificate: %+v, %v", got, err)
			}
			if err := tok.VerifyKeyAndCertificate(ctx, id); err != nil {
				t.Fatal(err)
			}
		})
	}

	keys, err := tok.Keys(ctx)
	if err != nil || len(keys) != 2 || !keys[0].Private || !keys[0].Public || keys[0].Spec == nil {
		t.Fatalf("Keys: %+v, %v", keys, err)
	}
	certs, err := tok.Certificates(ctx)
	if err != nil || len(certs) != 4 {
		t.Fatalf("Certificates: %d, %v", len(certs), err)
	}
	// Logged out, the private keys are out of sight; the certificates are not.
	if err := tok.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err = tok.Keys(ctx)
	if err != nil || len(keys) != 2 || keys[0].Private {
		t.Fatalf("Keys logged out: %+v, %v", keys, err)
	}
	_, err = tok.Key(ctx, []byte("job-rsa-2048"))
	wantCode(t, err, pkcs11.CodeNotLoggedIn)
	if certs, err := tok.Certificates(ctx); err != nil || len(certs) != 4 {
		t.Fatalf("Certificates logged out: %d, %v", len(certs), err)
	}
}

// The private key never leaves: its material answers CKR_ATTRIBUTE_SENSITIVE, and it is
// marked sensitive, never extractable, made on the token. It decrypts and signs PSS too.
func TestPrivateKeyStaysOnTheToken(t *testing.T) {
	ctx := context.Background()
	b, _, tok := ready(t, simtoken.Options{})
	key, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Label: "k", Spec: pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 2048},
		Usage: pkcs11.UsageSign | pkcs11.UsageDecrypt})
	if err != nil {
		t.Fatal(err)
	}

	// Straight on the backend, in a session of its own: login is the token's, so the
	// driver's login lets it see the private key.
	slots, err := b.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := b.OpenSession(slots[0], p11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.CloseSession(sh) }()
	if err := b.FindObjectsInit(sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY)}); err != nil {
		t.Fatal(err)
	}
	hs, _, err := b.FindObjects(sh, 10)
	if err != nil || len(hs) != 1 {
		t.Fatalf("private keys: %v, %v", hs, err)
	}
	if err := b.FindObjectsFinal(sh); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []uint{p11.CKA_PRIVATE_EXPONENT, p11.CKA_PRIME_1, p11.CKA_PRIME_2, p11.CKA_EXPONENT_1,
		p11.CKA_EXPONENT_2, p11.CKA_COEFFICIENT, p11.CKA_VALUE} {
		_, err := b.GetAttributeValue(sh, hs[0], []*p11.Attribute{p11.NewAttribute(typ, nil)})
		if rv := rvOf(err); rv != p11.CKR_ATTRIBUTE_SENSITIVE {
			t.Errorf("attribute 0x%x of the private key: %v, want CKR_ATTRIBUTE_SENSITIVE", typ, err)
		}
	}
	for typ, want := range map[uint]bool{p11.CKA_SENSITIVE: true, p11.CKA_EXTRACTABLE: false, p11.CKA_ALWAYS_SENSITIVE: true,
		p11.CKA_NEVER_EXTRACTABLE: true, p11.CKA_LOCAL: true, p11.CKA_PRIVATE: true, p11.CKA_TOKEN: true} {
		a, err := b.GetAttributeValue(sh, hs[0], []*p11.Attribute{p11.NewAttribute(typ, nil)})
		if err != nil || len(a) != 1 || (len(a[0].Value) == 1 && a[0].Value[0] != 0) != want {
			t.Errorf("attribute 0x%x: %v, %v; want %t", typ, a, err, want)
		}
	}

	// Decryption: what the public key encrypted comes back.
	msg := []byte("escrow check")
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, key.Public().(*rsa.PublicKey), msg) //nolint:staticcheck // CKM_RSA_PKCS
	if err != nil {
		t.Fatal(err)
	}
	plain, err := key.Decrypt(nil, ct, nil)
	if err != nil || string(plain) != string(msg) {
		t.Fatalf("Decrypt: %q, %v", plain, err)
	}
	// PSS, which the driver looks for in the mechanism list first.
	digest := sha256.Sum256(msg)
	sig, err := key.Sign(nil, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPSS(key.Public().(*rsa.PublicKey), crypto.SHA256, digest[:], sig, nil); err != nil {
		t.Fatalf("PSS signature: %v", err)
	}
	// PKCS #1 v1.5 with the DigestInfo the driver adds.
	sig, err = key.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(key.Public().(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("PKCS #1 v1.5 signature: %v", err)
	}
	_, err = key.Decrypt(nil, ct, &rsa.OAEPOptions{Hash: crypto.SHA256})
	wantCode(t, err, pkcs11.CodeMechanismNotSupported)
}

func rvOf(err error) uint {
	var e p11.Error
	if errors.As(err, &e) {
		return uint(e)
	}
	return 0
}

// OpenBackend names the module as told, refuses what it cannot use, and Close leaves the
// backend usable by the next module.
func TestOpenBackend(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t, simtoken.Options{})
	addToken(t, b, simtoken.TokenSpec{Serial: "SIM0001", SOPIN: soPIN, Label: "alice", UserPIN: userPIN})
	_, err := pkcs11.OpenBackend("", b, pkcs11.Options{})
	wantCode(t, err, pkcs11.CodeInvalidArgument)
	_, err = pkcs11.OpenBackend("simtoken:ws-01", nil, pkcs11.Options{})
	wantCode(t, err, pkcs11.CodeInvalidArgument)

	for range 2 {
		mod, err := pkcs11.OpenBackend("simtoken:ws-01", b, pkcs11.Options{})
		if err != nil {
			t.Fatal(err)
		}
		info, err := mod.Info(ctx)
		if err != nil || mod.Path() != "simtoken:ws-01" || info.Path != "simtoken:ws-01" || info.Manufacturer != "tokenfleet" ||
			info.CryptokiVersion != "2.40" {
			t.Fatalf("module %q: %+v, %v", mod.Path(), info, err)
		}
		tok, err := mod.FindToken(ctx, &uri.URI{Token: "alice", Manufacturer: "tokenfleet", Model: "SimToken", LibraryDescription: "tokenfleet simulated tokens"})
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.Login(ctx, userPIN); err != nil {
			t.Fatal(err)
		}
		if err := mod.Close(); err != nil {
			t.Fatal(err)
		}
		if err := mod.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
}

// The key sizes and curves of the model are made and sign; others are refused as the
// driver expects, before and at generation.
func TestKeySpecs(t *testing.T) {
	ctx := context.Background()
	_, _, tok := ready(t, simtoken.Options{})
	for i, text := range []string{"ec-p384", "rsa-3072"} {
		spec, err := pkcs11.ParseKeySpec(text)
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.CheckKeySpec(ctx, spec); err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		key, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{byte(i + 1)}, Spec: spec})
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if key.Spec() != spec {
			t.Fatalf("%s: the key is %s", text, key.Spec())
		}
		digest := sha256.Sum256([]byte(text))
		sig, err := key.Sign(nil, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		switch pub := key.Public().(type) {
		case *rsa.PublicKey:
			err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
		case *ecdsa.PublicKey:
			if !ecdsa.VerifyASN1(pub, digest[:], sig) {
				err = errors.New("ECDSA signature does not verify")
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if rsaPub, ok := key.Public().(*rsa.PublicKey); ok {
			// Without DigestInfo: the data is signed as given (crypto.Hash(0)).
			raw := []byte("TLS 1.1 MD5+SHA1 digest, 36 bytes!!")
			sig, err := key.Sign(nil, raw, crypto.Hash(0))
			if err != nil {
				t.Fatal(err)
			}
			if err := rsa.VerifyPKCS1v15(rsaPub, 0, raw, sig); err != nil {
				t.Fatalf("raw PKCS #1 v1.5 signature: %v", err)
			}
		}
	}
	for _, text := range []string{"ec-p521", "rsa-8192"} {
		spec, err := pkcs11.ParseKeySpec(text)
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, tok.CheckKeySpec(ctx, spec), pkcs11.CodeMechanismNotSupported)
		_, _, err = tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte(text), Spec: spec})
		wantCode(t, err, pkcs11.CodeMechanismNotSupported)
	}
}

// Re-initialising needs the SO PIN and no other session on the token, and wipes it.
// (The driver ends the sessions of its own other Tokens on the token first; a session
// opened outside it, as another process would, makes the token refuse.)
func TestReinitialise(t *testing.T) {
	ctx := context.Background()
	b, mod, tok := ready(t, simtoken.Options{})
	if _, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}}); err != nil {
		t.Fatal(err)
	}
	other := findToken(t, mod, "SIM0001")
	_, err := other.Init(ctx, pkcs11.InitOptions{Label: "bob", SOPIN: soPIN})
	wantCode(t, err, pkcs11.CodeAlreadyInitialized)
	slots, err := b.GetSlotList(true)
	if err != nil || len(slots) != 1 {
		t.Fatalf("slots %v, %v", slots, err)
	}
	outside, err := b.OpenSession(slots[0], p11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Init(ctx, pkcs11.InitOptions{Label: "bob", SOPIN: soPIN, Force: true})
	wantCode(t, err, pkcs11.CodeSessionError) // the outside session is open
	if err := b.CloseSession(outside); err != nil {
		t.Fatal(err)
	}
	if err := tok.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = other.Init(ctx, pkcs11.InitOptions{Label: "bob", SOPIN: "00000000", Force: true})
	wantCode(t, err, pkcs11.CodePINIncorrect)
	info, err := other.Init(ctx, pkcs11.InitOptions{Label: "bob", SOPIN: soPIN, Force: true})
	if err != nil || info.Label != "bob" || info.UserPINInitialized || info.SOPIN != (pkcs11.PINStatus{}) {
		t.Fatalf("re-initialised: %+v, %v", info, err)
	}
	if err := other.InitUserPIN(ctx, soPIN, userPIN); err != nil {
		t.Fatal(err)
	}
	if err := other.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	if keys, err := other.Keys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("keys after the wipe: %+v, %v", keys, err)
	}
}
