//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"

	p11 "github.com/miekg/pkcs11"
)

// Key is a key pair on a token. It is a crypto.Signer (x509.CreateCertificateRequest
// takes it as is) and, for RSA keys, a crypto.Decrypter. The private key never leaves the
// token; the user must be logged in to use it.
type Key struct {
	tok   *Token
	id    []byte
	label string
	spec  KeySpec
	pub   crypto.PublicKey

	// handle of the private key, valid while epoch equals tok.epoch; both guarded by tok.sem.
	handle p11.ObjectHandle
	epoch  uint64
}

var (
	_ crypto.Signer    = (*Key)(nil)
	_ crypto.Decrypter = (*Key)(nil)
)

// ID is the key's CKA_ID.
func (k *Key) ID() []byte { return bytes.Clone(k.id) }

// Label is the private key's CKA_LABEL.
func (k *Key) Label() string { return k.label }

// Spec is the key's type and size.
func (k *Key) Spec() KeySpec { return k.spec }

// Token is the token holding the key.
func (k *Key) Token() *Token { return k.tok }

// Public returns the public key: *rsa.PublicKey or *ecdsa.PublicKey.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// handleLocked returns the private key's handle, finding it again when handles may have
// gone stale, and checking that the key under the ID is still this one.
func (k *Key) handleLocked(op string, sh p11.SessionHandle) (p11.ObjectHandle, error) {
	t := k.tok
	if k.epoch == t.epoch && k.handle != 0 {
		return k.handle, nil
	}
	if err := t.requireUserLocked(op, sh); err != nil {
		return 0, err
	}
	h, err := t.privateLocked(sh, k.id)
	if err != nil {
		return 0, err
	}
	if h == 0 {
		return 0, &Error{Op: op, Code: CodeKeyNotFound, Err: fmt.Errorf("the private key with ID %x is gone", k.id)}
	}
	now, err := t.keyLocked(sh, k.id, h)
	if err != nil {
		return 0, err
	}
	if !publicEqual(now.pub, k.pub) {
		return 0, &Error{Op: op, Code: CodeKeyNotFound, Err: fmt.Errorf("key ID %x now holds another key", k.id)}
	}
	k.handle, k.epoch = h, t.epoch
	return h, nil
}

// useLocked runs fn with the private key's handle. A cached handle that turns out stale
// (something this Token did not see: another session logged out, another process changed
// the token) is found again once.
func (k *Key) useLocked(op string, sh p11.SessionHandle, fn func(h p11.ObjectHandle) error) error {
	cached := k.epoch == k.tok.epoch && k.handle != 0
	h, err := k.handleLocked(op, sh)
	if err != nil {
		return err
	}
	err = fn(h)
	if cached && err != nil && wrapErr(op, err).Code == CodeKeyNotFound {
		k.handle = 0
		if h, err = k.handleLocked(op, sh); err != nil {
			return err
		}
		err = fn(h)
	}
	return err
}

// Sign signs a digest, as crypto.Signer says: RSA PKCS #1 v1.5, RSA-PSS when opts is an
// *rsa.PSSOptions, ECDSA (ASN.1 DER signature) for EC keys. rand is not used: the token
// has its own.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign that stops waiting for the token when ctx ends.
func (k *Key) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	const op = "sign"
	var sig []byte
	err := k.tok.do(ctx, op, func(sh p11.SessionHandle) error {
		var err error
		sig, err = k.signLocked(op, sh, digest, opts)
		return err
	})
	return sig, err
}

func (k *Key) signLocked(op string, sh p11.SessionHandle, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil {
		opts = crypto.Hash(0)
	}
	mech, data, err := k.signMechanism(op, digest, opts)
	if err != nil {
		return nil, err
	}
	if mech[0].Mechanism == p11.CKM_RSA_PKCS_PSS {
		// Not every token does PSS, and some fail it late and vaguely: ask first.
		if err := k.tok.requireMechanismLocked(op, p11.CKM_RSA_PKCS_PSS, p11.CKF_SIGN); err != nil {
			return nil, err
		}
	}
	var sig []byte
	err = k.useLocked(op, sh, func(h p11.ObjectHandle) error {
		b := k.tok.mod.b
		if err := b.SignInit(sh, mech, h); err != nil {
			return err
		}
		var err error
		sig, err = b.Sign(sh, data)
		return err
	})
	if err != nil {
		return nil, err
	}
	if k.spec.Type == EC {
		return ecdsaDER(op, sig)
	}
	return sig, nil
}

