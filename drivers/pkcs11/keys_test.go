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
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

func TestGenerateKeyOnToken(t *testing.T) {
	ctx := context.Background()
	_, tok, label := loggedIn(t, pkcs11.Options{})
	for i, spec := range []string{"rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384", "ec-p521"} {
		t.Run(spec, func(t *testing.T) {
			id := []byte{0x10, byte(i)}
			s, _ := pkcs11.ParseKeySpec(spec)
			if err := tok.CheckKeySpec(ctx, s); err != nil {
				t.Fatalf("SoftHSM should support %s: %v", spec, err)
			}
			key := generate(t, tok, id, spec, 0)
			if key.Spec() != s || !bytes.Equal(key.ID(), id) || key.Label() != "key-"+spec {
				t.Errorf("key %v %x %q", key.Spec(), key.ID(), key.Label())
			}

			// Idempotent: the same request returns the same key and makes nothing.
			again, created, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: id, Label: "other", Spec: s})
			if err != nil || created {
				t.Fatalf("second GenerateKey: created %v, %v", created, err)
			}
			if !again.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Error("second GenerateKey returned another key")
			}
			other := pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}
			if s.Type == pkcs11.EC && s.Curve == "P-256" {
				other = pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 2048}
			}
			_, _, err = tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: id, Spec: other})
			wantCode(t, err, pkcs11.CodeKeyExists)

			// OpenSC sees one key pair with this ID, made on the token, never extractable.
			out := tool(t, label, "--login", "--pin", userPIN, "--list-objects")
			blocks := blocksWithID(out, id)
			if len(blocks) != 2 {
				t.Fatalf("pkcs11-tool lists %d objects with ID %x, want 2:\n%s", len(blocks), id, out)
			}
			for _, b := range blocks {
				if strings.HasPrefix(b, "Private Key Object") {
					for _, want := range []string{"sensitive", "never extractable", "local", "sign"} {
						if !strings.Contains(b, want) {
							t.Errorf("private key lacks %q:\n%s", want, b)
						}
					}
					if strings.Contains(b, "decrypt") {
						t.Errorf("signing key may decrypt:\n%s", b)
					}
				}
			}
			// The public key OpenSC reads is the one Key.Public gives. (OpenSC 0.23 cannot
			// export P-384/P-521 public keys, so EC points are compared as it lists them.)
			if s.Type == pkcs11.RSA {
				pubFile := filepath.Join(t.TempDir(), "pub.der")
				tool(t, label, "--read-object", "--type", "pubkey", "--id", hex.EncodeToString(id), "-o", pubFile)
				der, err := os.ReadFile(pubFile)
				if err != nil {
					t.Fatal(err)
				}
				mine, _ := x509.MarshalPKIXPublicKey(key.Public())
				if !bytes.Equal(der, mine) {
					t.Errorf("pkcs11-tool's public key differs from Key.Public")
				}
			} else {
				point, err := key.Public().(*ecdsa.PublicKey).Bytes()
				if err != nil {
					t.Fatal(err)
				}
				wrapped, _ := asn1.Marshal(point)
				if !strings.Contains(out, "EC_POINT:   "+hex.EncodeToString(wrapped)+"\n") {
					t.Errorf("pkcs11-tool does not list the EC point of Key.Public:\n%s", out)
				}
			}
			// Found again by ID.
			found, err := tok.Key(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if found.Spec() != s {
				t.Errorf("Key(id) spec %v", found.Spec())
			}
		})
	}
}

func TestGenerateKeyNeedsLogin(t *testing.T) {
	ctx := context.Background()
	_, serial := newToken(t)
	mod := openModule(t, pkcs11.Options{})
	tok := openToken(t, mod, serial)
	_, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
	wantCode(t, err, pkcs11.CodeNotLoggedIn)
	_, err = tok.Key(ctx, []byte{1})
	wantCode(t, err, pkcs11.CodeNotLoggedIn)
	_, _, err = tok.GenerateKey(ctx, pkcs11.KeyRequest{Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
	wantCode(t, err, pkcs11.CodeInvalidArgument)
	_, _, err = tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 1024}})
	wantCode(t, err, pkcs11.CodeInvalidArgument)
}

