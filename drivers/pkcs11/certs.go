//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"
)

// Certificate categories (CKA_CERTIFICATE_CATEGORY).
const (
	categoryTokenUser = 1
	categoryAuthority = 2
)

// WriteCertificate stores the certificate of the key pair with w.ID under the same ID
// (that is how applications pair them), then its chain, each CA under its own ID. The
// certificate must be for that key: CodeCertificateKeyMismatch otherwise, CodeKeyNotFound
// when there is no key. Idempotent: the same certificate already there is left alone
// (AlreadyPresent); another certificate under the ID is replaced once the new one is
// written (Replaced). A replacement cut short is completed by the retry. The result is
// the leaf's. The user must be logged in.
func (t *Token) WriteCertificate(ctx context.Context, w CertificateWrite) (WriteResult, error) {
	const op = "write certificate"
	if err := checkCertificateWrite(op, w); err != nil {
		return 0, err
	}
	var res WriteResult
	err := t.do(ctx, op, func(sh p11.SessionHandle) error {
		if err := t.requireUserLocked(op, sh); err != nil {
			return err
		}
		h, err := t.privateLocked(sh, w.ID)
		if err != nil {
			return err
		}
		if h == 0 {
			return &Error{Op: op, Code: CodeKeyNotFound, Err: fmt.Errorf("no private key with ID %x for the certificate", w.ID)}
		}
		key, err := t.keyLocked(sh, w.ID, h)
		if err != nil {
			return err
		}
		if !publicEqual(key.pub, w.Cert.PublicKey) {
			return &Error{Op: op, Code: CodeCertificateKeyMismatch,
				Err: fmt.Errorf("certificate %q is not for the key with ID %x", w.Cert.Subject, w.ID)}
		}
		if err := t.sweepTornCertsLocked(sh); err != nil {
			return err
		}
		if res, err = t.writeCertLocked(sh, w.ID, w.Label, w.Cert, categoryTokenUser); err != nil {
			return err
		}
		for _, c := range w.Chain {
			if _, err := t.writeCertLocked(sh, c.ID, c.Label, c.Cert, categoryAuthority); err != nil {
				return fmt.Errorf("chain certificate %q: %w", c.Cert.Subject, err)
			}
		}
		return nil
	})
	return res, err
}

func checkCertificateWrite(op string, w CertificateWrite) error {
	if err := checkID(op, w.ID); err != nil {
		return err
	}
	if w.Cert == nil {
		return invalidf(op, "%v", errNilCert)
	}
	ids := map[string]bool{string(w.ID): true}
	for i, c := range w.Chain {
		if c.Cert == nil {
			return invalidf(op, "chain certificate %d: %v", i, errNilCert)
		}
		if err := checkID(op, c.ID); err != nil {
			return invalidf(op, "chain certificate %d: %v", i, err)
		}
		if ids[string(c.ID)] {
			// Under one ID, the second write would replace the first.
			return invalidf(op, "chain certificate %d reuses ID %x", i, c.ID)
		}
		ids[string(c.ID)] = true
	}
	return nil
}

// sweepTornCertsLocked deletes the certificate objects a torn write left: a module that
// writes an object in steps (SoftHSM2 stores the defaults, then the caller's template in a
// transaction) keeps one with no ID, label or value when the process dies or the token
// loses power in between. Nothing can use such an object and other software lists it, so
// the next certificate write takes it away. A certificate with a value is never touched,
// whoever wrote it.
func (t *Token) sweepTornCertsLocked(sh p11.SessionHandle) error {
	hs, err := t.findLocked(sh, classTemplate(p11.CKO_CERTIFICATE, []byte{}))
	if err != nil {
		return err
	}
	var torn []p11.ObjectHandle
	for _, h := range hs {
		a, err := t.attrsLocked(sh, h, p11.CKA_ID, p11.CKA_LABEL, p11.CKA_VALUE)
		if err != nil {
			continue // not readable: not ours to judge
		}
		if len(a[p11.CKA_ID]) == 0 && len(a[p11.CKA_LABEL]) == 0 && len(a[p11.CKA_VALUE]) == 0 {
			torn = append(torn, h)
		}
	}
	if _, err := t.destroyLocked(sh, torn); err != nil {
		return fmt.Errorf("removing a certificate object a torn write left: %w", err)
	}
	return nil
}

