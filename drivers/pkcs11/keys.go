//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"
)

// findLocked returns the handles of the objects matching the template.
func (t *Token) findLocked(sh p11.SessionHandle, template []*p11.Attribute) ([]p11.ObjectHandle, error) {
	b := t.mod.b
	if err := b.FindObjectsInit(sh, template); err != nil {
		return nil, err
	}
	var all []p11.ObjectHandle
	for {
		hs, _, err := b.FindObjects(sh, 64)
		if err != nil {
			_ = b.FindObjectsFinal(sh)
			return nil, err
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	return all, b.FindObjectsFinal(sh)
}

func classTemplate(class uint, id []byte) []*p11.Attribute {
	a := []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, class)}
	if id != nil {
		a = append(a, p11.NewAttribute(p11.CKA_ID, id))
	}
	return a
}

// attrsLocked reads attributes of one object. All must exist on it.
func (t *Token) attrsLocked(sh p11.SessionHandle, h p11.ObjectHandle, types ...uint) (map[uint][]byte, error) {
	q := make([]*p11.Attribute, len(types))
	for i, typ := range types {
		q[i] = p11.NewAttribute(typ, nil)
	}
	got, err := t.mod.b.GetAttributeValue(sh, h, q)
	if err != nil {
		return nil, err
	}
	m := make(map[uint][]byte, len(got))
	for _, a := range got {
		m[a.Type] = a.Value
	}
	return m, nil
}

// ulong decodes a CK_ULONG attribute: native byte order and size, as the module wrote it.
func ulong(b []byte) uint {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	}
	return ^uint(0)
}

func boolAttr(b []byte) bool { return len(b) > 0 && b[0] != 0 }

// rsaPublic builds an RSA public key from CKA_MODULUS and CKA_PUBLIC_EXPONENT.
func rsaPublic(mod, exp []byte) (*rsa.PublicKey, error) {
	e := new(big.Int).SetBytes(exp)
	if len(mod) == 0 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
		return nil, fmt.Errorf("malformed RSA public key on the token")
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(mod), E: int(e.Int64())}, nil
}

func curveByName(name string) elliptic.Curve {
	switch name {
	case "P-256":
		return elliptic.P256()
	case "P-384":
		return elliptic.P384()
	case "P-521":
		return elliptic.P521()
	}
	return nil
}

// curveFromParams reads CKA_EC_PARAMS (a DER OID for named curves).
func curveFromParams(params []byte) (string, error) {
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(params, &oid); err != nil {
		return "", fmt.Errorf("EC parameters are not a named curve: %w", err)
	}
	for name, o := range curveOIDs {
		if o.Equal(oid) {
			return name, nil
		}
	}
	return "", fmt.Errorf("unsupported curve %s", oid)
}

// ecPublic builds an ECDSA public key from CKA_EC_PARAMS and CKA_EC_POINT. The point is a
// DER OCTET STRING per the standard; some modules give the raw point.
func ecPublic(params, point []byte) (*ecdsa.PublicKey, string, error) {
	name, err := curveFromParams(params)
	if err != nil {
		return nil, "", err
	}
	raw := point
	var inner []byte
	if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
		raw = inner
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curveByName(name), raw)
	if err != nil {
		return nil, "", fmt.Errorf("EC point on the token: %w", err)
	}
	return pub, name, nil
}

func specOf(pub crypto.PublicKey) (KeySpec, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return KeySpec{Type: RSA, Bits: k.N.BitLen()}, nil
	case *ecdsa.PublicKey:
		name := k.Curve.Params().Name
		if _, ok := curveOIDs[name]; ok {
			return KeySpec{Type: EC, Curve: name}, nil
		}
	}
	return KeySpec{}, fmt.Errorf("unsupported public key type %T", pub)
}

