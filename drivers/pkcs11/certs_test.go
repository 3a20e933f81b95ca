//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

func TestWriteCertificate(t *testing.T) {
	ctx := context.Background()
	_, tok, label := loggedIn(t, pkcs11.Options{})
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := newCA(t, caKey)
	id := []byte{0xce, 0x01}
	key := generate(t, tok, id, "rsa-2048", 0)
	cert := ca.issue(t, "alice", key.Public())
	write := pkcs11.CertificateWrite{ID: id, Label: "alice", Cert: cert,
		Chain: []pkcs11.ChainCertificate{{ID: []byte{0xca}, Label: "issuing CA", Cert: ca.cert}}}

	res, err := tok.WriteCertificate(ctx, write)
	if err != nil || res != pkcs11.Written {
		t.Fatalf("write: %v, %v", res, err)
	}
	res, err = tok.WriteCertificate(ctx, write)
	if err != nil || res != pkcs11.AlreadyPresent {
		t.Fatalf("write again: %v, %v", res, err)
	}
	if err := tok.VerifyKeyAndCertificate(ctx, id); err != nil {
		t.Fatalf("verify: %v", err)
	}

	// OpenSC reads back exactly the DER we wrote; its key is the key's; openssl parses it.
	der := filepath.Join(t.TempDir(), "cert.der")
	tool(t, label, "--read-object", "--type", "cert", "--id", hex.EncodeToString(id), "-o", der)
	got, err := os.ReadFile(der)
	if err != nil {
		t.Fatal(err)
	}
	back, err := x509.ParseCertificate(got)
	if err != nil || !bytes.Equal(got, cert.Raw) {
		t.Fatalf("pkcs11-tool reads another certificate than the one written (%v)", err)
	}
	if !back.PublicKey.(*rsa.PublicKey).Equal(key.Public()) {
		t.Error("the certificate OpenSC reads is not for the key")
	}
	out := testenv.Run(t, "openssl", "x509", "-inform", "DER", "-in", der, "-noout", "-subject", "-issuer")
	if !strings.Contains(out, "alice") || !strings.Contains(out, "tokenfleet test CA") {
		t.Errorf("openssl x509:\n%s", out)
	}

	certs, err := tok.Certificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 {
		t.Fatalf("%d certificates listed, want 2", len(certs))
	}
	for _, c := range certs {
		isCA := bytes.Equal(c.ID, []byte{0xca})
		want := cert
		if isCA {
			want = ca.cert
		}
		if c.Authority != isCA || c.Subject != want.Subject.String() || c.Issuer != "CN=tokenfleet test CA" ||
			c.Serial != want.SerialNumber.Text(16) || !c.NotAfter.Equal(want.NotAfter) || !c.NotBefore.Equal(want.NotBefore) {
			t.Errorf("certificate %s: %+v", c.ID, c)
		}
	}

	// A re-issued certificate for the same key replaces the old one.
	renewed := ca.issue(t, "alice", key.Public())
	res, err = tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Label: "alice", Cert: renewed})
	if err != nil || res != pkcs11.Replaced {
		t.Fatalf("write renewed: %v, %v", res, err)
	}
	read, err := tok.Certificate(ctx, id)
	if err != nil || !bytes.Equal(read.DER, renewed.Raw) {
		t.Fatalf("read back: %v", err)
	}
	if n := countObjects(t, label, id, "Certificate"); n != 1 {
		t.Errorf("%d certificates with the ID after replacing, want 1", n)
	}

	// Refusals.
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, err = tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Cert: ca.issue(t, "mallory", other.Public())})
	wantCode(t, err, pkcs11.CodeCertificateKeyMismatch)
	_, err = tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: []byte{0xde, 0xad}, Cert: cert})
	wantCode(t, err, pkcs11.CodeKeyNotFound)
	_, err = tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id})
	wantCode(t, err, pkcs11.CodeInvalidArgument)
	_, err = tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Cert: renewed,
		Chain: []pkcs11.ChainCertificate{{ID: id, Cert: ca.cert}}})
	wantCode(t, err, pkcs11.CodeInvalidArgument)
	_, err = tok.Certificate(ctx, []byte{0xde, 0xad})
	wantCode(t, err, pkcs11.CodeCertificateNotFound)

	// Certificates are public: listed without login, but writing needs it.
	if err := tok.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	certs, err = tok.Certificates(ctx)
	if err != nil || len(certs) != 2 {
		t.Fatalf("logged out: %d certificates, %v", len(certs), err)
	}
	_, err = tok.WriteCertificate(ctx, write)
	wantCode(t, err, pkcs11.CodeNotLoggedIn)
	wantCode(t, tok.VerifyKeyAndCertificate(ctx, id), pkcs11.CodeNotLoggedIn)

	// Deleting.
	n, err := tok.DeleteCertificate(ctx, []byte{0xca})
	if err != nil || n != 1 {
		t.Fatalf("delete CA certificate: %d, %v", n, err)
	}
	if n := countObjects(t, label, []byte{0xca}, "Certificate"); n != 0 {
		t.Errorf("pkcs11-tool still lists %d CA certificates", n)
	}
}

