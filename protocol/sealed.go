package protocol

// SealAlgorithm names the only sealing scheme of this protocol version:
// an ephemeral X25519 key agreed with the recipient's static X25519 key,
// HKDF-SHA256 to derive an AES-256 key, AES-GCM to encrypt, with the job,
// attempt and purpose as associated data. Package protocol/seal implements
// it.
const SealAlgorithm = "x25519-hkdf-sha256-aes256gcm"

// Sizes of the parts of a sealed value under SealAlgorithm.
const (
	SealEphemeralKeySize = 32 // X25519 public key
	SealNonceSize        = 12 // AES-GCM standard nonce
	SealTagSize          = 16 // AES-GCM tag, appended to the ciphertext
)

// Sealed is a secret (a PIN, or an escrowed private key) encrypted to one
// recipient's public key. It is the only form in which PINs and keys
// travel: the broker, its logs and the outboxes only ever hold this. Byte
// fields are base64 in JSON.
type Sealed struct {
	// Algorithm is SealAlgorithm.
	Algorithm string `json:"alg"`
	// KeyID is KeyFingerprint of the recipient's PKIX public key.
	KeyID string `json:"kid"`
	// EphemeralKey is the sender's one-time X25519 public key (raw).
	EphemeralKey []byte `json:"epk"`
	// Nonce is the AES-GCM nonce.
	Nonce []byte `json:"nonce"`
	// Ciphertext is the encrypted secret followed by the GCM tag.
	Ciphertext []byte `json:"ct"`
}

// Validate checks the shape of a sealed PIN or other short secret
// (MaxSealedPlaintext); ValidateFor checks a value of another purpose.
func (s Sealed) Validate() error { return s.validate(MaxSealedPlaintext) }

// ValidateFor checks the shape of a value sealed for purpose p, against
// that purpose's bound (SealPurpose.MaxPlaintext). Only opening it proves
// it authentic, and that it was sealed for p.
func (s Sealed) ValidateFor(p SealPurpose) error { return s.validate(p.MaxPlaintext()) }

func (s Sealed) validate(maxPlaintext int) error {
	if s.Algorithm == "" {
		return invalid("alg", "required")
	}
	if s.Algorithm != SealAlgorithm {
		return invalid("alg", "unknown algorithm %q; this version seals with %q", s.Algorithm, SealAlgorithm)
	}
	if err := checkHex("kid", s.KeyID, FingerprintSize, true); err != nil {
		return err
	}
	if len(s.KeyID) != 2*FingerprintSize {
		return invalid("kid", "%d hex digits, want %d", len(s.KeyID), 2*FingerprintSize)
	}
	if len(s.EphemeralKey) != SealEphemeralKeySize {
		return invalid("epk", "%d bytes, want %d", len(s.EphemeralKey), SealEphemeralKeySize)
	}
	if len(s.Nonce) != SealNonceSize {
		return invalid("nonce", "%d bytes, want %d", len(s.Nonce), SealNonceSize)
	}
	if n := len(s.Ciphertext) - SealTagSize; n < 1 || n > maxPlaintext {
		return invalid("ct", "%d bytes, want %d to %d (secret of 1 to %d bytes plus the tag)",
			len(s.Ciphertext), SealTagSize+1, SealTagSize+maxPlaintext, maxPlaintext)
	}
	return nil
}

// SealedPINs carries PINs sealed to the receiver: in a dispatch, the current
// PINs the agent needs, sealed to the agent's key; in a result, the PINs the
// agent set, sealed to the coordinator's key for it to keep. Each is sealed
// with its own purpose (PurposeUserPIN, PurposeSOPIN).
type SealedPINs struct {
	UserPIN *Sealed `json:"user_pin,omitempty"`
	SOPIN   *Sealed `json:"so_pin,omitempty"`
}

// Validate checks at least one PIN is present and each is well formed.
func (p SealedPINs) Validate() error {
	if p.UserPIN == nil && p.SOPIN == nil {
		return invalid("", "neither user_pin nor so_pin is set")
	}
	if p.UserPIN != nil {
		if err := p.UserPIN.Validate(); err != nil {
			return within("user_pin", err)
		}
	}
	if p.SOPIN != nil {
		if err := p.SOPIN.Validate(); err != nil {
			return within("so_pin", err)
		}
	}
	return nil
}
