package dispatch

import (
	"crypto/ecdh"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// ResultKeyFile is the name of the result key's file in the data directory.
const ResultKeyFile = "result-key.pem"

const resultKeyPEMType = "PRIVATE KEY"

// LoadOrCreateResultKey reads the coordinator's result key (an X25519 PKCS#8 key, PEM)
// from path, creating it with mode 0600 when the file does not exist. created reports a
// new key. A key file that others may read is refused: every PIN agents return is sealed
// to it.
func LoadOrCreateResultKey(path string) (key *ecdh.PrivateKey, created bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err := seal.GenerateKey()
		if err != nil {
			return nil, false, err
		}
		der, err := seal.MarshalPrivateKey(key)
		if err != nil {
			return nil, false, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("result key: %w", err)
		}
		werr := pem.Encode(f, &pem.Block{Type: resultKeyPEMType, Bytes: der})
		if werr == nil {
			werr = f.Sync()
		}
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		clear(der)
		if werr != nil {
			_ = os.Remove(path)
			return nil, false, fmt.Errorf("result key %s: %w", path, werr)
		}
		return key, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("result key: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, false, fmt.Errorf("result key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("result key %s is readable by others (mode %s): chmod 600 it", path, st.Mode().Perm())
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != resultKeyPEMType || len(rest) != 0 && len(pemTrim(rest)) != 0 {
		return nil, false, fmt.Errorf("result key %s: want one PEM block of type %q", path, resultKeyPEMType)
	}
	key, err = seal.ParsePrivateKey(block.Bytes)
	clear(block.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("result key %s: %w", path, err)
	}
	return key, false, nil
}

// pemTrim drops white space after the PEM block.
func pemTrim(b []byte) []byte {
	for len(b) > 0 && (b[0] == '\n' || b[0] == '\r' || b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
