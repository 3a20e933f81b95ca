// Package escrow archives the private half of a server-generated encryption key so that it
// can be recovered when the holder's token is lost, without the coordinator being able to
// read the archive on its own.
//
// Scheme (Version 1): a fresh 256-bit content key encrypts the private key (PKCS#8 DER)
// with AES-256-GCM. The content key is then wrapped once for every recovery key of the
// organisation:
//   - EC recovery keys (P-256, P-384, X25519): a one-time key pair on the same curve, ECDH
//     with the recovery key, HKDF-SHA256 salted with both public keys, AES-256-GCM;
//   - RSA recovery keys: RSA-OAEP with SHA-256.
//
// The associated data of every AES-GCM operation is the archive's header (version, the
// escrowed public key, the certificate, the recovery key ids), so a wrapped key or a
// ciphertext moved to another archive, or a header edited, does not open. Only public keys
// are needed to seal; opening needs one recovery private key, which the coordinator does
// not hold.
package escrow

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Version is the archive format this package writes and reads.
const Version = 1

// Wrapping algorithms of a Recipient.
const (
	AlgECDH   = "ECDH-HKDF-SHA256-A256GCM"
	AlgRSAOAE = "RSA-OAEP-SHA256"
)

// contentAlg names the encryption of the private key itself.
const contentAlg = "A256GCM"

var (
	// ErrNotRecipient: the archive was not sealed to the recovery key given.
	ErrNotRecipient = errors.New("escrow: archive is not sealed to this recovery key")
	// ErrOpen: decryption failed. It does not say why on purpose: the archive was altered,
	// or pieces of two archives were put together.
	ErrOpen = errors.New("escrow: cannot open the archive: it was altered")
	// ErrMismatch: the private key does not belong to the public key or certificate.
	ErrMismatch = errors.New("escrow: private key does not match the public key")
)

// Recipient is the content key wrapped for one recovery key.
type Recipient struct {
	// KeyID is protocol.KeyFingerprint of the recovery key's PKIX public key.
	KeyID     string `json:"kid"`
	Algorithm string `json:"alg"`
	// EphemeralKey is the one-time public key (ECDH only), in the curve's encoding.
	EphemeralKey []byte `json:"epk,omitempty"`
	Nonce        []byte `json:"nonce,omitempty"` // ECDH only
	WrappedKey   []byte `json:"wrapped_key"`
}

// Archive is one escrowed private key. It is stored as its JSON form (Marshal).
type Archive struct {
	Version int `json:"version"`
	// PublicKey is the escrowed key's public half, PKIX DER.
	PublicKey []byte `json:"public_key"`
	// Certificate is the DER certificate issued for the key, when there is one yet (the
	// key is archived before the certificate is issued, and the archive is resealed with
	// it).
	Certificate []byte      `json:"certificate,omitempty"`
	Recipients  []Recipient `json:"recipients"`
	Algorithm   string      `json:"alg"`
	Nonce       []byte      `json:"nonce"`
	Ciphertext  []byte      `json:"ciphertext"`
}

// KeyID is the fingerprint of the escrowed public key.
func (a *Archive) KeyID() string { return protocol.KeyFingerprint(a.PublicKey) }

// RecoveryKeyIDs lists the recovery keys the archive is sealed to.
func (a *Archive) RecoveryKeyIDs() []string {
	ids := make([]string, len(a.Recipients))
	for i, r := range a.Recipients {
		ids[i] = r.KeyID
	}
	return ids
}

// header is what every AES-GCM operation of the archive authenticates.
type header struct {
	Version     int      `json:"version"`
	PublicKey   []byte   `json:"public_key"`
	Certificate []byte   `json:"certificate,omitempty"`
	Recipients  []string `json:"recipients"`
	Algorithm   string   `json:"alg"`
}

func (a *Archive) associatedData() []byte {
	b, _ := json.Marshal(header{a.Version, a.PublicKey, a.Certificate, a.RecoveryKeyIDs(), a.Algorithm}) // plain data: cannot fail
	return append([]byte("tokenfleet escrow v1\x00"), b...)
}

// RecoveryKeyID returns the id of a recovery public key (an *rsa.PublicKey,
// *ecdsa.PublicKey or *ecdh.PublicKey), as recipients name it.
func RecoveryKeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("escrow: recovery key: %w", err)
	}
	return protocol.KeyFingerprint(der), nil
}

