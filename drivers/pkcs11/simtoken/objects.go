//go:build cgo

package simtoken

import (
	"bytes"
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/binary"
	"math/big"
	"slices"

	p11 "github.com/miekg/pkcs11"
)

// object is a PKCS#11 object. Private key material is kept as a Go key, never as
// attributes, so no call can read it.
type object struct {
	attrs   attrs
	key     crypto.Signer     // private keys only
	session p11.SessionHandle // the owning session of a session object; 0 for token objects
	size    int               // bytes of token memory it takes
}

// attrs are an object's attributes, packed: one index sorted by type and one buffer of
// values, two allocations per object instead of a map and one per value (thousands of
// tokens live in one process).
type attrs struct {
	index []attrIndex
	data  []byte
}

type attrIndex struct {
	typ    uint
	off, n uint32
}

// pack freezes a template's map into attrs.
func pack(m map[uint][]byte) attrs {
	size := 0
	for _, v := range m {
		size += len(v)
	}
	a := attrs{index: make([]attrIndex, 0, len(m)), data: make([]byte, 0, size)}
	for typ, v := range m {
		a.index = append(a.index, attrIndex{typ: typ, off: uint32(len(a.data)), n: uint32(len(v))})
		a.data = append(a.data, v...)
	}
	slices.SortFunc(a.index, func(x, y attrIndex) int { return cmp.Compare(x.typ, y.typ) })
	return a
}

// get returns the attribute's value (not to be modified) and whether the object has it.
func (a attrs) get(typ uint) ([]byte, bool) {
	i, ok := slices.BinarySearchFunc(a.index, typ, func(x attrIndex, t uint) int { return cmp.Compare(x.typ, t) })
	if !ok {
		return nil, false
	}
	x := a.index[i]
	return a.data[x.off : x.off+x.n : x.off+x.n], true
}

func (a attrs) value(typ uint) []byte {
	v, _ := a.get(typ)
	return v
}

var curves = map[string]struct {
	curve elliptic.Curve
	oid   asn1.ObjectIdentifier
}{
	"P-256": {elliptic.P256(), asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}},
	"P-384": {elliptic.P384(), asn1.ObjectIdentifier{1, 3, 132, 0, 34}},
}

// curveOf reads CKA_EC_PARAMS: the name of a curve the model offers, "" if not.
func (m *Model) curveOf(params []byte) (string, elliptic.Curve) {
	var oid asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(params, &oid); err != nil || len(rest) != 0 {
		return "", nil
	}
	for _, name := range m.Curves {
		if c := curves[name]; c.oid.Equal(oid) {
			return name, c.curve
		}
	}
	return "", nil
}

// secret lists the attributes of private key material: always CKR_ATTRIBUTE_SENSITIVE.
var secret = map[uint]bool{
	p11.CKA_PRIVATE_EXPONENT: true, p11.CKA_PRIME_1: true, p11.CKA_PRIME_2: true,
	p11.CKA_EXPONENT_1: true, p11.CKA_EXPONENT_2: true, p11.CKA_COEFFICIENT: true,
}

func ulongAttr(v uint) []byte { return p11.NewAttribute(0, v).Value }
func boolAttr(v bool) []byte  { return p11.NewAttribute(0, v).Value }

// ulongOf decodes a CK_ULONG attribute value; ok false when it has the wrong size.
func ulongOf(b []byte) (uint, bool) {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b)), true
	case 4:
		return uint(binary.NativeEndian.Uint32(b)), true
	}
	return 0, false
}

func isTrue(b []byte) bool { return len(b) > 0 && b[0] != 0 }

func (o *object) class() uint {
	c, _ := ulongOf(o.attrs.value(p11.CKA_CLASS))
	return c
}

func (o *object) keyType() uint {
	k, _ := ulongOf(o.attrs.value(p11.CKA_KEY_TYPE))
	return k
}

func (o *object) private() bool { return isTrue(o.attrs.value(p11.CKA_PRIVATE)) }
func (o *object) onToken() bool { return isTrue(o.attrs.value(p11.CKA_TOKEN)) }

// matches reports whether the object has every attribute of the template, equal.
func (o *object) matches(tmpl []*p11.Attribute) bool {
	for _, a := range tmpl {
		v, ok := o.attrs.get(a.Type)
		if !ok || !bytes.Equal(v, a.Value) {
			return false
		}
	}
	return true
}