// publicKeyLocked finds the public half of the key pair with this ID: from the public key
// object, else from the RSA private key's public attributes, else from a certificate with
// the ID (some tokens keep no public key object).
func (t *Token) publicKeyLocked(sh p11.SessionHandle, id []byte, priv p11.ObjectHandle, keyType uint) (crypto.PublicKey, error) {
	pubs, err := t.findLocked(sh, classTemplate(p11.CKO_PUBLIC_KEY, id))
	if err != nil {
		return nil, err
	}
	for _, h := range pubs {
		switch keyType {
		case p11.CKK_RSA:
			a, err := t.attrsLocked(sh, h, p11.CKA_MODULUS, p11.CKA_PUBLIC_EXPONENT)
			if err == nil {
				return rsaPublic(a[p11.CKA_MODULUS], a[p11.CKA_PUBLIC_EXPONENT])
			}
		case p11.CKK_EC:
			a, err := t.attrsLocked(sh, h, p11.CKA_EC_PARAMS, p11.CKA_EC_POINT)
			if err == nil {
				pub, _, err := ecPublic(a[p11.CKA_EC_PARAMS], a[p11.CKA_EC_POINT])
				return pub, err
			}
		}
	}
	if keyType == p11.CKK_RSA {
		if a, err := t.attrsLocked(sh, priv, p11.CKA_MODULUS, p11.CKA_PUBLIC_EXPONENT); err == nil {
			return rsaPublic(a[p11.CKA_MODULUS], a[p11.CKA_PUBLIC_EXPONENT])
		}
	}
	certs, err := t.findLocked(sh, classTemplate(p11.CKO_CERTIFICATE, id))
	if err != nil {
		return nil, err
	}
	for _, h := range certs {
		if a, err := t.attrsLocked(sh, h, p11.CKA_VALUE); err == nil {
			if c, err := x509.ParseCertificate(a[p11.CKA_VALUE]); err == nil {
				return c.PublicKey, nil
			}
		}
	}
	return nil, &Error{Op: "read public key", Code: CodeKeyNotFound,
		Err: fmt.Errorf("the token holds no public key, RSA modulus or certificate for key ID %x", id)}
}

// privateLocked returns the private key object with this ID, 0 when there is none.
func (t *Token) privateLocked(sh p11.SessionHandle, id []byte) (p11.ObjectHandle, error) {
	hs, err := t.findLocked(sh, classTemplate(p11.CKO_PRIVATE_KEY, id))
	if err != nil || len(hs) == 0 {
		return 0, err
	}
	return hs[0], nil
}

// keyLocked loads the key pair whose private key is h.
func (t *Token) keyLocked(sh p11.SessionHandle, id []byte, h p11.ObjectHandle) (*Key, error) {
	a, err := t.attrsLocked(sh, h, p11.CKA_KEY_TYPE, p11.CKA_LABEL)
	if err != nil {
		return nil, err
	}
	keyType := ulong(a[p11.CKA_KEY_TYPE])
	if keyType != p11.CKK_RSA && keyType != p11.CKK_EC {
		return nil, &Error{Op: "load key", Code: CodeMechanismNotSupported,
			Err: fmt.Errorf("key ID %x has key type 0x%x; only RSA and EC keys are supported", id, keyType)}
	}
	pub, err := t.publicKeyLocked(sh, id, h, keyType)
	if err != nil {
		return nil, err
	}
	spec, err := specOf(pub)
	if err != nil {
		return nil, &Error{Op: "load key", Code: CodeMechanismNotSupported, Err: err}
	}
	return &Key{tok: t, id: bytes.Clone(id), label: string(a[p11.CKA_LABEL]), spec: spec, pub: pub, handle: h, epoch: t.epoch}, nil
}

func checkID(op string, id []byte) error {
	if len(id) == 0 || len(id) > 255 {
		return invalidf(op, "key ID of %d bytes: want 1 to 255", len(id))
	}
	return nil
}

// Key returns the key pair with this CKA_ID. The user must be logged in: private keys are
// invisible otherwise.
func (t *Token) Key(ctx context.Context, id []byte) (*Key, error) {
	const op = "find key"
	if err := checkID(op, id); err != nil {
		return nil, err
	}
	var k *Key
	err := t.do(ctx, op, func(sh p11.SessionHandle) error {
		if err := t.requireUserLocked(op, sh); err != nil {
			return err
		}
		h, err := t.privateLocked(sh, id)
		if err != nil {
			return err
		}
		if h == 0 {
			return &Error{Op: op, Code: CodeKeyNotFound, Err: fmt.Errorf("no private key with ID %x", id)}
		}
		k, err = t.keyLocked(sh, id, h)
		return err
	})
	return k, err
}

