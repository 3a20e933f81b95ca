//go:build cgo

package simtoken_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// An escrowed key imported through the driver signs on the token, and its material is
// as out of reach as a generated key's; a second import of the same key changes nothing.
func TestImportedKeys(t *testing.T) {
	ctx := context.Background()
	_, _, tok := ready(t, simtoken.Options{})
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range []crypto.Signer{rsaKey, ecKey} {
		id := []byte{0xe0, byte(i)}
		key, created, err := tok.ImportKey(ctx, pkcs11.ImportRequest{ID: id, Label: "escrow", Key: k})
		if err != nil || !created {
			t.Fatalf("import %T: created %t, %v", k, created, err)
		}
		if _, created, err := tok.ImportKey(ctx, pkcs11.ImportRequest{ID: id, Label: "escrow", Key: k}); err != nil || created {
			t.Fatalf("import %T again: created %t, %v", k, created, err)
		}
		digest := sha256.Sum256([]byte("escrow"))
		sig, err := key.Sign(nil, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		switch pub := k.Public().(type) {
		case *rsa.PublicKey:
			ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) == nil
		case *ecdsa.PublicKey:
			ok = ecdsa.VerifyASN1(pub, digest[:], sig)
		}
		if !ok {
			t.Fatalf("the imported %T's signature does not verify with the original's public key", k)
		}
	}
	// Another key under a taken ID is refused.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, _, err = tok.ImportKey(ctx, pkcs11.ImportRequest{ID: []byte{0xe0, 1}, Key: other})
	wantCode(t, err, pkcs11.CodeKeyExists)
}

// Objects take token memory; a full token answers CKR_DEVICE_MEMORY, which the driver
// reports as memory_full, and deleting makes room again.
func TestMemoryFull(t *testing.T) {
	ctx := context.Background()
	model := simtoken.DefaultModel
	model.Memory = 3000
	b := newBackend(t, simtoken.Options{})
	addToken(t, b, simtoken.TokenSpec{Serial: "SMALL", Model: &model, SOPIN: soPIN, Label: "small", UserPIN: userPIN})
	tok := findToken(t, open(t, b), "SMALL")
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	info, err := tok.Info(ctx)
	if err != nil || info.TotalPublicMemory == nil || *info.TotalPublicMemory != 3000 || *info.FreePublicMemory != 3000 {
		t.Fatalf("memory of an empty token: %+v, %v", info, err)
	}
	spec := pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}
	n := 0
	for ; n < 100; n++ {
		_, _, err = tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{byte(n + 1)}, Label: "k", Spec: spec})
		if err != nil {
			break
		}
	}
	wantCode(t, err, pkcs11.CodeMemoryFull)
	if n == 0 || n > 10 {
		t.Fatalf("%d P-256 key pairs fit in 3000 bytes", n)
	}
	info, _ = tok.Info(ctx)
	if free := *info.FreePublicMemory; free >= 3000 {
		t.Fatalf("free memory %d after %d keys", free, n)
	}
	if _, err := tok.DeleteKey(ctx, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{byte(n + 1)}, Label: "k", Spec: spec}); err != nil {
		t.Fatalf("after a deletion: %v", err)
	}
}

// Session objects (CKA_TOKEN false) go with their session; token objects stay.
func TestSessionObjects(t *testing.T) {
	b := newBackend(t, simtoken.Options{})
	slot := addToken(t, b, simtoken.TokenSpec{Serial: "SIM0001", SOPIN: soPIN, Label: "a", UserPIN: userPIN})
	count := func(sh p11.SessionHandle) int {
		t.Helper()
		if err := b.FindObjectsInit(sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_DATA)}); err != nil {
			t.Fatal(err)
		}
		hs, _, err := b.FindObjects(sh, 100)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.FindObjectsFinal(sh); err != nil {
			t.Fatal(err)
		}
		return len(hs)
	}
	keep, err := b.OpenSession(slot, p11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := b.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	for _, onToken := range []bool{true, false} {
		if _, err := b.CreateObject(sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_DATA),
			p11.NewAttribute(p11.CKA_TOKEN, onToken), p11.NewAttribute(p11.CKA_VALUE, []byte("x"))}); err != nil {
			t.Fatal(err)
		}
	}
	// A read-only session may not write token objects.
	if _, err := b.CreateObject(keep, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_DATA),
		p11.NewAttribute(p11.CKA_TOKEN, true)}); rvOf(err) != p11.CKR_SESSION_READ_ONLY {
		t.Errorf("token object from a read-only session: %v", err)
	}
	if n := count(keep); n != 2 {
		t.Fatalf("%d data objects before the close", n)
	}
	if err := b.CloseSession(sh); err != nil {
		t.Fatal(err)
	}
	if n := count(keep); n != 1 {
		t.Fatalf("%d data objects after the close, want the token one", n)
	}
	if err := b.CloseSession(sh); rvOf(err) != p11.CKR_SESSION_HANDLE_INVALID {
		t.Errorf("second close: %v", err)
	}
}

// Escrowed encryption keys: an RSA one is checked against its certificate by decryption,
// as on a real token; an EC one may only derive, which simulated tokens do not, so the
// check is refused as an unsupported mechanism rather than passed unchecked.
func TestImportedEncryptionKeys(t *testing.T) {
	ctx := context.Background()
	_, _, tok := ready(t, simtoken.Options{})
	ca, err := testenv.NewCA("simulated CA")
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range []crypto.Signer{rsaKey, ecKey} {
		id := []byte{0xe8, byte(i)}
		if _, _, err := tok.ImportKey(ctx, pkcs11.ImportRequest{ID: id, Label: "enc", Key: k, Usage: pkcs11.UsageDecrypt}); err != nil {
			t.Fatalf("import %T: %v", k, err)
		}
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(int64(10 + i)),
			Subject: pkix.Name{CommonName: "enc"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)},
			ca.Cert, k.Public(), ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		if _, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Label: "enc", Cert: cert}); err != nil {
			t.Fatal(err)
		}
		err = tok.VerifyKeyAndCertificate(ctx, id)
		if _, isRSA := k.(*rsa.PrivateKey); isRSA {
			if err != nil {
				t.Fatalf("RSA encryption key: %v", err)
			}
			continue
		}
		wantCode(t, err, pkcs11.CodeMechanismNotSupported)
	}
}
