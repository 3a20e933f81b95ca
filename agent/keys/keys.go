// Package keys holds the agent's own sealing key pair: an X25519 key the coordinator seals
// the PINs it sends this agent to (the public half travels in the hello), and that the
// agent seals the secrets of its journal to.
//
// The private key lives in one file in the agent's data directory, PEM-encoded PKCS#8,
// created on first start with mode 0600. A key file that others may read is refused
// rather than used: a PIN sealed to a leaked key is a PIN in clear. Losing the file loses
// nothing but the ability to open what was sealed to it: the agent makes a new key and
// announces it in its next hello; jobs dispatched with the old key fail with unseal_failed
// and are retried by the coordinator.
package keys

import (
	"crypto/ecdh"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// FileName is the key file's name in the data directory.
const FileName = "seal-key.pem"

const pemType = "PRIVATE KEY"

// Pair is the agent's sealing key pair. It is immutable, so safe for concurrent use.
type Pair struct {
	priv   *ecdh.PrivateKey
	pubDER []byte
	kid    string
}

// New wraps an existing private key.
func New(priv *ecdh.PrivateKey) (*Pair, error) {
	pub, err := seal.MarshalPublicKey(priv.PublicKey())
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return &Pair{priv: priv, pubDER: pub, kid: protocol.KeyFingerprint(pub)}, nil
}

// LoadOrCreate returns the key pair stored in dir, creating dir (mode 0700) and the key
// file (mode 0600) when they do not exist yet.
func LoadOrCreate(dir string) (*Pair, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys: data directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	p, err := Load(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return p, err
	}
	if err := create(path); err != nil {
		return nil, err
	}
	return Load(path)
}

// create writes a fresh key to path, atomically: a temporary file is written and synced,
// then linked into place, so a crash leaves either no key file or a whole one, and two
// agents starting at once cannot both believe their key is the one on disk.
func create(path string) error {
	key, err := seal.GenerateKey()
	if err != nil {
		return fmt.Errorf("keys: generate: %w", err)
	}
	der, err := seal.MarshalPrivateKey(key)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".seal-key-*")
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	// CreateTemp makes the file 0600 already; Chmod keeps that true whatever the platform
	// default.
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("keys: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: pemType, Bytes: der}); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("keys: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("keys: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	// Link fails if another process created the key meanwhile: theirs wins, and Load
	// reads it.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		// A file system without hard links: rename, which would replace a key another
		// process just made, so only when there is still none.
		if _, statErr := os.Lstat(path); statErr == nil {
			return nil
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return fmt.Errorf("keys: install %s: %w", path, err)
		}
	}
	return syncDir(filepath.Dir(path))
}

// Load reads the key file at path, refusing one that is not a regular file or that users
// other than its owner may read or write.
func Load(path string) (*Pair, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("keys: %s is not a regular file (%s); refusing to use it", path, st.Mode().Type())
	}
	if err := checkPrivate(path, st); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != pemType {
		return nil, fmt.Errorf("keys: %s holds no %q PEM block", path, pemType)
	}
	if len(rest) != 0 && len(pemTrim(rest)) != 0 {
		return nil, fmt.Errorf("keys: %s has data after its key", path)
	}
	priv, err := seal.ParsePrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("keys: %s: %w", path, err)
	}
	return New(priv)
}

func pemTrim(b []byte) []byte {
	for len(b) > 0 && (b[0] == '\n' || b[0] == '\r' || b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// PublicKey is the PKIX DER public key: a hello's seal_key.
func (p *Pair) PublicKey() []byte { return append([]byte(nil), p.pubDER...) }

// KeyID is the fingerprint sealed values name their recipient by.
func (p *Pair) KeyID() string { return p.kid }

// PrivateKey is the private key, for seal.Open.
func (p *Pair) PrivateKey() *ecdh.PrivateKey { return p.priv }

// Open opens a value sealed to this pair (a PIN of a dispatch, a secret of the journal).
func (p *Pair) Open(s *protocol.Sealed, b seal.Binding) ([]byte, error) {
	return seal.Open(p.priv, s, b)
}

// Seal seals a secret to this pair itself: how the journal keeps what the agent must not
// forget across a restart, and must not keep in clear.
func (p *Pair) Seal(secret []byte, b seal.Binding) (*protocol.Sealed, error) {
	return seal.Seal(p.priv.PublicKey(), secret, b)
}