// GenerateKey makes a key pair on the token: the private key is a token object, private,
// sensitive and never extractable. It is idempotent by ID: when a private key with the ID
// exists already it is returned (created false) if it has the requested type and size, and
// CodeKeyExists is returned if not. A public key left with the ID but without its private
// key (an interrupted earlier attempt) is deleted first. The user must be logged in.
func (t *Token) GenerateKey(ctx context.Context, req KeyRequest) (key *Key, created bool, err error) {
	const op = "generate key"
	if err := checkID(op, req.ID); err != nil {
		return nil, false, err
	}
	if err := req.Spec.Validate(); err != nil {
		return nil, false, err
	}
	err = t.do(ctx, op, func(sh p11.SessionHandle) error {
		existing, err := t.existingLocked(op, sh, req.ID)
		if err != nil || existing != nil {
			key = existing
			if err == nil && existing.spec != req.Spec {
				return &Error{Op: op, Code: CodeKeyExists,
					Err: fmt.Errorf("key ID %x already holds a %s key, not %s", req.ID, existing.spec, req.Spec)}
			}
			return err
		}
		if err := t.sweepTornKeysLocked(sh); err != nil {
			return wrapErr(op, err)
		}
		mech, pubT, privT := keyTemplates(req)
		_, priv, err := t.mod.b.GenerateKeyPair(sh, mech, pubT, privT)
		if err != nil {
			return wrapErr(op, err)
		}
		key, err = t.keyLocked(sh, req.ID, priv)
		created = err == nil
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return key, created, nil
}

// existingLocked returns the key pair with this ID if there is one, after deleting any
// public key or half-written object left without its private key.
func (t *Token) existingLocked(op string, sh p11.SessionHandle, id []byte) (*Key, error) {
	if err := t.requireUserLocked(op, sh); err != nil {
		return nil, err
	}
	h, err := t.privateLocked(sh, id)
	if err != nil {
		return nil, err
	}
	if h != 0 {
		return t.keyLocked(sh, id, h)
	}
	orphans, err := t.findLocked(sh, classTemplate(p11.CKO_PUBLIC_KEY, id))
	if err != nil {
		return nil, err
	}
	for _, o := range orphans {
		if err := t.mod.b.DestroyObject(sh, o); err != nil {
			return nil, wrapErr(op, fmt.Errorf("delete public key left without its private key: %w", err))
		}
		t.epoch++
	}
	return nil, nil
}

func keyTemplates(req KeyRequest) (mech []*p11.Mechanism, pub, priv []*p11.Attribute) {
	pub, priv = baseTemplates(req.ID, req.Label, req.Usage, req.Spec.Type == RSA)
	switch req.Spec.Type {
	case RSA:
		mech = []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}
		pub = append(pub,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_MODULUS_BITS, req.Spec.Bits),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
		priv = append(priv, p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA))
	case EC:
		params, _ := asn1.Marshal(curveOIDs[req.Spec.Curve])
		mech = []*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)}
		pub = append(pub,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_EC_PARAMS, params))
		priv = append(priv, p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC))
	}
	return mech, pub, priv
}

// ImportKey writes the private key (sensitive, not extractable) and its public key to the
// token with C_CreateObject, so the token marks it not local (CKA_LOCAL false). Idempotent by ID like GenerateKey: the same key already there gives created
// false, another key under the ID gives CodeKeyExists. The user must be logged in.
func (t *Token) ImportKey(ctx context.Context, req ImportRequest) (key *Key, created bool, err error) {
	const op = "import key"
	if err := checkID(op, req.ID); err != nil {
		return nil, false, err
	}
	pubT, privT, err := importTemplates(req)
	if err != nil {
		return nil, false, &Error{Op: op, Code: CodeInvalidArgument, Err: err}
	}
	// The template holds copies of the private key's parts: overwrite them once the
	// module has them (the caller wipes its own key).
	defer func() {
		for _, a := range privT {
			switch a.Type {
			case p11.CKA_PRIVATE_EXPONENT, p11.CKA_PRIME_1, p11.CKA_PRIME_2, p11.CKA_EXPONENT_1,
				p11.CKA_EXPONENT_2, p11.CKA_COEFFICIENT, p11.CKA_VALUE:
				clear(a.Value) // not the ID or label: those may be the caller's own slices
			}
		}
	}()
	want := req.Key.Public()
	err = t.do(ctx, op, func(sh p11.SessionHandle) error {
		existing, err := t.existingLocked(op, sh, req.ID)
		if err != nil || existing != nil {
			key = existing
			if err == nil && !publicEqual(existing.pub, want) {
				return &Error{Op: op, Code: CodeKeyExists,
					Err: fmt.Errorf("key ID %x already holds another key", req.ID)}
			}
			return err
		}
		pubH, err := t.mod.b.CreateObject(sh, pubT)
		if err != nil {
			return wrapErr(op, err)
		}
		privH, err := t.mod.b.CreateObject(sh, privT)
		if err != nil {
			_ = t.mod.b.DestroyObject(sh, pubH)
			return wrapErr(op, err)
		}
		key, err = t.keyLocked(sh, req.ID, privH)
		created = err == nil
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return key, created, nil
}

func importTemplates(req ImportRequest) (pub, priv []*p11.Attribute, err error) {
	pub, priv = baseTemplates(req.ID, req.Label, req.Usage, isRSA(req.Key))
	switch k := req.Key.(type) {
	case *rsa.PrivateKey:
		if err := k.Validate(); err != nil {
			return nil, nil, err
		}
		if len(k.Primes) != 2 {
			return nil, nil, errors.New("multi-prime RSA keys cannot go on a token")
		}
		k.Precompute()
		e := big.NewInt(int64(k.E)).Bytes()
		pub = append(pub,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_MODULUS, k.N.Bytes()),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, e))
		priv = append(priv,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_MODULUS, k.N.Bytes()),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, e),
			p11.NewAttribute(p11.CKA_PRIVATE_EXPONENT, k.D.Bytes()),
			p11.NewAttribute(p11.CKA_PRIME_1, k.Primes[0].Bytes()),
			p11.NewAttribute(p11.CKA_PRIME_2, k.Primes[1].Bytes()),
			p11.NewAttribute(p11.CKA_EXPONENT_1, k.Precomputed.Dp.Bytes()),
			p11.NewAttribute(p11.CKA_EXPONENT_2, k.Precomputed.Dq.Bytes()),
			p11.NewAttribute(p11.CKA_COEFFICIENT, k.Precomputed.Qinv.Bytes()))
	case *ecdsa.PrivateKey:
		name := k.Curve.Params().Name
		oid, ok := curveOIDs[name]
		if !ok {
			return nil, nil, fmt.Errorf("unsupported curve %s", name)
		}
		params, _ := asn1.Marshal(oid)
		scalar, err := k.Bytes()
		if err != nil {
			return nil, nil, err
		}
		point, err := k.PublicKey.Bytes()
		if err != nil {
			return nil, nil, err
		}
		der, _ := asn1.Marshal(point)
		pub = append(pub,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_EC_PARAMS, params),
			p11.NewAttribute(p11.CKA_EC_POINT, der))
		priv = append(priv,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_EC_PARAMS, params),
			p11.NewAttribute(p11.CKA_VALUE, scalar))
	default:
		return nil, nil, fmt.Errorf("unsupported private key type %T", req.Key)
	}
	return pub, priv, nil
}