// attrMap copies a template into a map; a type given twice is CKR_TEMPLATE_INCONSISTENT.
func attrMap(tmpl []*p11.Attribute) (map[uint][]byte, error) {
	m := make(map[uint][]byte, len(tmpl)+4)
	for _, a := range tmpl {
		if _, dup := m[a.Type]; dup {
			return nil, p11.Error(p11.CKR_TEMPLATE_INCONSISTENT)
		}
		m[a.Type] = bytes.Clone(a.Value)
	}
	return m, nil
}

// setDefault sets the attribute when the template left it out.
func setDefault(m map[uint][]byte, typ uint, v []byte) {
	if _, ok := m[typ]; !ok {
		m[typ] = v
	}
}

// objectSize estimates the token memory an object takes: its attributes, a header per
// attribute, and the private key material.
func objectSize(o *object) int {
	n := 16*len(o.attrs.index) + len(o.attrs.data)
	switch k := o.key.(type) {
	case *rsa.PrivateKey:
		n += 5 * k.Size() / 2 // d, p, q, dp, dq, qinv
	case *ecdsa.PrivateKey:
		n += (k.Curve.Params().BitSize + 7) / 8
	}
	return n
}

// newObject makes an object from a C_CreateObject template: certificates, data objects,
// public keys, and private keys (imported: their material becomes a Go key and leaves
// the attributes).
func newObject(m *Model, tmpl []*p11.Attribute) (*object, error) {
	attrs, err := attrMap(tmpl)
	if err != nil {
		return nil, err
	}
	cv, ok := attrs[p11.CKA_CLASS]
	if !ok {
		return nil, p11.Error(p11.CKR_TEMPLATE_INCOMPLETE)
	}
	class, ok := ulongOf(cv)
	if !ok {
		return nil, p11.Error(p11.CKR_ATTRIBUTE_VALUE_INVALID)
	}
	o := &object{}
	setDefault(attrs, p11.CKA_TOKEN, boolAttr(false))
	setDefault(attrs, p11.CKA_LABEL, nil)
	switch class {
	case p11.CKO_CERTIFICATE, p11.CKO_DATA, p11.CKO_PUBLIC_KEY:
		setDefault(attrs, p11.CKA_PRIVATE, boolAttr(false))
		if class != p11.CKO_DATA {
			setDefault(attrs, p11.CKA_ID, nil)
		}
		if class == p11.CKO_PUBLIC_KEY {
			if err := checkPublic(m, attrs); err != nil {
				return nil, err
			}
			attrs[p11.CKA_LOCAL] = boolAttr(false)
		}
	case p11.CKO_PRIVATE_KEY:
		key, err := importPrivate(m, attrs)
		if err != nil {
			return nil, err
		}
		o.key = key
		privateDefaults(attrs)
		attrs[p11.CKA_LOCAL] = boolAttr(false)
		attrs[p11.CKA_ALWAYS_SENSITIVE] = boolAttr(false)
		attrs[p11.CKA_NEVER_EXTRACTABLE] = boolAttr(false)
	default:
		return nil, p11.Error(p11.CKR_ATTRIBUTE_VALUE_INVALID)
	}
	o.attrs = pack(attrs)
	o.size = objectSize(o)
	return o, nil
}

// privateDefaults are a smart card's: private, sensitive, not extractable.
func privateDefaults(attrs map[uint][]byte) {
	setDefault(attrs, p11.CKA_PRIVATE, boolAttr(true))
	setDefault(attrs, p11.CKA_SENSITIVE, boolAttr(true))
	setDefault(attrs, p11.CKA_EXTRACTABLE, boolAttr(false))
	setDefault(attrs, p11.CKA_ID, nil)
	for _, usage := range []uint{p11.CKA_SIGN, p11.CKA_DECRYPT, p11.CKA_UNWRAP, p11.CKA_DERIVE} {
		setDefault(attrs, usage, boolAttr(false))
	}
}

func checkPublic(m *Model, attrs map[uint][]byte) error {
	kt, _ := ulongOf(attrs[p11.CKA_KEY_TYPE])
	switch kt {
	case p11.CKK_RSA:
		if len(attrs[p11.CKA_MODULUS]) == 0 || len(attrs[p11.CKA_PUBLIC_EXPONENT]) == 0 {
			return p11.Error(p11.CKR_TEMPLATE_INCOMPLETE)
		}
	case p11.CKK_EC:
		if name, _ := m.curveOf(attrs[p11.CKA_EC_PARAMS]); name == "" {
			return p11.Error(p11.CKR_CURVE_NOT_SUPPORTED)
		}
		if len(attrs[p11.CKA_EC_POINT]) == 0 {
			return p11.Error(p11.CKR_TEMPLATE_INCOMPLETE)
		}
	default:
		return p11.Error(p11.CKR_TEMPLATE_INCONSISTENT)
	}
	return nil
}