// Seal archives priv (an *rsa.PrivateKey or *ecdsa.PrivateKey) for every recovery key in
// to. cert, when not nil, must be the certificate of priv's public key.
func Seal(priv crypto.Signer, cert *x509.Certificate, to []crypto.PublicKey) (*Archive, error) {
	if priv == nil {
		return nil, errors.New("escrow: private key is nil")
	}
	if len(to) == 0 {
		return nil, errors.New("escrow: no recovery key to seal to: add a recovery certificate first (tokenfleetctl recovery-cert add)")
	}
	pubDER, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("escrow: public key: %w", err)
	}
	if err := checkPair(priv, cert); err != nil {
		return nil, err
	}
	secret, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("escrow: private key: %w", err)
	}
	a := &Archive{Version: Version, PublicKey: pubDER, Algorithm: contentAlg}
	if cert != nil {
		a.Certificate = cert.Raw
	}
	cek := make([]byte, 32)
	_, _ = rand.Read(cek) // never fails: crypto/rand crashes the program instead
	seen := map[string]bool{}
	for i, pub := range to {
		kid, err := RecoveryKeyID(pub)
		if err != nil {
			return nil, fmt.Errorf("recovery key %d: %w", i+1, err)
		}
		if seen[kid] {
			return nil, fmt.Errorf("escrow: recovery key %s given twice", kid)
		}
		seen[kid] = true
		a.Recipients = append(a.Recipients, Recipient{KeyID: kid})
	}
	ad := a.associatedData()
	for i, pub := range to {
		if err := wrap(&a.Recipients[i], pub, cek, ad); err != nil {
			return nil, fmt.Errorf("recovery key %s: %w", a.Recipients[i].KeyID, err)
		}
	}
	a.Nonce = make([]byte, 12)
	_, _ = rand.Read(a.Nonce)
	aead, err := newGCM(cek)
	if err != nil {
		return nil, err
	}
	a.Ciphertext = aead.Seal(nil, a.Nonce, secret, ad)
	return a, nil
}

// Open decrypts the archive with one recovery private key (an *rsa.PrivateKey,
// *ecdsa.PrivateKey or *ecdh.PrivateKey) and returns the escrowed private key, checked
// against the archive's public key and certificate.
func Open(a *Archive, recovery crypto.PrivateKey) (crypto.Signer, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	pub, err := publicOf(recovery)
	if err != nil {
		return nil, err
	}
	kid, err := RecoveryKeyID(pub)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(a.Recipients, func(r Recipient) bool { return r.KeyID == kid })
	if i < 0 {
		return nil, fmt.Errorf("%w: it is sealed to %v, this key is %s", ErrNotRecipient, a.RecoveryKeyIDs(), kid)
	}
	ad := a.associatedData()
	cek, err := unwrap(a.Recipients[i], recovery, ad)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(cek)
	if err != nil {
		return nil, ErrOpen
	}
	secret, err := aead.Open(nil, a.Nonce, a.Ciphertext, ad)
	if err != nil {
		return nil, ErrOpen
	}
	k, err := x509.ParsePKCS8PrivateKey(secret)
	if err != nil {
		return nil, fmt.Errorf("escrow: archived key: %w", err)
	}
	priv, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("escrow: archived key is a %T", k)
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil || !bytes.Equal(der, a.PublicKey) {
		return nil, ErrMismatch
	}
	var cert *x509.Certificate
	if len(a.Certificate) > 0 {
		if cert, err = x509.ParseCertificate(a.Certificate); err != nil {
			return nil, fmt.Errorf("escrow: archived certificate: %w", err)
		}
	}
	if err := checkPair(priv, cert); err != nil {
		return nil, err
	}
	return priv, nil
}

// Validate checks the archive's shape (not its contents, which only Open can check).
func (a *Archive) Validate() error {
	switch {
	case a == nil:
		return errors.New("escrow: archive is nil")
	case a.Version != Version:
		return fmt.Errorf("escrow: archive version %d, this coordinator reads version %d", a.Version, Version)
	case a.Algorithm != contentAlg:
		return fmt.Errorf("escrow: content algorithm %q, want %q", a.Algorithm, contentAlg)
	case len(a.PublicKey) == 0:
		return errors.New("escrow: archive has no public key")
	case len(a.Recipients) == 0:
		return errors.New("escrow: archive is sealed to no recovery key")
	case len(a.Nonce) != 12 || len(a.Ciphertext) == 0:
		return errors.New("escrow: archive has no ciphertext")
	}
	if _, err := x509.ParsePKIXPublicKey(a.PublicKey); err != nil {
		return fmt.Errorf("escrow: archive public key: %w", err)
	}
	return nil
}

// Marshal returns the stored form.
func (a *Archive) Marshal() ([]byte, error) { return json.Marshal(a) }

// Unmarshal reads the stored form and checks its shape.
func Unmarshal(b []byte) (*Archive, error) {
	var a Archive
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("escrow: archive: %w", err)
	}
	return &a, a.Validate()
}