// writeCertLocked writes the certificate under the ID, leaving it the only one there.
func (t *Token) writeCertLocked(sh p11.SessionHandle, id []byte, label string, cert *x509.Certificate, category uint) (WriteResult, error) {
	existing, err := t.findLocked(sh, classTemplate(p11.CKO_CERTIFICATE, id))
	if err != nil {
		return 0, err
	}
	var same, others []p11.ObjectHandle
	for _, h := range existing {
		a, err := t.attrsLocked(sh, h, p11.CKA_VALUE)
		if err != nil {
			return 0, err
		}
		if bytes.Equal(a[p11.CKA_VALUE], cert.Raw) && len(same) == 0 {
			same = append(same, h)
		} else {
			others = append(others, h)
		}
	}
	res := AlreadyPresent
	if len(same) == 0 {
		serial, err := asn1.Marshal(cert.SerialNumber)
		if err != nil {
			return 0, fmt.Errorf("certificate serial number: %w", err)
		}
		tmpl := []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_CERTIFICATE),
			p11.NewAttribute(p11.CKA_CERTIFICATE_TYPE, p11.CKC_X_509),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, false),
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_LABEL, label),
			p11.NewAttribute(p11.CKA_SUBJECT, cert.RawSubject),
			p11.NewAttribute(p11.CKA_ISSUER, cert.RawIssuer),
			p11.NewAttribute(p11.CKA_SERIAL_NUMBER, serial),
			p11.NewAttribute(p11.CKA_VALUE, cert.Raw),
			p11.NewAttribute(p11.CKA_CERTIFICATE_CATEGORY, category),
		}
		if _, err := t.mod.b.CreateObject(sh, tmpl); err != nil {
			return 0, err
		}
		res = Written
	}
	// The certificate is on the token: now the ones it replaces can go (also when an
	// earlier write got this far and no further).
	if len(others) > 0 {
		if _, err := t.destroyLocked(sh, others); err != nil {
			return 0, fmt.Errorf("removing the certificates it replaces: %w", err)
		}
		if res == Written {
			res = Replaced
		}
	}
	return res, nil
}

// Certificates lists the X.509 certificates on the token. They are public objects: no
// login is needed.
func (t *Token) Certificates(ctx context.Context) ([]Certificate, error) {
	var out []Certificate
	err := t.do(ctx, "list certificates", func(sh p11.SessionHandle) error {
		var err error
		out, err = t.certificatesLocked(sh, nil)
		return err
	})
	return out, err
}

// Certificate returns the certificate stored under the ID (CodeCertificateNotFound if none).
func (t *Token) Certificate(ctx context.Context, id []byte) (Certificate, error) {
	const op = "read certificate"
	if err := checkID(op, id); err != nil {
		return Certificate{}, err
	}
	var cert Certificate
	err := t.do(ctx, op, func(sh p11.SessionHandle) error {
		var err error
		cert, err = t.certificateLocked(op, sh, id)
		return err
	})
	return cert, err
}

// DeleteCertificate deletes the certificates stored under the ID and says how many went.
func (t *Token) DeleteCertificate(ctx context.Context, id []byte) (int, error) {
	const op = "delete certificate"
	if err := checkID(op, id); err != nil {
		return 0, err
	}
	n := 0
	err := t.do(ctx, op, func(sh p11.SessionHandle) error {
		hs, err := t.findLocked(sh, classTemplate(p11.CKO_CERTIFICATE, id))
		if err != nil {
			return err
		}
		n, err = t.destroyLocked(sh, hs)
		return err
	})
	return n, err
}