// importPrivate builds the Go key of an imported private key and removes its material
// from attrs.
func importPrivate(m *Model, attrs map[uint][]byte) (crypto.Signer, error) {
	kt, _ := ulongOf(attrs[p11.CKA_KEY_TYPE])
	defer func() {
		for typ := range secret {
			delete(attrs, typ)
		}
		if kt == p11.CKK_EC {
			delete(attrs, p11.CKA_VALUE)
		}
	}()
	num := func(typ uint) *big.Int { return new(big.Int).SetBytes(attrs[typ]) }
	switch kt {
	case p11.CKK_RSA:
		for _, typ := range []uint{p11.CKA_MODULUS, p11.CKA_PUBLIC_EXPONENT, p11.CKA_PRIVATE_EXPONENT, p11.CKA_PRIME_1, p11.CKA_PRIME_2} {
			if len(attrs[typ]) == 0 {
				return nil, p11.Error(p11.CKR_TEMPLATE_INCOMPLETE)
			}
		}
		e := num(p11.CKA_PUBLIC_EXPONENT)
		if !e.IsInt64() || e.Int64() > 1<<31-1 {
			return nil, p11.Error(p11.CKR_ATTRIBUTE_VALUE_INVALID)
		}
		k := &rsa.PrivateKey{
			PublicKey: rsa.PublicKey{N: num(p11.CKA_MODULUS), E: int(e.Int64())},
			D:         num(p11.CKA_PRIVATE_EXPONENT),
			Primes:    []*big.Int{num(p11.CKA_PRIME_1), num(p11.CKA_PRIME_2)},
		}
		if bits := k.N.BitLen(); bits < m.MinRSABits || bits > m.MaxRSABits {
			return nil, p11.Error(p11.CKR_KEY_SIZE_RANGE)
		}
		if err := k.Validate(); err != nil {
			return nil, p11.Error(p11.CKR_ATTRIBUTE_VALUE_INVALID)
		}
		k.Precompute()
		return k, nil
	case p11.CKK_EC:
		name, curve := m.curveOf(attrs[p11.CKA_EC_PARAMS])
		if name == "" {
			return nil, p11.Error(p11.CKR_CURVE_NOT_SUPPORTED)
		}
		k, err := ecdsa.ParseRawPrivateKey(curve, attrs[p11.CKA_VALUE])
		if err != nil {
			return nil, p11.Error(p11.CKR_ATTRIBUTE_VALUE_INVALID)
		}
		return k, nil
	}
	return nil, p11.Error(p11.CKR_TEMPLATE_INCONSISTENT)
}

// keyRequest is a C_GenerateKeyPair call, checked.
type keyRequest struct {
	rsaBits int
	curve   elliptic.Curve
	params  []byte // CKA_EC_PARAMS
	pub     map[uint][]byte
	priv    map[uint][]byte
}

