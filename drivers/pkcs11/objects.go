//go:build cgo

package pkcs11

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	p11 "github.com/miekg/pkcs11"
)

// Keys lists the key pairs on the token, one entry per CKA_ID, in ID order. Private keys
// are seen only while the user is logged in.
func (t *Token) Keys(ctx context.Context) ([]KeyInfo, error) {
	const op = "list keys"
	var out []KeyInfo
	err := t.do(ctx, op, func(sh p11.SessionHandle) error {
		byID := map[string]*KeyInfo{}
		for _, class := range []uint{p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY} {
			hs, err := t.findLocked(sh, classTemplate(class, nil))
			if err != nil {
				return err
			}
			for _, h := range hs {
				a, err := t.attrsLocked(sh, h, p11.CKA_ID, p11.CKA_LABEL)
				if err != nil {
					return err
				}
				id := a[p11.CKA_ID]
				k := byID[string(id)]
				if k == nil {
					k = &KeyInfo{ID: id, Label: string(a[p11.CKA_LABEL])}
					byID[string(id)] = k
				}
				if k.Spec == nil {
					k.Spec = t.keySpecLocked(sh, h)
				}
				if class == p11.CKO_PRIVATE_KEY {
					k.Private = true
				} else {
					k.Public = true
				}
			}
		}
		for _, k := range byID {
			out = append(out, *k)
		}
		slices.SortFunc(out, func(a, b KeyInfo) int { return strings.Compare(hex.EncodeToString(a.ID), hex.EncodeToString(b.ID)) })
		return nil
	})
	return out, err
}

// keySpecLocked reads a key object's type and size from its own attributes; nil when they
// are not readable or the type is not RSA or EC.
func (t *Token) keySpecLocked(sh p11.SessionHandle, h p11.ObjectHandle) *KeySpec {
	a, err := t.attrsLocked(sh, h, p11.CKA_KEY_TYPE)
	if err != nil {
		return nil
	}
	switch ulong(a[p11.CKA_KEY_TYPE]) {
	case p11.CKK_RSA:
		if m, err := t.attrsLocked(sh, h, p11.CKA_MODULUS, p11.CKA_PUBLIC_EXPONENT); err == nil {
			if pub, err := rsaPublic(m[p11.CKA_MODULUS], m[p11.CKA_PUBLIC_EXPONENT]); err == nil {
				return &KeySpec{Type: RSA, Bits: pub.N.BitLen()}
			}
		}
	case p11.CKK_EC:
		if p, err := t.attrsLocked(sh, h, p11.CKA_EC_PARAMS); err == nil {
			if name, err := curveFromParams(p[p11.CKA_EC_PARAMS]); err == nil {
				return &KeySpec{Type: EC, Curve: name}
			}
		}
	}
	return nil
}

// DeleteKey deletes the key pair with this CKA_ID (its private and public key objects)
// and says how many objects went; certificates stay (DeleteCertificate). The user must be
// logged in, so that the private key is seen.
func (t *Token) DeleteKey(ctx context.Context, id []byte) (int, error) {
	const op = "delete key"
	if err := checkID(op, id); err != nil {
		return 0, err
	}
	n := 0
	err := t.do(ctx, op, func(sh p11.SessionHandle) error {
		if err := t.requireUserLocked(op, sh); err != nil {
			return err
		}
		var hs []p11.ObjectHandle
		for _, class := range []uint{p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY} {
			found, err := t.findLocked(sh, classTemplate(class, id))
			if err != nil {
				return err
			}
			hs = append(hs, found...)
		}
		var err error
		n, err = t.destroyLocked(sh, hs)
		return err
	})
	return n, err
}

// destroyLocked destroys the objects and counts those that went.
func (t *Token) destroyLocked(sh p11.SessionHandle, hs []p11.ObjectHandle) (int, error) {
	if len(hs) > 0 {
		t.epoch++
	}
	for i, h := range hs {
		if err := t.mod.b.DestroyObject(sh, h); err != nil {
			if i == 0 {
				return 0, err
			}
			return i, fmt.Errorf("after deleting %d of %d objects: %w", i, len(hs), err)
		}
	}
	return len(hs), nil
}