func (k *Key) signMechanism(op string, digest []byte, opts crypto.SignerOpts) ([]*p11.Mechanism, []byte, error) {
	hash := opts.HashFunc()
	if hash != 0 && len(digest) != hash.Size() {
		return nil, nil, invalidf(op, "digest of %d bytes for %v (want %d)", len(digest), hash, hash.Size())
	}
	switch k.spec.Type {
	case EC:
		return []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDSA, nil)}, digest, nil
	case RSA:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			hm, mgf, ok := pssHash(hash)
			if !ok {
				return nil, nil, &Error{Op: op, Code: CodeMechanismNotSupported, Err: fmt.Errorf("RSA-PSS with %v", hash)}
			}
			salt := pss.SaltLength
			if salt == rsa.PSSSaltLengthEqualsHash || salt == rsa.PSSSaltLengthAuto {
				salt = hash.Size()
			}
			if salt < 0 {
				return nil, nil, invalidf(op, "PSS salt length %d", salt)
			}
			params := p11.NewPSSParams(hm, mgf, uint(salt))
			return []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_PSS, params)}, digest, nil
		}
		prefix, ok := digestInfoPrefix[hash]
		if !ok {
			return nil, nil, &Error{Op: op, Code: CodeMechanismNotSupported, Err: fmt.Errorf("RSA PKCS #1 v1.5 with %v", hash)}
		}
		data := append(bytes.Clone(prefix), digest...)
		return []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS, nil)}, data, nil
	}
	return nil, nil, &Error{Op: op, Code: CodeMechanismNotSupported, Err: fmt.Errorf("key type %s", k.spec.Type)}
}

// digestInfoPrefix is the DER DigestInfo header CKM_RSA_PKCS needs before the digest
// (RFC 8017 §9.2). Hash 0 signs the input as given (TLS's MD5+SHA1 and raw use).
var digestInfoPrefix = map[crypto.Hash][]byte{
	0:               {},
	crypto.MD5SHA1:  {},
	crypto.SHA1:     {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
	crypto.SHA224:   {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c},
	crypto.SHA256:   {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384:   {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512:   {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
	crypto.SHA3_256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x08, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA3_384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x09, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA3_512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x0a, 0x05, 0x00, 0x04, 0x40},
}

// pssHash gives the CKM_ hash and CKG_MGF1 for a hash.
func pssHash(h crypto.Hash) (mech, mgf uint, ok bool) {
	switch h {
	case crypto.SHA1:
		return p11.CKM_SHA_1, p11.CKG_MGF1_SHA1, true
	case crypto.SHA224:
		return p11.CKM_SHA224, p11.CKG_MGF1_SHA224, true
	case crypto.SHA256:
		return p11.CKM_SHA256, p11.CKG_MGF1_SHA256, true
	case crypto.SHA384:
		return p11.CKM_SHA384, p11.CKG_MGF1_SHA384, true
	case crypto.SHA512:
		return p11.CKM_SHA512, p11.CKG_MGF1_SHA512, true
	}
	return 0, 0, false
}

// ecdsaDER turns the token's r||s into the ASN.1 form x509 and TLS use.
func ecdsaDER(op string, sig []byte) ([]byte, error) {
	if len(sig) == 0 || len(sig)%2 != 0 {
		return nil, &Error{Op: op, Code: CodeDeviceError, Err: fmt.Errorf("ECDSA signature of odd length %d", len(sig))}
	}
	half := len(sig) / 2
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:half]), new(big.Int).SetBytes(sig[half:])})
}

// Decrypt decrypts with an RSA key generated or imported with UsageDecrypt: PKCS #1 v1.5
// when opts is nil or *rsa.PKCS1v15DecryptOptions, OAEP when it is *rsa.OAEPOptions.
func (k *Key) Decrypt(_ io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	return k.DecryptContext(context.Background(), msg, opts)
}

// DecryptContext is Decrypt that stops waiting for the token when ctx ends.
func (k *Key) DecryptContext(ctx context.Context, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	const op = "decrypt"
	if k.spec.Type != RSA {
		return nil, &Error{Op: op, Code: CodeMechanismNotSupported, Err: fmt.Errorf("decrypt with a %s key", k.spec)}
	}
	var mech *p11.Mechanism
	switch o := opts.(type) {
	// PKCS #1 v1.5 is what crypto.Decrypter means by nil options, and what S/MIME and
	// many tokens still use; prefer OAEP where the other side allows it.
	case nil, *rsa.PKCS1v15DecryptOptions: //nolint:staticcheck // see above
		mech = p11.NewMechanism(p11.CKM_RSA_PKCS, nil)
	case *rsa.OAEPOptions:
		mgfHash := o.MGFHash
		if mgfHash == 0 {
			mgfHash = o.Hash
		}
		hm, _, ok1 := pssHash(o.Hash)
		_, mgf, ok2 := pssHash(mgfHash)
		if !ok1 || !ok2 {
			return nil, &Error{Op: op, Code: CodeMechanismNotSupported, Err: fmt.Errorf("OAEP with %v/%v", o.Hash, mgfHash)}
		}
		mech = p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP, p11.NewOAEPParams(hm, mgf, p11.CKZ_DATA_SPECIFIED, o.Label))
	default:
		return nil, invalidf(op, "decrypter options %T", opts)
	}
	var plain []byte
	err := k.tok.do(ctx, op, func(sh p11.SessionHandle) error {
		var err error
		plain, err = k.decryptLocked(op, sh, mech, msg)
		return err
	})
	return plain, err
}

func (k *Key) decryptLocked(op string, sh p11.SessionHandle, mech *p11.Mechanism, msg []byte) ([]byte, error) {
	var plain []byte
	err := k.useLocked(op, sh, func(h p11.ObjectHandle) error {
		if err := k.tok.mod.b.DecryptInit(sh, []*p11.Mechanism{mech}, h); err != nil {
			return err
		}
		var err error
		plain, err = k.tok.mod.b.Decrypt(sh, msg)
		return err
	})
	return plain, err
}
