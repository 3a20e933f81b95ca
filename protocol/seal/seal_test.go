package seal

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/protocol"
)

var binding = Binding{JobID: "0193a5c4-7d2e-7b1f-9c3a-2f4e5d6c7b8a", Attempt: 2, Purpose: protocol.PurposeUserPIN}

func newKey(t *testing.T) *ecdh.PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRoundTrip(t *testing.T) {
	key := newKey(t)
	for _, secret := range [][]byte{[]byte("1"), []byte("482913"), bytes.Repeat([]byte("9"), protocol.MaxSealedPlaintext)} {
		s, err := Seal(key.PublicKey(), secret, binding)
		if err != nil {
			t.Fatalf("Seal(%d bytes): %v", len(secret), err)
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("sealed value fails protocol validation: %v", err)
		}
		if bytes.Contains(s.Ciphertext, secret) && len(secret) > 1 {
			t.Fatal("ciphertext contains the secret")
		}
		// Through JSON, as on the wire.
		data, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back protocol.Sealed
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		got, err := Open(key, &back, binding)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatalf("Open = %q, want %q", got, secret)
		}
	}
}

func TestSealIsRandomised(t *testing.T) {
	key := newKey(t)
	a, err := Seal(key.PublicKey(), []byte("1234"), binding)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Seal(key.PublicKey(), []byte("1234"), binding)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.EphemeralKey, b.EphemeralKey) || bytes.Equal(a.Ciphertext, b.Ciphertext) {
		t.Error("two seals of one secret share an ephemeral key or ciphertext")
	}
}

func TestWrongKeyFails(t *testing.T) {
	key, other := newKey(t), newKey(t)
	s, err := Seal(key.PublicKey(), []byte("1234"), binding)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(other, s, binding)
	if !errors.Is(err, ErrWrongKey) || protocol.CodeOf(err) != protocol.CodeUnsealFailed {
		t.Fatalf("Open with another key: %v, want ErrWrongKey with unseal_failed", err)
	}
	kid, _ := KeyID(key.PublicKey())
	if !strings.Contains(err.Error(), kid) {
		t.Errorf("error %q does not name the key it was sealed to", err)
	}
	// A forged kid gets past the fingerprint check but not the decryption:
	// the recipient's key is part of the derivation.
	otherKID, _ := KeyID(other.PublicKey())
	forged := *s
	forged.KeyID = otherKID
	if _, err := Open(other, &forged, binding); !errors.Is(err, ErrOpen) {
		t.Fatalf("Open with a forged kid: %v, want ErrOpen", err)
	}
}

func TestTamperingFails(t *testing.T) {
	key := newKey(t)
	s, err := Seal(key.PublicKey(), []byte("482913"), binding)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	tests := []struct {
		name   string
		modify func(*protocol.Sealed)
	}{
		{"first ciphertext byte", func(s *protocol.Sealed) { s.Ciphertext = flip(s.Ciphertext, 0) }},
		{"last tag byte", func(s *protocol.Sealed) { s.Ciphertext = flip(s.Ciphertext, len(s.Ciphertext)-1) }},
		{"truncated", func(s *protocol.Sealed) { s.Ciphertext = s.Ciphertext[:len(s.Ciphertext)-1] }},
		{"extended", func(s *protocol.Sealed) { s.Ciphertext = append(bytes.Clone(s.Ciphertext), 0) }},
		{"nonce", func(s *protocol.Sealed) { s.Nonce = flip(s.Nonce, 5) }},
		{"ephemeral key", func(s *protocol.Sealed) { s.EphemeralKey = flip(s.EphemeralKey, 3) }},
		{"ephemeral key of low order", func(s *protocol.Sealed) { s.EphemeralKey = make([]byte, 32) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := *s
			tc.modify(&c)
			got, err := Open(key, &c, binding)
			if !errors.Is(err, ErrOpen) || protocol.CodeOf(err) != protocol.CodeUnsealFailed {
				t.Fatalf("Open = %q, %v; want ErrOpen with unseal_failed", got, err)
			}
		})
	}
}

