// Package seal encrypts small secrets (PINs, escrowed private keys) to a recipient's public key in
// the wire form protocol.Sealed, and opens them.
//
// Scheme (protocol.SealAlgorithm): the sender makes a one-time X25519 key
// pair and agrees a shared secret with the recipient's static X25519 key;
// HKDF-SHA256 turns it into an AES-256 key, salted with both public keys so
// the key is bound to this exchange; AES-256-GCM encrypts the secret. The
// associated data binds the ciphertext to the job, attempt and purpose
// (Binding), so a sealed PIN lifted from one message does not open in
// another job, another attempt or another field.
//
// The message ID is deliberately not bound: sealed PINs outlive their
// message (the coordinator keeps the result's PINs at rest, keyed by job and
// attempt), and a job ID is unique across the fleet, so job, attempt and
// purpose already name exactly one place a secret belongs.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tokenfleet/tokenfleet/protocol"
)

var (
	// ErrWrongKey: the value was sealed to another key than the one given
	// (for instance before the agent re-enrolled with a new key).
	ErrWrongKey = errors.New("sealed to another key")
	// ErrOpen: decryption failed. On purpose it does not say why: the
	// ciphertext was altered, or the binding (job, attempt, purpose)
	// differs from the one it was sealed with.
	ErrOpen = errors.New("cannot open: altered, or sealed for another job, attempt or purpose")
)

// Binding is where a sealed secret belongs. Both sides must give the same
// one: the sender when sealing, the receiver when opening. A job's secrets
// name the job, attempt and purpose; an agent's broker credentials name the
// agent (PurposeBrokerCredentials, with no job).
type Binding struct {
	JobID   string
	Attempt uint32
	Purpose protocol.SealPurpose
	AgentID string // PurposeBrokerCredentials only
}

// Validate checks every part is set.
func (b Binding) Validate() error {
	if b.Purpose == protocol.PurposeBrokerCredentials {
		if b.JobID != "" || b.Attempt != 0 {
			return protocol.NewError(protocol.CodeBadRequest, "binding: broker credentials belong to an agent, not to job %s attempt %d", b.JobID, b.Attempt)
		}
		if err := protocol.ValidateAgentID(b.AgentID); err != nil {
			return fmt.Errorf("binding: %w", err)
		}
		return nil
	}
	if b.AgentID != "" {
		return protocol.NewError(protocol.CodeBadRequest, "binding: purpose %q belongs to a job, not to agent %s", b.Purpose, b.AgentID)
	}
	if err := (protocol.JobRef{JobID: b.JobID, Attempt: b.Attempt}).Validate(); err != nil {
		return fmt.Errorf("binding: %w", err)
	}
	if !b.Purpose.Valid() {
		return protocol.NewError(protocol.CodeBadRequest, "binding: purpose %q unknown; want %q, %q, %q, %q or %q",
			b.Purpose, protocol.PurposeUserPIN, protocol.PurposeSOPIN, protocol.PurposePrivateKey, protocol.PurposeAgentResume, protocol.PurposeBrokerCredentials)
	}
	return nil
}

// associatedData encodes the binding unambiguously: every variable part is
// length-prefixed, so no two bindings share an encoding. An agent's
// credentials take the job's place as "agent:ID"; the purpose, also bound,
// keeps the two kinds apart.
func (b Binding) associatedData(keyID string) []byte {
	subject := b.JobID
	if b.Purpose == protocol.PurposeBrokerCredentials {
		subject = "agent:" + b.AgentID
	}
	var ad []byte
	for _, s := range []string{"tokenfleet seal v1", protocol.SealAlgorithm, keyID, subject, string(b.Purpose)} {
		ad = binary.BigEndian.AppendUint16(ad, uint16(len(s)))
		ad = append(ad, s...)
	}
	return binary.BigEndian.AppendUint32(ad, b.Attempt)
}

// GenerateKey makes an X25519 key pair for receiving sealed secrets.
func GenerateKey() (*ecdh.PrivateKey, error) {
	return ecdh.X25519().GenerateKey(rand.Reader)
}

// MarshalPublicKey returns the PKIX DER form of pub, as sent in a hello's
// seal_key or a dispatch's result_key.
func MarshalPublicKey(pub *ecdh.PublicKey) ([]byte, error) {
	if err := checkX25519(pub); err != nil {
		return nil, err
	}
	return x509.MarshalPKIXPublicKey(pub)
}