// checkKeyRequest checks the mechanism and templates against the model.
func checkKeyRequest(m *Model, mech []*p11.Mechanism, pubT, privT []*p11.Attribute) (*keyRequest, error) {
	if len(mech) != 1 {
		return nil, p11.Error(p11.CKR_MECHANISM_INVALID)
	}
	pub, err := attrMap(pubT)
	if err != nil {
		return nil, err
	}
	priv, err := attrMap(privT)
	if err != nil {
		return nil, err
	}
	for _, typ := range []uint{p11.CKA_MODULUS, p11.CKA_EC_POINT} {
		if _, ok := pub[typ]; ok {
			return nil, p11.Error(p11.CKR_ATTRIBUTE_READ_ONLY)
		}
	}
	for typ := range secret {
		if _, ok := priv[typ]; ok {
			return nil, p11.Error(p11.CKR_ATTRIBUTE_READ_ONLY)
		}
	}
	r := &keyRequest{pub: pub, priv: priv}
	switch mech[0].Mechanism {
	case p11.CKM_RSA_PKCS_KEY_PAIR_GEN:
		if m.MinRSABits == 0 {
			return nil, p11.Error(p11.CKR_MECHANISM_INVALID)
		}
		bits, ok := ulongOf(pub[p11.CKA_MODULUS_BITS])
		if !ok {
			return nil, p11.Error(p11.CKR_TEMPLATE_INCOMPLETE)
		}
		if int(bits) < m.MinRSABits || int(bits) > m.MaxRSABits || bits%8 != 0 {
			return nil, p11.Error(p11.CKR_KEY_SIZE_RANGE)
		}
		// Go makes keys with e = 65537 only, as most tokens do.
		if e, ok := pub[p11.CKA_PUBLIC_EXPONENT]; ok && new(big.Int).SetBytes(e).Int64() != 65537 {
			return nil, p11.Error(p11.CKR_TEMPLATE_INCONSISTENT)
		}
		r.rsaBits = int(bits)
		if err := keyTypeIs(p11.CKK_RSA, pub, priv); err != nil {
			return nil, err
		}
	case p11.CKM_EC_KEY_PAIR_GEN:
		params, ok := pub[p11.CKA_EC_PARAMS]
		if !ok {
			return nil, p11.Error(p11.CKR_TEMPLATE_INCOMPLETE)
		}
		name, curve := m.curveOf(params)
		if name == "" {
			return nil, p11.Error(p11.CKR_CURVE_NOT_SUPPORTED)
		}
		r.curve, r.params = curve, params
		if err := keyTypeIs(p11.CKK_EC, pub, priv); err != nil {
			return nil, err
		}
	default:
		return nil, p11.Error(p11.CKR_MECHANISM_INVALID)
	}
	return r, nil
}

func keyTypeIs(kt uint, templates ...map[uint][]byte) error {
	for _, t := range templates {
		if v, ok := t[p11.CKA_KEY_TYPE]; ok {
			if got, _ := ulongOf(v); got != kt {
				return p11.Error(p11.CKR_TEMPLATE_INCONSISTENT)
			}
		}
	}
	return nil
}

// generate makes the key pair's objects. It takes the CPU time a key takes in Go.
func (r *keyRequest) generate() (pub, priv *object, err error) {
	pa, sa := r.pub, r.priv
	var key crypto.Signer
	if r.rsaBits > 0 {
		k, err := rsa.GenerateKey(rand.Reader, r.rsaBits)
		if err != nil {
			return nil, nil, p11.Error(p11.CKR_FUNCTION_FAILED)
		}
		key = k
		e := big.NewInt(int64(k.E)).Bytes()
		for _, a := range []map[uint][]byte{pa, sa} {
			a[p11.CKA_KEY_TYPE] = ulongAttr(p11.CKK_RSA)
			a[p11.CKA_MODULUS] = k.N.Bytes()
			a[p11.CKA_PUBLIC_EXPONENT] = e
		}
		sa[p11.CKA_MODULUS_BITS] = ulongAttr(uint(r.rsaBits))
	} else {
		k, err := ecdsa.GenerateKey(r.curve, rand.Reader)
		if err != nil {
			return nil, nil, p11.Error(p11.CKR_FUNCTION_FAILED)
		}
		key = k
		point, err := k.PublicKey.Bytes()
		if err != nil {
			return nil, nil, p11.Error(p11.CKR_FUNCTION_FAILED)
		}
		der, _ := asn1.Marshal(point) // CKA_EC_POINT is a DER OCTET STRING
		for _, a := range []map[uint][]byte{pa, sa} {
			a[p11.CKA_KEY_TYPE] = ulongAttr(p11.CKK_EC)
			a[p11.CKA_EC_PARAMS] = r.params
		}
		pa[p11.CKA_EC_POINT] = der
	}
	pa[p11.CKA_CLASS] = ulongAttr(p11.CKO_PUBLIC_KEY)
	setDefault(pa, p11.CKA_TOKEN, boolAttr(false))
	setDefault(pa, p11.CKA_PRIVATE, boolAttr(false))
	setDefault(pa, p11.CKA_LABEL, nil)
	setDefault(pa, p11.CKA_ID, nil)
	for _, usage := range []uint{p11.CKA_VERIFY, p11.CKA_ENCRYPT, p11.CKA_WRAP, p11.CKA_DERIVE} {
		setDefault(pa, usage, boolAttr(false))
	}
	pa[p11.CKA_LOCAL] = boolAttr(true)
	sa[p11.CKA_CLASS] = ulongAttr(p11.CKO_PRIVATE_KEY)
	setDefault(sa, p11.CKA_TOKEN, boolAttr(false))
	setDefault(sa, p11.CKA_LABEL, nil)
	privateDefaults(sa)
	sa[p11.CKA_LOCAL] = boolAttr(true)
	sa[p11.CKA_ALWAYS_SENSITIVE] = sa[p11.CKA_SENSITIVE]
	sa[p11.CKA_NEVER_EXTRACTABLE] = boolAttr(!isTrue(sa[p11.CKA_EXTRACTABLE]))
	pub, priv = &object{attrs: pack(pa)}, &object{attrs: pack(sa), key: key}
	pub.size, priv.size = objectSize(pub), objectSize(priv)
	return pub, priv, nil
}