func TestWrongBindingFails(t *testing.T) {
	key := newKey(t)
	s, err := Seal(key.PublicKey(), []byte("482913"), binding)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		b    Binding
	}{
		{"another job", Binding{JobID: "0193a5c4-7d2e-7b1f-9c3a-2f4e5d6c7b8b", Attempt: binding.Attempt, Purpose: binding.Purpose}},
		{"another attempt", Binding{JobID: binding.JobID, Attempt: binding.Attempt + 1, Purpose: binding.Purpose}},
		{"another purpose", Binding{JobID: binding.JobID, Attempt: binding.Attempt, Purpose: protocol.PurposeSOPIN}},
		{"agent resume purpose", Binding{JobID: binding.JobID, Attempt: binding.Attempt, Purpose: protocol.PurposeAgentResume}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open(key, s, tc.b); !errors.Is(err, ErrOpen) {
				t.Fatalf("Open = %v, want ErrOpen", err)
			}
		})
	}
}

func TestBadInputs(t *testing.T) {
	key := newKey(t)
	p256, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Seal(key.PublicKey(), []byte("1234"), binding)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"seal to nil", func() error { _, err := Seal(nil, []byte("1"), binding); return err }, "public key is nil"},
		{"seal to P-256", func() error { _, err := Seal(p256.PublicKey(), []byte("1"), binding); return err }, "want X25519"},
		{"empty secret", func() error { _, err := Seal(key.PublicKey(), nil, binding); return err }, "secret is 0 bytes, want 1 to 256"},
		{"long secret", func() error {
			_, err := Seal(key.PublicKey(), make([]byte, protocol.MaxSealedPlaintext+1), binding)
			return err
		}, "secret is 257 bytes"},
		{"no job", func() error {
			_, err := Seal(key.PublicKey(), []byte("1"), Binding{Attempt: 1, Purpose: protocol.PurposeSOPIN})
			return err
		}, "binding: bad_request: job_id: required"},
		{"no attempt", func() error {
			_, err := Seal(key.PublicKey(), []byte("1"), Binding{JobID: "j", Purpose: protocol.PurposeSOPIN})
			return err
		}, "attempt: required"},
		{"no purpose", func() error {
			_, err := Seal(key.PublicKey(), []byte("1"), Binding{JobID: "j", Attempt: 1})
			return err
		}, `purpose "" unknown`},
		{"open with nil key", func() error { _, err := Open(nil, s, binding); return err }, "private key is nil"},
		{"open nil value", func() error { _, err := Open(key, nil, binding); return err }, "sealed value is nil"},
		{"open unknown algorithm", func() error {
			c := *s
			c.Algorithm = "x448"
			_, err := Open(key, &c, binding)
			return err
		}, `unseal_failed: bad_request: alg: unknown algorithm "x448"`},
		{"open with bad binding", func() error { _, err := Open(key, s, Binding{}); return err }, "job_id: required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestKeyEncodings(t *testing.T) {
	key := newKey(t)
	pubDER, err := MarshalPublicKey(key.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pubDER)
	if err != nil || !pub.Equal(key.PublicKey()) {
		t.Fatalf("ParsePublicKey: %v", err)
	}
	kid, err := KeyID(pub)
	if err != nil || kid != protocol.KeyFingerprint(pubDER) {
		t.Fatalf("KeyID = %q, %v", kid, err)
	}
	// The key an agent announces passes the hello's validation.
	hello := protocol.Hello{
		InstanceID: protocol.NewMessageID(), Hostname: "ws", OS: "linux", Arch: "amd64", AgentVersion: "1",
		Protocol: protocol.VersionRange{Min: 1, Max: 1}, SealKey: pubDER,
	}
	if err := hello.Validate(); err != nil {
		t.Fatalf("hello with a seal package key: %v", err)
	}
	privDER, err := MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKey(privDER)
	if err != nil || !priv.Equal(key) {
		t.Fatalf("ParsePrivateKey: %v", err)
	}

	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPub, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	ecPriv, _ := x509.MarshalPKCS8PrivateKey(ec)
	p256, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256Pub, _ := x509.MarshalPKIXPublicKey(p256.PublicKey())
	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"ECDSA public key", func() error { _, err := ParsePublicKey(ecPub); return err }, "public key is a *ecdsa.PublicKey, want X25519"},
		{"ECDH P-256 public key", func() error { _, err := ParsePublicKey(p256Pub); return err }, "want X25519"},
		{"garbage public key", func() error { _, err := ParsePublicKey([]byte{1, 2}); return err }, "parse public key"},
		{"ECDSA private key", func() error { _, err := ParsePrivateKey(ecPriv); return err }, "private key is a *ecdsa.PrivateKey, want X25519"},
		{"garbage private key", func() error { _, err := ParsePrivateKey(nil); return err }, "parse private key"},
		{"marshal nil private key", func() error { _, err := MarshalPrivateKey(nil); return err }, "private key is nil"},
		{"marshal P-256 private key", func() error { _, err := MarshalPrivateKey(p256); return err }, "want X25519"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// The associated data must not let two bindings collide, or a sealed value
// would open in a place it was not sealed for.
func TestAssociatedDataIsInjective(t *testing.T) {
	a := Binding{JobID: "ab", Attempt: 1, Purpose: protocol.PurposeUserPIN}.associatedData("k")
	b := Binding{JobID: "a", Attempt: 1, Purpose: protocol.PurposeUserPIN}.associatedData("kb")
	c := Binding{JobID: "ab", Attempt: 256, Purpose: protocol.PurposeUserPIN}.associatedData("k")
	if bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Error("distinct bindings share associated data")
	}
}