// ParsePublicKey parses a PKIX DER X25519 public key.
func ParsePublicKey(der []byte) (*ecdh.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("seal: parse public key: %w", err)
	}
	pub, ok := k.(*ecdh.PublicKey)
	if !ok {
		return nil, fmt.Errorf("seal: public key is a %T, want X25519", k)
	}
	if err := checkX25519(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// MarshalPrivateKey returns the PKCS#8 DER form of key, for storing it.
func MarshalPrivateKey(key *ecdh.PrivateKey) ([]byte, error) {
	if key == nil {
		return nil, errors.New("seal: private key is nil")
	}
	if err := checkX25519(key.PublicKey()); err != nil {
		return nil, err
	}
	return x509.MarshalPKCS8PrivateKey(key)
}

// ParsePrivateKey parses a PKCS#8 DER X25519 private key.
func ParsePrivateKey(der []byte) (*ecdh.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("seal: parse private key: %w", err)
	}
	key, ok := k.(*ecdh.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("seal: private key is a %T, want X25519", k)
	}
	if err := checkX25519(key.PublicKey()); err != nil {
		return nil, err
	}
	return key, nil
}

// KeyID returns protocol.KeyFingerprint of pub's PKIX form: the "kid" of
// values sealed to it.
func KeyID(pub *ecdh.PublicKey) (string, error) {
	der, err := MarshalPublicKey(pub)
	if err != nil {
		return "", err
	}
	return protocol.KeyFingerprint(der), nil
}

func checkX25519(pub *ecdh.PublicKey) error {
	if pub == nil {
		return errors.New("seal: public key is nil")
	}
	if pub.Curve() != ecdh.X25519() {
		return fmt.Errorf("seal: key is on %v, want X25519", pub.Curve())
	}
	return nil
}

// Seal encrypts secret (1 to b.Purpose.MaxPlaintext() bytes: a private key
// may be longer than a PIN) to the recipient's key, bound to b.
func Seal(to *ecdh.PublicKey, secret []byte, b Binding) (*protocol.Sealed, error) {
	kid, err := KeyID(to)
	if err != nil {
		return nil, err
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	if limit := b.Purpose.MaxPlaintext(); len(secret) == 0 || len(secret) > limit {
		return nil, fmt.Errorf("seal: %s secret is %d bytes, want 1 to %d", b.Purpose, len(secret), limit)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("seal: ephemeral key: %w", err)
	}
	shared, err := eph.ECDH(to)
	if err != nil {
		return nil, fmt.Errorf("seal: key agreement: %w", err)
	}
	aead, err := newAEAD(shared, eph.PublicKey().Bytes(), to.Bytes())
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, protocol.SealNonceSize)
	_, _ = rand.Read(nonce) // never fails: crypto/rand crashes the program instead
	return &protocol.Sealed{
		Algorithm:    protocol.SealAlgorithm,
		KeyID:        kid,
		EphemeralKey: eph.PublicKey().Bytes(),
		Nonce:        nonce,
		Ciphertext:   aead.Seal(nil, nonce, secret, b.associatedData(kid)),
	}, nil
}

// Open decrypts s with the recipient's private key, checking it was sealed
// for b. Failures are *protocol.Error with code unseal_failed, wrapping
// ErrWrongKey or ErrOpen when those apply.
func Open(key *ecdh.PrivateKey, s *protocol.Sealed, b Binding) ([]byte, error) {
	if key == nil {
		return nil, errors.New("seal: private key is nil")
	}
	if s == nil {
		return nil, protocol.NewError(protocol.CodeUnsealFailed, "sealed value is nil")
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	if err := s.ValidateFor(b.Purpose); err != nil {
		return nil, protocol.NewError(protocol.CodeUnsealFailed, "%w", err)
	}
	kid, err := KeyID(key.PublicKey())
	if err != nil {
		return nil, err
	}
	if s.KeyID != kid {
		return nil, protocol.NewError(protocol.CodeUnsealFailed, "%w: sealed to key %s, this key is %s", ErrWrongKey, s.KeyID, kid)
	}
	eph, err := ecdh.X25519().NewPublicKey(s.EphemeralKey)
	if err != nil {
		return nil, protocol.NewError(protocol.CodeUnsealFailed, "%w", ErrOpen)
	}
	// ECDH refuses low-order points (an all-zero shared secret): treat that
	// like any other forgery.
	shared, err := key.ECDH(eph)
	if err != nil {
		return nil, protocol.NewError(protocol.CodeUnsealFailed, "%w", ErrOpen)
	}
	aead, err := newAEAD(shared, s.EphemeralKey, key.PublicKey().Bytes())
	if err != nil {
		return nil, err
	}
	secret, err := aead.Open(nil, s.Nonce, s.Ciphertext, b.associatedData(kid))
	if err != nil {
		return nil, protocol.NewError(protocol.CodeUnsealFailed, "%w", ErrOpen)
	}
	return secret, nil
}

func newAEAD(shared, ephemeral, recipient []byte) (cipher.AEAD, error) {
	salt := append(append([]byte(nil), ephemeral...), recipient...)
	k, err := hkdfKey(shared, salt)
	if err != nil {
		return nil, fmt.Errorf("seal: derive key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return cipher.NewGCM(block)
}

func hkdfKey(shared, salt []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, shared, salt, "tokenfleet seal v1 "+protocol.SealAlgorithm, 32)
}