// checkPair checks cert (when not nil) certifies priv's public key.
func checkPair(priv crypto.Signer, cert *x509.Certificate) error {
	if cert == nil {
		return nil
	}
	want, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return fmt.Errorf("escrow: public key: %w", err)
	}
	got, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil || !bytes.Equal(got, want) {
		return fmt.Errorf("%w: the certificate %q is for another key", ErrMismatch, cert.Subject.CommonName)
	}
	return nil
}

func publicOf(k crypto.PrivateKey) (crypto.PublicKey, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return &k.PublicKey, nil
	case *ecdsa.PrivateKey:
		return &k.PublicKey, nil
	case *ecdh.PrivateKey:
		return k.PublicKey(), nil
	default:
		return nil, fmt.Errorf("escrow: recovery key of type %T is not supported (RSA, EC)", k)
	}
}

// ecdhPublic turns an EC recovery public key into its ECDH form.
func ecdhPublic(pub crypto.PublicKey) (*ecdh.PublicKey, error) {
	switch k := pub.(type) {
	case *ecdh.PublicKey:
		return k, nil
	case *ecdsa.PublicKey:
		return k.ECDH()
	}
	return nil, fmt.Errorf("not an EC key: %T", pub)
}

func wrap(r *Recipient, pub crypto.PublicKey, cek, ad []byte) error {
	if k, ok := pub.(*rsa.PublicKey); ok {
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA recovery key of %d bits: at least 2048 are needed", k.N.BitLen())
		}
		w, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, k, cek, ad)
		if err != nil {
			return fmt.Errorf("RSA-OAEP: %w", err)
		}
		r.Algorithm, r.WrappedKey = AlgRSAOAE, w
		return nil
	}
	to, err := ecdhPublic(pub)
	if err != nil {
		return fmt.Errorf("recovery key of type %T is not supported (RSA, EC P-256/P-384, X25519)", pub)
	}
	eph, err := to.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("one-time key: %w", err)
	}
	shared, err := eph.ECDH(to)
	if err != nil {
		return fmt.Errorf("key agreement: %w", err)
	}
	kek, err := deriveKEK(shared, eph.PublicKey().Bytes(), to.Bytes())
	if err != nil {
		return err
	}
	r.Algorithm, r.EphemeralKey = AlgECDH, eph.PublicKey().Bytes()
	r.Nonce = make([]byte, 12)
	_, _ = rand.Read(r.Nonce)
	r.WrappedKey = kek.Seal(nil, r.Nonce, cek, ad)
	return nil
}

func unwrap(r Recipient, key crypto.PrivateKey, ad []byte) ([]byte, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if r.Algorithm != AlgRSAOAE {
			return nil, ErrOpen
		}
		cek, err := rsa.DecryptOAEP(sha256.New(), nil, k, r.WrappedKey, ad)
		if err != nil {
			return nil, ErrOpen
		}
		return cek, nil
	case *ecdsa.PrivateKey, *ecdh.PrivateKey:
		if r.Algorithm != AlgECDH {
			return nil, ErrOpen
		}
		var priv *ecdh.PrivateKey
		if e, ok := k.(*ecdsa.PrivateKey); ok {
			var err error
			if priv, err = e.ECDH(); err != nil {
				return nil, fmt.Errorf("escrow: recovery key: %w", err)
			}
		} else {
			priv = k.(*ecdh.PrivateKey)
		}
		eph, err := priv.Curve().NewPublicKey(r.EphemeralKey)
		if err != nil {
			return nil, ErrOpen
		}
		shared, err := priv.ECDH(eph)
		if err != nil {
			return nil, ErrOpen
		}
		kek, err := deriveKEK(shared, r.EphemeralKey, priv.PublicKey().Bytes())
		if err != nil {
			return nil, err
		}
		cek, err := kek.Open(nil, r.Nonce, r.WrappedKey, ad)
		if err != nil || len(cek) != 32 {
			return nil, ErrOpen
		}
		return cek, nil
	}
	return nil, fmt.Errorf("escrow: recovery key of type %T is not supported (RSA, EC)", key)
}

func deriveKEK(shared, ephemeral, recipient []byte) (cipher.AEAD, error) {
	salt := append(append([]byte(nil), ephemeral...), recipient...)
	k, err := hkdf.Key(sha256.New, shared, salt, "tokenfleet escrow key wrap v1", 32)
	if err != nil {
		return nil, fmt.Errorf("escrow: derive key: %w", err)
	}
	return newGCM(k)
}

func newGCM(k []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("escrow: %w", err)
	}
	return cipher.NewGCM(block)
}
