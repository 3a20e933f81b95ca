//go:build cgo

package pkcs11

import (
	"context"
	"fmt"
	"slices"

	p11 "github.com/miekg/pkcs11"
)

// Mechanisms lists what the token can do.
func (t *Token) Mechanisms(ctx context.Context) ([]Mechanism, error) {
	const op = "list mechanisms"
	var out []Mechanism
	err := t.locked(ctx, op, func() error {
		ms, err := t.mechanismsLocked(op)
		out = slices.Clone(ms)
		return err
	})
	return out, err
}

// CheckKeySpec tells whether the token can generate and sign with a key of this spec:
// nil, or CodeMechanismNotSupported saying what is missing. Ask before generating: on a
// real token a refused key generation can take long to fail.
func (t *Token) CheckKeySpec(ctx context.Context, spec KeySpec) error {
	const op = "check key spec"
	if err := spec.Validate(); err != nil {
		return err
	}
	return t.locked(ctx, op, func() error {
		ms, err := t.mechanismsLocked(op)
		if err != nil {
			return err
		}
		return checkSpec(op, ms, spec)
	})
}

func checkSpec(op string, ms []Mechanism, spec KeySpec) error {
	have := make(map[uint]Mechanism, len(ms))
	for _, m := range ms {
		have[m.Type] = m
	}
	gen, sign, size := uint(p11.CKM_RSA_PKCS_KEY_PAIR_GEN), uint(p11.CKM_RSA_PKCS), uint(spec.Bits)
	if spec.Type == EC {
		gen, sign, size = p11.CKM_EC_KEY_PAIR_GEN, p11.CKM_ECDSA, uint(curveByName(spec.Curve).Params().BitSize)
	}
	g, ok := have[gen]
	if !ok || g.Flags&p11.CKF_GENERATE_KEY_PAIR == 0 {
		return &Error{Op: op, Code: CodeMechanismNotSupported, Err: fmt.Errorf("the token cannot generate %s keys (no %s)", spec.Type, mechanismName(gen))}
	}
	if (g.MinKeySize != 0 && size < g.MinKeySize) || (g.MaxKeySize != 0 && size > g.MaxKeySize) {
		return &Error{Op: op, Code: CodeMechanismNotSupported,
			Err: fmt.Errorf("%s: the token makes %s keys of %d to %d bits", spec, spec.Type, g.MinKeySize, g.MaxKeySize)}
	}
	if s, ok := have[sign]; !ok || s.Flags&p11.CKF_SIGN == 0 {
		return &Error{Op: op, Code: CodeMechanismNotSupported, Err: fmt.Errorf("the token cannot sign with %s", mechanismName(sign))}
	}
	return nil
}

var mechanismNames = map[uint]string{
	p11.CKM_RSA_PKCS_KEY_PAIR_GEN: "CKM_RSA_PKCS_KEY_PAIR_GEN",
	p11.CKM_RSA_PKCS:              "CKM_RSA_PKCS",
	p11.CKM_RSA_X_509:             "CKM_RSA_X_509",
	p11.CKM_RSA_PKCS_OAEP:         "CKM_RSA_PKCS_OAEP",
	p11.CKM_RSA_PKCS_PSS:          "CKM_RSA_PKCS_PSS",
	p11.CKM_SHA1_RSA_PKCS:         "CKM_SHA1_RSA_PKCS",
	p11.CKM_SHA256_RSA_PKCS:       "CKM_SHA256_RSA_PKCS",
	p11.CKM_SHA384_RSA_PKCS:       "CKM_SHA384_RSA_PKCS",
	p11.CKM_SHA512_RSA_PKCS:       "CKM_SHA512_RSA_PKCS",
	p11.CKM_SHA256_RSA_PKCS_PSS:   "CKM_SHA256_RSA_PKCS_PSS",
	p11.CKM_EC_KEY_PAIR_GEN:       "CKM_EC_KEY_PAIR_GEN",
	p11.CKM_ECDSA:                 "CKM_ECDSA",
	p11.CKM_ECDSA_SHA256:          "CKM_ECDSA_SHA256",
	p11.CKM_ECDSA_SHA384:          "CKM_ECDSA_SHA384",
	p11.CKM_ECDH1_DERIVE:          "CKM_ECDH1_DERIVE",
	p11.CKM_SHA_1:                 "CKM_SHA_1",
	p11.CKM_SHA256:                "CKM_SHA256",
	p11.CKM_SHA384:                "CKM_SHA384",
	p11.CKM_SHA512:                "CKM_SHA512",
	p11.CKM_AES_KEY_GEN:           "CKM_AES_KEY_GEN",
	p11.CKM_AES_CBC:               "CKM_AES_CBC",
	p11.CKM_AES_GCM:               "CKM_AES_GCM",
}

func mechanismName(m uint) string {
	if n, ok := mechanismNames[m]; ok {
		return n
	}
	return fmt.Sprintf("CKM_0x%08X", m)
}