func TestVerifyKeyAndCertificate(t *testing.T) {
	ctx := context.Background()
	_, tok, _ := loggedIn(t, pkcs11.Options{})
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := newCA(t, caKey)

	t.Run("decryption-only key", func(t *testing.T) {
		priv, _ := rsa.GenerateKey(rand.Reader, 2048)
		id := []byte{0xd0}
		if _, _, err := tok.ImportKey(ctx, pkcs11.ImportRequest{ID: id, Key: priv, Usage: pkcs11.UsageDecrypt}); err != nil {
			t.Fatal(err)
		}
		if _, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Label: "enc", Cert: ca.issue(t, "enc", &priv.PublicKey)}); err != nil {
			t.Fatal(err)
		}
		if err := tok.VerifyKeyAndCertificate(ctx, id); err != nil {
			t.Fatal(err)
		}
	})
	// An EC encryption key may only derive: the check is an ECDH agreement.
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		t.Run("derive-only key "+curve.Params().Name, func(t *testing.T) {
			priv, _ := ecdsa.GenerateKey(curve, rand.Reader)
			id := []byte{0xd4, byte(curve.Params().BitSize)}
			if _, _, err := tok.ImportKey(ctx, pkcs11.ImportRequest{ID: id, Key: priv, Usage: pkcs11.UsageDecrypt}); err != nil {
				t.Fatal(err)
			}
			if _, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Label: "enc", Cert: ca.issue(t, "enc", &priv.PublicKey)}); err != nil {
				t.Fatal(err)
			}
			if err := tok.VerifyKeyAndCertificate(ctx, id); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("no certificate", func(t *testing.T) {
		id := []byte{0xd1}
		generate(t, tok, id, "ec-p256", 0)
		wantCode(t, tok.VerifyKeyAndCertificate(ctx, id), pkcs11.CodeCertificateNotFound)
	})
	t.Run("no key", func(t *testing.T) {
		wantCode(t, tok.VerifyKeyAndCertificate(ctx, []byte{0xd9}), pkcs11.CodeKeyNotFound)
	})
	t.Run("certificate of another key under the ID", func(t *testing.T) {
		id, otherID := []byte{0xd2}, []byte{0xd3}
		generate(t, tok, id, "ec-p256", 0)
		other := generate(t, tok, otherID, "ec-p256", 0)
		// A careless writer could put it there: chain certificates are not checked against
		// keys, and this one lands under the first key's ID.
		if _, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: otherID, Cert: ca.issue(t, "other", other.Public()),
			Chain: []pkcs11.ChainCertificate{{ID: id, Cert: ca.issue(t, "stray", other.Public())}}}); err != nil {
			t.Fatal(err)
		}
		wantCode(t, tok.VerifyKeyAndCertificate(ctx, id), pkcs11.CodeCertificateKeyMismatch)
	})
}

func TestKeysAndDeleteKey(t *testing.T) {
	ctx := context.Background()
	_, tok, label := loggedIn(t, pkcs11.Options{})
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := newCA(t, caKey)
	keep := generate(t, tok, []byte{0x01}, "ec-p256", 0)
	gone := generate(t, tok, []byte{0x02}, "ec-p384", 0)
	if _, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: []byte{0x02}, Label: "two", Cert: ca.issue(t, "two", gone.Public())}); err != nil {
		t.Fatal(err)
	}

	keys, err := tok.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].ID.String() != "01" || keys[1].ID.String() != "02" ||
		*keys[0].Spec != keep.Spec() || *keys[1].Spec != gone.Spec() || !keys[0].Private || !keys[1].Public {
		t.Fatalf("keys %+v", keys)
	}

	n, err := tok.DeleteKey(ctx, []byte{0x02})
	if err != nil || n != 2 {
		t.Fatalf("delete key: %d objects, %v", n, err)
	}
	_, err = tok.Key(ctx, []byte{0x02})
	wantCode(t, err, pkcs11.CodeKeyNotFound)
	_, err = gone.Sign(rand.Reader, make([]byte, 48), nil)
	wantCode(t, err, pkcs11.CodeKeyNotFound)
	if _, err := keep.Sign(rand.Reader, make([]byte, 32), nil); err != nil {
		t.Fatalf("the other key: %v", err)
	}
	// The certificate stays until deleted on its own.
	if n := countObjects(t, label, []byte{0x02}, "Certificate"); n != 1 {
		t.Errorf("%d certificates after deleting the key, want 1", n)
	}
	if n := countObjects(t, label, []byte{0x02}, "Private Key") + countObjects(t, label, []byte{0x02}, "Public Key"); n != 0 {
		t.Errorf("pkcs11-tool still lists %d key objects", n)
	}

	// Logged out, listings show public halves only, and keys cannot be deleted.
	if err := tok.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err = tok.Keys(ctx)
	if err != nil || len(keys) != 1 || keys[0].Private || !keys[0].Public {
		t.Fatalf("keys while logged out: %+v, %v", keys, err)
	}
	_, err = tok.DeleteKey(ctx, []byte{0x01})
	wantCode(t, err, pkcs11.CodeNotLoggedIn)
}

// A key pair replaced under a Key's feet: the Key notices instead of signing with the new
// key.
func TestKeyReplacedUnderSameID(t *testing.T) {
	ctx := context.Background()
	_, tok, _ := loggedIn(t, pkcs11.Options{})
	id := []byte{0x77}
	old := generate(t, tok, id, "ec-p256", 0)
	if _, err := tok.DeleteKey(ctx, id); err != nil {
		t.Fatal(err)
	}
	generate(t, tok, id, "ec-p256", 0)
	_, err := old.Sign(rand.Reader, make([]byte, 32), nil)
	wantCode(t, err, pkcs11.CodeKeyNotFound)
}
