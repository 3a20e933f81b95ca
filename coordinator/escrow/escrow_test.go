package escrow_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/escrow"
)

// encryptionCert makes an RSA encryption key and a self-signed certificate for it.
func encryptionCert(t *testing.T) (*rsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Alice Martin (encryption)"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return k, c
}

func recoveryKeys(t *testing.T) (rsaKey *rsa.PrivateKey, p256 *ecdsa.PrivateKey, x *ecdh.PrivateKey) {
	t.Helper()
	var err error
	if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if p256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if x, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	return rsaKey, p256, x
}

func TestSealOpenEveryRecoveryKey(t *testing.T) {
	t.Parallel()
	priv, cert := encryptionCert(t)
	r1, r2, r3 := recoveryKeys(t)
	a, err := escrow.Seal(priv, cert, []crypto.PublicKey{&r1.PublicKey, &r2.PublicKey, r3.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	stored, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(stored, priv.D.Bytes()) {
		t.Fatal("the stored archive holds the private exponent in clear")
	}
	back, err := escrow.Unmarshal(stored)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.RecoveryKeyIDs(); len(got) != 3 {
		t.Fatalf("recovery key ids %v, want 3", got)
	}
	if back.KeyID() == "" || !bytes.Equal(back.Certificate, cert.Raw) {
		t.Fatal("the archive does not name its key and certificate")
	}
	for name, rk := range map[string]crypto.PrivateKey{"rsa": r1, "p256": r2, "x25519": r3} {
		got, err := escrow.Open(back, rk)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !priv.Equal(got) {
			t.Fatalf("%s: recovered another key", name)
		}
	}
}

func TestOpenWithWrongKeyRefused(t *testing.T) {
	t.Parallel()
	priv, cert := encryptionCert(t)
	r1, _, _ := recoveryKeys(t)
	other, _, _ := recoveryKeys(t)
	a, err := escrow.Seal(priv, cert, []crypto.PublicKey{&r1.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := escrow.Open(a, other); !errors.Is(err, escrow.ErrNotRecipient) {
		t.Fatalf("open with a key not sealed to: %v, want ErrNotRecipient", err)
	}
	// The holder's own key is not a recovery key either.
	if _, err := escrow.Open(a, priv); !errors.Is(err, escrow.ErrNotRecipient) {
		t.Fatalf("open with the escrowed key itself: %v", err)
	}
}

func TestTamperingDetected(t *testing.T) {
	t.Parallel()
	priv, cert := encryptionCert(t)
	_, p256, x := recoveryKeys(t)
	seal := func() *escrow.Archive {
		a, err := escrow.Seal(priv, cert, []crypto.PublicKey{&p256.PublicKey, x.PublicKey()})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	otherPriv, otherCert := encryptionCert(t)
	other, err := escrow.Seal(otherPriv, otherCert, []crypto.PublicKey{&p256.PublicKey, x.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(a *escrow.Archive){
		"ciphertext":        func(a *escrow.Archive) { a.Ciphertext[5] ^= 1 },
		"nonce":             func(a *escrow.Archive) { a.Nonce[0] ^= 1 },
		"wrapped key":       func(a *escrow.Archive) { a.Recipients[0].WrappedKey[3] ^= 1 },
		"certificate swap":  func(a *escrow.Archive) { a.Certificate = otherCert.Raw },
		"public key swap":   func(a *escrow.Archive) { a.PublicKey = other.PublicKey },
		"ciphertext swap":   func(a *escrow.Archive) { a.Ciphertext, a.Nonce = other.Ciphertext, other.Nonce },
		"recipient dropped": func(a *escrow.Archive) { a.Recipients = a.Recipients[:1] },
	}
	for name, edit := range cases {
		a := seal()
		edit(a)
		if _, err := escrow.Open(a, p256); !errors.Is(err, escrow.ErrOpen) {
			t.Errorf("%s: open gave %v, want ErrOpen", name, err)
		}
	}
	a := seal()
	a.Version = 2
	if _, err := escrow.Open(a, p256); err == nil {
		t.Error("an archive of an unknown version opened")
	}
}

func TestSealChecksCertificateAndRecoveryKeys(t *testing.T) {
	t.Parallel()
	priv, _ := encryptionCert(t)
	_, otherCert := encryptionCert(t)
	r, _, _ := recoveryKeys(t)
	if _, err := escrow.Seal(priv, otherCert, []crypto.PublicKey{&r.PublicKey}); !errors.Is(err, escrow.ErrMismatch) {
		t.Fatalf("seal with another key's certificate: %v", err)
	}
	if _, err := escrow.Seal(priv, nil, nil); err == nil {
		t.Fatal("sealed to no recovery key")
	}
	if _, err := escrow.Seal(priv, nil, []crypto.PublicKey{&r.PublicKey, &r.PublicKey}); err == nil {
		t.Fatal("sealed twice to one recovery key")
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := escrow.Seal(priv, nil, []crypto.PublicKey{&weak.PublicKey}); err == nil {
		t.Fatal("sealed to a 1024-bit RSA recovery key")
	}
}

// TestRecoveredKeyDecryptsWhatOpenSSLEncrypted: data encrypted by openssl to the holder's
// certificate is decrypted with the key recovered from the archive.
func TestRecoveredKeyDecryptsWhatOpenSSLEncrypted(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is needed: apt-get install openssl")
	}
	priv, cert := encryptionCert(t)
	_, p256, _ := recoveryKeys(t)
	a, err := escrow.Seal(priv, cert, []crypto.PublicKey{&p256.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, plain, enc := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "tender.txt"), filepath.Join(dir, "tender.enc")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := []byte("envelope key for tender 2026-114")
	if err := os.WriteFile(plain, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "pkeyutl", "-encrypt", "-certin", "-inkey", certPath,
		"-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-in", plain, "-out", enc).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkeyutl: %v: %s", err, out)
	}
	ct, err := os.ReadFile(enc)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := escrow.Open(a, p256)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rsa.DecryptOAEP(sha256.New(), nil, rec.(*rsa.PrivateKey), ct, nil)
	if err != nil {
		t.Fatalf("recovered key cannot decrypt: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("decrypted %q", got)
	}
}