func (t *Token) certificateLocked(op string, sh p11.SessionHandle, id []byte) (Certificate, error) {
	certs, err := t.certificatesLocked(sh, id)
	if err != nil {
		return Certificate{}, err
	}
	for _, c := range certs {
		if c.Cert != nil {
			return c, nil
		}
	}
	return Certificate{}, &Error{Op: op, Code: CodeCertificateNotFound, Err: fmt.Errorf("no certificate with ID %x", id)}
}

func (t *Token) certificatesLocked(sh p11.SessionHandle, id []byte) ([]Certificate, error) {
	tmpl := append(classTemplate(p11.CKO_CERTIFICATE, id), p11.NewAttribute(p11.CKA_CERTIFICATE_TYPE, p11.CKC_X_509))
	hs, err := t.findLocked(sh, tmpl)
	if err != nil {
		return nil, err
	}
	out := make([]Certificate, 0, len(hs))
	for _, h := range hs {
		a, err := t.attrsLocked(sh, h, p11.CKA_ID, p11.CKA_LABEL, p11.CKA_VALUE)
		if err != nil {
			return nil, err
		}
		c := Certificate{ID: a[p11.CKA_ID], Label: string(a[p11.CKA_LABEL]), DER: a[p11.CKA_VALUE]}
		if cat, err := t.attrsLocked(sh, h, p11.CKA_CERTIFICATE_CATEGORY); err == nil {
			c.Authority = ulong(cat[p11.CKA_CERTIFICATE_CATEGORY]) == categoryAuthority
		}
		if cert, err := x509.ParseCertificate(c.DER); err == nil { // unparsable ones are listed with Cert nil
			c.Cert = cert
			c.Subject, c.Issuer = cert.Subject.String(), cert.Issuer.String()
			c.Serial = cert.SerialNumber.Text(16)
			c.NotBefore, c.NotAfter = cert.NotBefore, cert.NotAfter
		}
		out = append(out, c)
	}
	return out, nil
}

// VerifyKeyAndCertificate checks what an issue job ends with: the private key and the
// certificate under the ID are both on the token, belong together, and the key works: it
// signs something the certificate's key verifies (or, for a decryption-only key, decrypts
// what the certificate's key encrypted, or for an EC key that may only derive, agrees the
// same ECDH secret with a one-time key as the certificate's key does). The user must be
// logged in.
func (t *Token) VerifyKeyAndCertificate(ctx context.Context, id []byte) error {
	const op = "verify key and certificate"
	if err := checkID(op, id); err != nil {
		return err
	}
	return t.do(ctx, op, func(sh p11.SessionHandle) error {
		if err := t.requireUserLocked(op, sh); err != nil {
			return err
		}
		h, err := t.privateLocked(sh, id)
		if err != nil {
			return err
		}
		if h == 0 {
			return &Error{Op: op, Code: CodeKeyNotFound, Err: fmt.Errorf("no private key with ID %x", id)}
		}
		key, err := t.keyLocked(sh, id, h)
		if err != nil {
			return err
		}
		cert, err := t.certificateLocked(op, sh, id)
		if err != nil {
			return err
		}
		if !publicEqual(key.pub, cert.Cert.PublicKey) {
			return &Error{Op: op, Code: CodeCertificateKeyMismatch,
				Err: fmt.Errorf("certificate %q under ID %x is for another key", cert.Subject, id)}
		}
		usage, err := t.attrsLocked(sh, h, p11.CKA_SIGN)
		if err != nil {
			return err
		}
		if boolAttr(usage[p11.CKA_SIGN]) {
			return t.proveBySignatureLocked(op, sh, key, cert.Cert)
		}
		if _, ok := cert.Cert.PublicKey.(*ecdsa.PublicKey); ok {
			return t.proveByDerivationLocked(op, sh, key, cert.Cert)
		}
		return t.proveByDecryptionLocked(op, sh, key, cert.Cert)
	})
}