// cryptoOp is a signing or decryption begun by C_SignInit or C_DecryptInit.
type cryptoOp struct {
	mech uint
	key  crypto.Signer
	pss  *rsa.PSSOptions
}

// pssParams decodes CK_RSA_PKCS_PSS_PARAMS (three CK_ULONGs, native order) into Go's
// options; Go signs with the MGF1 hash equal to the message hash only.
func pssParams(b []byte) (*rsa.PSSOptions, bool) {
	const n = 8
	if len(b) != 3*n {
		return nil, false
	}
	hashMech, _ := ulongOf(b[:n])
	mgf, _ := ulongOf(b[n : 2*n])
	salt, _ := ulongOf(b[2*n:])
	var h crypto.Hash
	var wantMGF uint
	switch hashMech {
	case p11.CKM_SHA_1:
		h, wantMGF = crypto.SHA1, p11.CKG_MGF1_SHA1
	case p11.CKM_SHA224:
		h, wantMGF = crypto.SHA224, p11.CKG_MGF1_SHA224
	case p11.CKM_SHA256:
		h, wantMGF = crypto.SHA256, p11.CKG_MGF1_SHA256
	case p11.CKM_SHA384:
		h, wantMGF = crypto.SHA384, p11.CKG_MGF1_SHA384
	case p11.CKM_SHA512:
		h, wantMGF = crypto.SHA512, p11.CKG_MGF1_SHA512
	default:
		return nil, false
	}
	if mgf != wantMGF || salt > 1024 {
		return nil, false
	}
	return &rsa.PSSOptions{Hash: h, SaltLength: int(salt)}, true
}

// sign performs the operation on data.
func (op *cryptoOp) sign(data []byte) ([]byte, error) {
	switch k := op.key.(type) {
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, data)
		if err != nil {
			return nil, p11.Error(p11.CKR_FUNCTION_FAILED)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig := make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
		return sig, nil
	case *rsa.PrivateKey:
		if op.pss != nil {
			if len(data) != op.pss.Hash.Size() {
				return nil, p11.Error(p11.CKR_DATA_LEN_RANGE)
			}
			sig, err := rsa.SignPSS(rand.Reader, k, op.pss.Hash, data, op.pss)
			if err != nil {
				return nil, p11.Error(p11.CKR_FUNCTION_FAILED)
			}
			return sig, nil
		}
		if len(data) > k.Size()-11 {
			return nil, p11.Error(p11.CKR_DATA_LEN_RANGE)
		}
		// Hash 0: data is signed as given, DigestInfo included, as CKM_RSA_PKCS does.
		sig, err := rsa.SignPKCS1v15(nil, k, 0, data)
		if err != nil {
			return nil, p11.Error(p11.CKR_FUNCTION_FAILED)
		}
		return sig, nil
	}
	return nil, p11.Error(p11.CKR_KEY_TYPE_INCONSISTENT)
}

// decrypt performs a CKM_RSA_PKCS decryption.
func (op *cryptoOp) decrypt(data []byte) ([]byte, error) {
	k, ok := op.key.(*rsa.PrivateKey)
	if !ok {
		return nil, p11.Error(p11.CKR_KEY_TYPE_INCONSISTENT)
	}
	if len(data) != k.Size() {
		return nil, p11.Error(p11.CKR_ENCRYPTED_DATA_LEN_RANGE)
	}
	plain, err := rsa.DecryptPKCS1v15(nil, k, data) //nolint:staticcheck // CKM_RSA_PKCS is PKCS #1 v1.5 by definition
	if err != nil {
		return nil, p11.Error(p11.CKR_ENCRYPTED_DATA_INVALID)
	}
	return plain, nil
}