func TestGenerateKeyDeletesLeftoverPublicKey(t *testing.T) {
	ctx := context.Background()
	// An interrupted earlier attempt left a public key without its private key; OpenSC
	// puts one there before the module is opened.
	label, serial := newToken(t)
	stray, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(stray.Public())
	id := []byte{0x5e}
	tool(t, label, "--login", "--pin", userPIN, "--write-object", writeFile(t, "pub.der", der), "--type", "pubkey", "--id", "5e")

	mod := openModule(t, pkcs11.Options{})
	tok := openToken(t, mod, serial)
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	key := generate(t, tok, id, "ec-p256", 0)
	if n := countObjects(t, label, id, "Public Key"); n != 1 {
		t.Fatalf("%d public keys with ID %x, want 1", n, id)
	}
	if key.Public().(*ecdsa.PublicKey).Equal(stray.Public()) {
		t.Error("the stray public key was taken for the new key")
	}
}

func TestSignatures(t *testing.T) {
	ctx := context.Background()
	_, tok, _ := loggedIn(t, pkcs11.Options{})
	rsaKey := generate(t, tok, []byte{0x20}, "rsa-2048", 0)
	ecKey := generate(t, tok, []byte{0x21}, "ec-p384", 0)
	msg := []byte("tokenfleet signs this")
	d256 := sha256.Sum256(msg)
	d384 := sha512.Sum384(msg)
	d512 := sha512.Sum512(msg)
	rsaPub := rsaKey.Public().(*rsa.PublicKey)

	for _, tc := range []struct {
		name   string
		digest []byte
		opts   crypto.SignerOpts
	}{
		{"pkcs1v15-sha256", d256[:], crypto.SHA256},
		{"pkcs1v15-sha384", d384[:], crypto.SHA384},
		{"pkcs1v15-sha512", d512[:], crypto.SHA512},
		{"pss-sha256-hashlen", d256[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}},
		{"pss-sha384-auto", d384[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA384}},
	} {
		t.Run("rsa-"+tc.name, func(t *testing.T) {
			sig, err := rsaKey.SignContext(ctx, tc.digest, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if pss, ok := tc.opts.(*rsa.PSSOptions); ok {
				err = rsa.VerifyPSS(rsaPub, pss.Hash, tc.digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
			} else {
				err = rsa.VerifyPKCS1v15(rsaPub, tc.opts.HashFunc(), tc.digest, sig)
			}
			if err != nil {
				t.Fatalf("signature does not verify: %v", err)
			}
		})
	}
	t.Run("ecdsa", func(t *testing.T) {
		sig, err := ecKey.Sign(rand.Reader, d384[:], crypto.SHA384)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(ecKey.Public().(*ecdsa.PublicKey), d384[:], sig) {
			t.Fatal("ECDSA signature does not verify")
		}
	})
	t.Run("wrong digest length", func(t *testing.T) {
		_, err := rsaKey.Sign(rand.Reader, d256[:20], crypto.SHA256)
		wantCode(t, err, pkcs11.CodeInvalidArgument)
	})
	t.Run("RSA cannot decrypt without UsageDecrypt", func(t *testing.T) {
		ct, _ := rsa.EncryptPKCS1v15(rand.Reader, rsaPub, []byte("x")) //nolint:staticcheck // the token must refuse it
		_, err := rsaKey.Decrypt(rand.Reader, ct, nil)
		wantCode(t, err, pkcs11.CodeMechanismNotSupported)
	})
	t.Run("EC cannot decrypt", func(t *testing.T) {
		_, err := ecKey.Decrypt(rand.Reader, []byte("x"), nil)
		wantCode(t, err, pkcs11.CodeMechanismNotSupported)
	})
	t.Run("logged out", func(t *testing.T) {
		if err := tok.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		_, err := ecKey.Sign(rand.Reader, d384[:], crypto.SHA384)
		wantCode(t, err, pkcs11.CodeNotLoggedIn)
		if err := tok.Login(ctx, userPIN); err != nil {
			t.Fatal(err)
		}
		if _, err := ecKey.Sign(rand.Reader, d384[:], crypto.SHA384); err != nil {
			t.Fatalf("after logging in again: %v", err)
		}
	})
}

// The agent's CSR step: x509 builds the request, the token signs it, and openssl — not
// this code — checks the signature.
func TestCSRVerifiedByOpenSSL(t *testing.T) {
	_, tok, _ := loggedIn(t, pkcs11.Options{})
	for i, spec := range []string{"rsa-2048", "ec-p256", "ec-p384"} {
		t.Run(spec, func(t *testing.T) {
			key := generate(t, tok, []byte{0x30, byte(i)}, spec, 0)
			tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice@example.org", Organization: []string{"Example"}}}
			der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
			if err != nil {
				t.Fatal(err)
			}
			req, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := req.CheckSignature(); err != nil {
				t.Fatalf("CSR signature: %v", err)
			}
			csr := writeFile(t, "req.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
			out := testenv.Run(t, "openssl", "req", "-in", csr, "-verify", "-noout", "-subject")
			if !strings.Contains(out, "verify OK") || !strings.Contains(out, "alice@example.org") {
				t.Fatalf("openssl req -verify:\n%s", out)
			}
		})
	}
}

func TestImportEscrowedKey(t *testing.T) {
	ctx := context.Background()
	_, tok, label := loggedIn(t, pkcs11.Options{})

	t.Run("rsa decryption key", func(t *testing.T) {
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		id := []byte{0x40}
		key, created, err := tok.ImportKey(ctx, pkcs11.ImportRequest{ID: id, Label: "enc", Key: priv, Usage: pkcs11.UsageDecrypt})
		if err != nil || !created {
			t.Fatalf("import: created %v, %v", created, err)
		}
		if !key.Public().(*rsa.PublicKey).Equal(&priv.PublicKey) {
			t.Fatal("imported key has another public key")
		}
		_, created, err = tok.ImportKey(ctx, pkcs11.ImportRequest{ID: id, Key: priv, Usage: pkcs11.UsageDecrypt})
		if err != nil || created {
			t.Fatalf("second import: created %v, %v", created, err)
		}
		other, _ := rsa.GenerateKey(rand.Reader, 2048)
		_, _, err = tok.ImportKey(ctx, pkcs11.ImportRequest{ID: id, Key: other})
		wantCode(t, err, pkcs11.CodeKeyExists)

		// OAEP with SHA-1 and no label: all SoftHSM 2.6 accepts ("hashAlg must be CKM_SHA_1",
		// "pSourceData must be NULL"); other modules take SHA-2 and labels the same way.
		secret := []byte("session key 0123456789abcdef")
		ct, _ := rsa.EncryptOAEP(sha1.New(), rand.Reader, &priv.PublicKey, secret, nil)
		got, err := key.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA1})
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("OAEP decrypt: %q, %v", got, err)
		}
		ct, _ = rsa.EncryptPKCS1v15(rand.Reader, &priv.PublicKey, secret) //nolint:staticcheck // what tokens decrypt
		got, err = key.Decrypt(rand.Reader, ct, nil)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("PKCS #1 v1.5 decrypt: %q, %v", got, err)
		}
		_, err = key.Sign(rand.Reader, make([]byte, 32), crypto.SHA256)
		wantCode(t, err, pkcs11.CodeMechanismNotSupported)

		// OpenSC: the private key is on the token but cannot be read back.
		out := tool(t, label, "--login", "--pin", userPIN, "--list-objects")
		var priv1 string
		for _, b := range blocksWithID(out, id) {
			if strings.HasPrefix(b, "Private Key Object") {
				priv1 = b
			}
		}
		// (pkcs11-tool cannot export private keys at all, so its Access line is the check.)
		access := ""
		for _, line := range strings.Split(priv1, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Access:"); ok {
				access = v
			}
		}
		if !strings.Contains(access, "sensitive") || strings.Contains(strings.ReplaceAll(access, "never extractable", ""), "extractable") ||
			!strings.Contains(priv1, "decrypt") || strings.Contains(priv1, "sign") {
			t.Errorf("imported private key, want sensitive, not extractable, decrypt only:\n%s", priv1)
		}
		// Made elsewhere, so not local (CKA_LOCAL false), as pkcs11-tool shows it.
		if strings.Contains(access, "local") {
			t.Errorf("imported private key listed as local:\n%s", priv1)
		}
	})

	t.Run("ec signing key", func(t *testing.T) {
		priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		key, created, err := tok.ImportKey(ctx, pkcs11.ImportRequest{ID: []byte{0x41}, Label: "sig", Key: priv})
		if err != nil || !created {
			t.Fatalf("import: created %v, %v", created, err)
		}
		d := sha256.Sum256([]byte("m"))
		sig, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(&priv.PublicKey, d[:], sig) {
			t.Fatal("signature by the imported key does not verify")
		}
	})
}

