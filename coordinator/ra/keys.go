package ra

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// MinRSABits and MinRSAExponent are the weakest RSA key accepted whatever the profile.
const (
	MinRSABits     = 2048
	MinRSAExponent = 65537
)

// checkStrength refuses keys no profile may accept: short or badly built RSA keys,
// curves other than P-256 and P-384, other algorithms. It returns the key's type.
func checkStrength(exp Expectation, pub crypto.PublicKey, alg x509.PublicKeyAlgorithm) (protocol.KeyType, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch bits := k.N.BitLen(); {
		case bits < MinRSABits:
			return "", exp.refuse(protocol.CodeWeakKey, "RSA modulus of %d bits; at least %d are required", bits, MinRSABits)
		case k.E < MinRSAExponent:
			return "", exp.refuse(protocol.CodeWeakKey, "RSA public exponent %d is below %d", k.E, MinRSAExponent)
		case k.E%2 == 0:
			return "", exp.refuse(protocol.CodeWeakKey, "RSA public exponent %d is even", k.E)
		}
	case *ecdsa.PublicKey:
	default:
		name := alg.String() + " keys are"
		if alg == x509.UnknownPublicKeyAlgorithm {
			name = "the key algorithm is unknown and"
		}
		return "", exp.refuse(protocol.CodeWeakKey, "%s not accepted; tokens hold RSA or ECDSA keys", name)
	}
	t, err := protocol.KeyTypeOf(pub)
	if err != nil {
		msg := err.Error()
		var pe *protocol.Error
		if errors.As(err, &pe) {
			msg = pe.Message // without the code, which the refusal carries
		}
		return "", exp.refuse(protocol.CodeWeakKey, "%s", msg)
	}
	return t, nil
}

var oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}

// Curves crypto/x509 cannot parse, named so that the refusal says which one was sent.
var curveNames = map[string]string{
	"1.2.840.10045.3.1.1":   "P-192",
	"1.3.132.0.10":          "secp256k1",
	"1.3.36.3.3.2.8.1.1.7":  "brainpoolP256r1",
	"1.3.36.3.3.2.8.1.1.11": "brainpoolP384r1",
	"1.3.36.3.3.2.8.1.1.13": "brainpoolP512r1",
}

// unparsableCurve looks inside a CSR that crypto/x509 refused: when its key is an EC key
// on a curve the library does not know (secp256k1, Brainpool) or given by explicit
// parameters, it says so, so that the refusal is weak_key rather than a malformed CSR.
func unparsableCurve(der []byte) (string, bool) {
	var csr, info asn1.RawValue
	if _, err := asn1.Unmarshal(der, &csr); err != nil {
		return "", false
	}
	if _, err := asn1.Unmarshal(csr.Bytes, &info); err != nil {
		return "", false
	}
	rest := info.Bytes
	var skip asn1.RawValue
	for range 2 { // version, subject
		var err error
		if rest, err = asn1.Unmarshal(rest, &skip); err != nil {
			return "", false
		}
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(rest, &spki); err != nil || !spki.Algorithm.Algorithm.Equal(oidECPublicKey) {
		return "", false
	}
	var curve asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(spki.Algorithm.Parameters.FullBytes, &curve); err != nil {
		return "EC key with explicit curve parameters; only named curves are accepted (P-256, P-384)", true
	}
	name := curve.String()
	if n, ok := curveNames[name]; ok {
		name = fmt.Sprintf("%s (%s)", n, curve)
	}
	return fmt.Sprintf("EC key on curve %s; profiles allow P-256 or P-384", name), true
}