// baseTemplates are the attributes both halves of every key pair get. Every usage is set,
// true or false: modules' defaults differ (SoftHSM lets EC keys decrypt by default).
func baseTemplates(id []byte, label string, usage Usage, rsaKey bool) (pub, priv []*p11.Attribute) {
	if usage == 0 {
		usage = UsageSign
	}
	sign, decrypt := usage&UsageSign != 0, usage&UsageDecrypt != 0
	pub = []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_VERIFY, sign),
		p11.NewAttribute(p11.CKA_ENCRYPT, decrypt && rsaKey),
		p11.NewAttribute(p11.CKA_WRAP, decrypt && rsaKey),
	}
	priv = []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_SIGN, sign),
		p11.NewAttribute(p11.CKA_DECRYPT, decrypt && rsaKey),
		p11.NewAttribute(p11.CKA_UNWRAP, decrypt && rsaKey),
		p11.NewAttribute(p11.CKA_DERIVE, decrypt && !rsaKey),
	}
	return pub, priv
}

func isRSA(k crypto.Signer) bool {
	_, ok := k.(*rsa.PrivateKey)
	return ok
}

func publicEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// sweepTornKeysLocked deletes the key objects a torn key generation left: killed inside
// C_GenerateKeyPair, SoftHSM2 keeps a key object with its defaults only, no ID, no label,
// no key material. Nothing can use such a key and other software lists it, so the next
// generation (the resumed job's) takes it away. A key with material is never touched,
// whoever made it, nor one whose material cannot be read.
func (t *Token) sweepTornKeysLocked(sh p11.SessionHandle) error {
	var torn []p11.ObjectHandle
	for _, class := range []uint{p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY} {
		hs, err := t.findLocked(sh, classTemplate(class, []byte{}))
		if err != nil {
			return err
		}
		for _, h := range hs {
			if t.tornKeyLocked(sh, h) {
				torn = append(torn, h)
			}
		}
	}
	if _, err := t.destroyLocked(sh, torn); err != nil {
		return fmt.Errorf("removing a key object a torn generation left: %w", err)
	}
	return nil
}

// tornKeyLocked: no ID, no label, and the key material's attribute (EC parameters or RSA
// modulus) readable and empty.
func (t *Token) tornKeyLocked(sh p11.SessionHandle, h p11.ObjectHandle) bool {
	a, err := t.attrsLocked(sh, h, p11.CKA_ID, p11.CKA_LABEL)
	if err != nil || len(a[p11.CKA_ID]) != 0 || len(a[p11.CKA_LABEL]) != 0 {
		return false
	}
	empty := false
	for _, typ := range []uint{p11.CKA_EC_PARAMS, p11.CKA_MODULUS} {
		m, err := t.attrsLocked(sh, h, typ)
		if err != nil {
			continue // not an attribute of this key type
		}
		if len(m[typ]) > 0 {
			return false
		}
		empty = true
	}
	return empty
}