func TestConcurrentSigning(t *testing.T) {
	_, tok, _ := loggedIn(t, pkcs11.Options{})
	key := generate(t, tok, []byte{0x50}, "ec-p256", 0)
	pub := key.Public().(*ecdsa.PublicKey)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				d := sha256.Sum256([]byte{byte(g), byte(i)})
				sig, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
				if err != nil {
					errs <- err
					return
				}
				if !ecdsa.VerifyASN1(pub, d[:], sig) {
					errs <- pkcs11.ErrKeyNotFound // any error: reported below
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent sign: %v", err)
	}
}

// Keys and certificates OpenSC made are found and read like our own.
func TestObjectsMadeByOpenSC(t *testing.T) {
	ctx := context.Background()
	label, serial := newToken(t)
	tool(t, label, "--login", "--pin", userPIN, "--keypairgen", "--key-type", "rsa:2048", "--id", "01", "--label", "made-by-opensc")
	tool(t, label, "--login", "--pin", userPIN, "--keypairgen", "--key-type", "EC:secp384r1", "--id", "02", "--label", "ec-by-opensc")
	pubFile := filepath.Join(t.TempDir(), "pub.der")
	tool(t, label, "--read-object", "--type", "pubkey", "--id", "01", "-o", pubFile)
	der, err := os.ReadFile(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := newCA(t, caKey).issue(t, "opensc-user", pub)
	tool(t, label, "--login", "--pin", userPIN, "--write-object", writeFile(t, "cert.der", cert.Raw), "--type", "cert", "--id", "01", "--label", "made-by-opensc")

	mod := openModule(t, pkcs11.Options{})
	tok := openToken(t, mod, serial)
	if err := tok.Login(ctx, userPIN); err != nil {
		t.Fatal(err)
	}
	keys, err := tok.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []pkcs11.KeyInfo{
		{ID: pkcs11.ID{1}, Label: "made-by-opensc", Spec: &pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 2048}, Private: true, Public: true},
		{ID: pkcs11.ID{2}, Label: "ec-by-opensc", Spec: &pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-384"}, Private: true, Public: true},
	}
	if len(keys) != len(want) {
		t.Fatalf("keys %+v", keys)
	}
	for i := range want {
		if !bytes.Equal(keys[i].ID, want[i].ID) || keys[i].Label != want[i].Label || *keys[i].Spec != *want[i].Spec ||
			!keys[i].Private || !keys[i].Public {
			t.Errorf("key %d: %+v, want %+v", i, keys[i], want[i])
		}
	}
	key, err := tok.Key(ctx, []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(*rsa.PublicKey).Equal(pub) {
		t.Error("Key.Public differs from the public key OpenSC exported")
	}
	c, err := tok.Certificate(ctx, []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.DER, cert.Raw) || c.Subject != "CN=opensc-user" || c.Label != "made-by-opensc" || c.ID.String() != "01" {
		t.Errorf("certificate %+v", c)
	}
	if err := tok.VerifyKeyAndCertificate(ctx, []byte{1}); err != nil {
		t.Fatalf("key and certificate made by OpenSC: %v", err)
	}
	d := sha256.Sum256([]byte("signed by an OpenSC key"))
	sig, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil || rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA256, d[:], sig) != nil {
		t.Fatalf("signature with the OpenSC key: %v", err)
	}
}
