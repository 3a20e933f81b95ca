package checkpoint

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
)

// KeyFile is the checkpoint key's file in the data directory.
const KeyFile = "audit-checkpoint-key.pem"

// LoadOrCreateKey reads the checkpoint key (Ed25519, PKCS#8, PEM) from path, creating it
// with mode 0600 when the file does not exist; created reports a new key. A key file
// others may read is refused: whoever holds the key can sign a rewritten log's head.
func LoadOrCreateKey(path string) (key ed25519.PrivateKey, created bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err := create(path)
		return key, err == nil, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("checkpoint key: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, false, fmt.Errorf("checkpoint key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("checkpoint key %s is open to others (mode %s): chmod 600 it", path, st.Mode().Perm())
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != audit.CheckpointPrivateKeyPEM || strings.TrimSpace(string(rest)) != "" {
		return nil, false, fmt.Errorf("checkpoint key %s: want one PEM block of type %q", path, audit.CheckpointPrivateKeyPEM)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	clear(block.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("checkpoint key %s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, false, fmt.Errorf("checkpoint key %s: a %T, not an Ed25519 key", path, k)
	}
	return key, false, nil
}

func create(path string) (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("checkpoint key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("checkpoint key: %w", err)
	}
	defer clear(der)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("checkpoint key: %w", err)
	}
	werr := pem.Encode(f, &pem.Block{Type: audit.CheckpointPrivateKeyPEM, Bytes: der})
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("checkpoint key %s: %w", path, werr)
	}
	return key, nil
}