// proveBySignatureLocked signs a random challenge and checks it with the certificate.
func (t *Token) proveBySignatureLocked(op string, sh p11.SessionHandle, key *Key, cert *x509.Certificate) error {
	challenge := make([]byte, 32)
	if _, err := rand.Read(challenge); err != nil {
		return err
	}
	digest := sha256.Sum256(challenge)
	sig, err := key.signLocked(op, sh, digest[:], crypto.SHA256)
	if err != nil {
		return err
	}
	if !verifies(cert.PublicKey, digest[:], sig) {
		return &Error{Op: op, Code: CodeCertificateKeyMismatch,
			Err: fmt.Errorf("a signature by key ID %x does not verify with its certificate", key.id)}
	}
	return nil
}

// proveByDecryptionLocked encrypts a random challenge to the certificate's RSA key and
// has the token decrypt it: the check for decryption-only keys.
func (t *Token) proveByDecryptionLocked(op string, sh p11.SessionHandle, key *Key, cert *x509.Certificate) error {
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return &Error{Op: op, Code: CodeMechanismNotSupported,
			Err: fmt.Errorf("key ID %x may not sign, and only RSA keys can be checked by decryption", key.id)}
	}
	challenge := make([]byte, 32)
	if _, err := rand.Read(challenge); err != nil {
		return err
	}
	// PKCS #1 v1.5, not OAEP: every RSA token decrypts it, many do no OAEP; the plaintext
	// is a random challenge of ours, so there is no padding oracle to feed.
	msg, err := rsa.EncryptPKCS1v15(rand.Reader, pub, challenge) //nolint:staticcheck // see above
	if err != nil {
		return err
	}
	plain, err := key.decryptLocked(op, sh, p11.NewMechanism(p11.CKM_RSA_PKCS, nil), msg)
	if err != nil {
		return err
	}
	if !bytes.Equal(plain, challenge) {
		return &Error{Op: op, Code: CodeCertificateKeyMismatch,
			Err: fmt.Errorf("key ID %x does not decrypt what its certificate's key encrypts", key.id)}
	}
	return nil
}

// proveByDerivationLocked checks an EC key that may only derive (an encryption key): the
// token agrees an ECDH secret (CKM_ECDH1_DERIVE, no KDF) between its key and a one-time
// key of ours, into a session object it lets us read; we agree one between the one-time
// key and the certificate's key. Equal secrets prove the token holds the certificate's
// private key. The derived object is destroyed at once.
func (t *Token) proveByDerivationLocked(op string, sh p11.SessionHandle, key *Key, cert *x509.Certificate) error {
	pub := cert.PublicKey.(*ecdsa.PublicKey)
	theirs, err := pub.ECDH()
	if err != nil {
		return &Error{Op: op, Code: CodeMechanismNotSupported, Err: fmt.Errorf("certificate key of key ID %x: %w", key.id, err)}
	}
	eph, err := theirs.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	want, err := eph.ECDH(theirs)
	if err != nil {
		return err
	}
	h, err := key.handleLocked(op, sh)
	if err != nil {
		return err
	}
	mech := p11.NewMechanism(p11.CKM_ECDH1_DERIVE, p11.NewECDH1DeriveParams(p11.CKD_NULL, nil, eph.PublicKey().Bytes()))
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_TOKEN, false),
		p11.NewAttribute(p11.CKA_SENSITIVE, false),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
		p11.NewAttribute(p11.CKA_VALUE_LEN, len(want)),
	}
	secret, err := t.mod.b.DeriveKey(sh, []*p11.Mechanism{mech}, h, tmpl)
	if err != nil {
		return wrapErr(op, err)
	}
	got, err := t.attrsLocked(sh, secret, p11.CKA_VALUE)
	_ = t.mod.b.DestroyObject(sh, secret) // a session object: gone with the session anyway
	if err != nil {
		return wrapErr(op, err)
	}
	if !bytes.Equal(got[p11.CKA_VALUE], want) {
		return &Error{Op: op, Code: CodeCertificateKeyMismatch,
			Err: fmt.Errorf("key ID %x does not agree the ECDH secret its certificate's key does", key.id)}
	}
	return nil
}

func verifies(pub crypto.PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig) == nil
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	}
	return false
}

var errNilCert = errors.New("no certificate")