// An agent's broker credentials are bound to the agent: they open for that agent only,
// never as a job's secret, and a binding mixing the two kinds is refused.
func TestBrokerCredentialsBoundToTheAgent(t *testing.T) {
	key := newKey(t)
	b := Binding{Purpose: protocol.PurposeBrokerCredentials, AgentID: "ws-0042"}
	s, err := Seal(key.PublicKey(), []byte(`{"user":"agent-ws-0042","password":"x"}`), b)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Open(key, s, b); err != nil || !strings.Contains(string(got), "agent-ws-0042") {
		t.Fatalf("Open = %q, %v", got, err)
	}
	for _, other := range []Binding{
		{Purpose: protocol.PurposeBrokerCredentials, AgentID: "ws-0043"},
		{Purpose: protocol.PurposeBrokerCredentials, AgentID: "alice@ws-0042"},
	} {
		if _, err := Open(key, s, other); !errors.Is(err, ErrOpen) {
			t.Fatalf("opened for %s: %v", other.AgentID, err)
		}
	}
	for _, bad := range []Binding{
		{Purpose: protocol.PurposeBrokerCredentials},
		{Purpose: protocol.PurposeBrokerCredentials, AgentID: "ws-0042", JobID: binding.JobID, Attempt: 1},
		{Purpose: protocol.PurposeBrokerCredentials, AgentID: "WS 42"},
		{JobID: binding.JobID, Attempt: 1, Purpose: protocol.PurposeUserPIN, AgentID: "ws-0042"},
	} {
		if _, err := Seal(key.PublicKey(), []byte("x"), bad); err == nil {
			t.Fatalf("sealed with binding %+v", bad)
		}
	}
}

// A private key is sealed like a PIN, with its own purpose and its own,
// larger bound; the PIN purposes keep theirs, in Seal and in Open alike.
func TestPrivateKeyPurpose(t *testing.T) {
	key := newKey(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	keyBinding := Binding{JobID: binding.JobID, Attempt: binding.Attempt, Purpose: protocol.PurposePrivateKey}
	for _, secret := range [][]byte{pkcs8, bytes.Repeat([]byte{0x30}, protocol.MaxSealedKey)} {
		s, err := Seal(key.PublicKey(), secret, keyBinding)
		if err != nil {
			t.Fatalf("Seal(%d bytes): %v", len(secret), err)
		}
		if err := s.ValidateFor(protocol.PurposePrivateKey); err != nil {
			t.Fatalf("sealed key fails protocol validation: %v", err)
		}
		got, err := Open(key, s, keyBinding)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("Open = %d bytes, %v; want the %d sealed", len(got), err, len(secret))
		}
		// Lifted into a PIN field, it does not open: the purpose differs
		// (and a long one is too long for a PIN).
		if _, err := Open(key, s, binding); protocol.CodeOf(err) != protocol.CodeUnsealFailed {
			t.Errorf("sealed key opened as a user PIN: %v", err)
		}
	}
	if _, err := Seal(key.PublicKey(), make([]byte, protocol.MaxSealedKey+1), keyBinding); err == nil ||
		!strings.Contains(err.Error(), "private_key secret is 8193 bytes, want 1 to 8192") {
		t.Errorf("oversized key sealed: %v", err)
	}
	if _, err := Seal(key.PublicKey(), make([]byte, protocol.MaxSealedPlaintext+1), binding); err == nil ||
		!strings.Contains(err.Error(), "user_pin secret is") {
		t.Errorf("a key-sized user PIN sealed: %v", err)
	}
}
