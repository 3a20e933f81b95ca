// Package ra is the registration authority's check of a CSR before the CA signs it.
//
// The coordinator never trusts the agent for identity. The CSR serves two purposes only:
// its signature proves that the token holds the private key, and it carries the public
// key, which must be the key the agent reported when it generated it for this job
// attempt. Key type and size must be among the profile's allowed keys. One CSR is
// accepted per attempt. The subject and SANs the CSR asks for are ignored: the
// certificate's names come from the approved request (BuildSignRequest).
//
// The functions here are pure: the dispatcher reads what they need from the store and
// records their verdict.
package ra

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// MaxCSRSize bounds the CSR the RA reads, as the protocol bounds it on the wire.
const MaxCSRSize = protocol.MaxCSRSize

// Expectation is what the coordinator knows about the attempt a CSR arrives for.
type Expectation struct {
	JobID   string
	Attempt int
	// Profile is the job's profile (the version the approval is bound to); its allowed
	// keys decide the key's type and size.
	Profile profile.Profile
	// ReportedKey is the public key (PKIX DER) the agent reported at key_generated for
	// this attempt.
	ReportedKey []byte
	// CSRAccepted is set when a CSR was already accepted for this attempt.
	CSRAccepted bool
}

// CheckedCSR is a CSR that passed Check.
type CheckedCSR struct {
	JobID   string
	Attempt int
	Profile string // name of the profile it was checked against

	// PublicKey is the CSR's key, equal to the reported one.
	PublicKey crypto.PublicKey
	KeyType   protocol.KeyType
	// Request is the CSR as sent, kept for the record; its subject, SANs and
	// extensions are not used.
	Request *x509.CertificateRequest
}

// Check decides whether the CSR of an attempt may be signed. Refusals are *Error:
//
//   - csr_rejected: a second CSR for the attempt, empty or oversized input, PEM or base64
//     text instead of DER, malformed DER, a signature that does not verify;
//   - weak_key: a key no profile accepts (RSA under 2048 bits or with an exponent below
//     65537 or even, RSA sizes other than 2048/3072/4096, curves other than P-256 and
//     P-384, other algorithms);
//   - policy_violation: an acceptable key that is not among this profile's allowed keys;
//   - key_mismatch: a key other than the one reported for the attempt.
//
// Key checks come before the signature check: they need no signature, and the standard
// library declines to verify with some weak keys, which would hide the real reason.
func Check(csrDER []byte, exp Expectation) (*CheckedCSR, error) {
	if exp.CSRAccepted {
		return nil, exp.refuse(protocol.CodeCSRRejected, "a CSR was already accepted for this attempt; a new key needs a new attempt")
	}
	if err := checkFraming(exp, csrDER); err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		if msg, ok := unparsableCurve(csrDER); ok {
			return nil, exp.refuse(protocol.CodeWeakKey, "%s", msg)
		}
		return nil, exp.refuse(protocol.CodeCSRRejected, "not a PKCS#10 CSR: %w", err)
	}
	keyType, err := checkStrength(exp, csr.PublicKey, csr.PublicKeyAlgorithm)
	if err != nil {
		return nil, err
	}
	if err := exp.Profile.AllowsKey(csr.PublicKey); err != nil {
		var pe *profile.Error
		if errors.As(err, &pe) {
			return nil, exp.refuse(protocol.CodePolicyViolation, "profile %q: %s", exp.Profile.Name, pe.Msg)
		}
		return nil, exp.refuse(protocol.CodePolicyViolation, "%w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, exp.refuse(protocol.CodeCSRRejected, "signature does not verify (altered, or not signed by its own key): %w", err)
	}
	if err := matchReported(exp, csr.PublicKey); err != nil {
		return nil, err
	}
	return &CheckedCSR{
		JobID:     exp.JobID,
		Attempt:   exp.Attempt,
		Profile:   exp.Profile.Name,
		PublicKey: csr.PublicKey,
		KeyType:   keyType,
		Request:   csr,
	}, nil
}

func checkFraming(exp Expectation, der []byte) error {
	switch {
	case len(der) == 0:
		return exp.refuse(protocol.CodeCSRRejected, "empty CSR")
	case len(der) > MaxCSRSize:
		return exp.refuse(protocol.CodeCSRRejected, "CSR of %d bytes exceeds the limit of %d", len(der), MaxCSRSize)
	}
	text := bytes.TrimSpace(der)
	if bytes.HasPrefix(text, []byte("-----BEGIN")) {
		return exp.refuse(protocol.CodeCSRRejected, "PEM text; send the DER bytes (decode the base64 between the BEGIN and END lines)")
	}
	// A DER CSR starts with a SEQUENCE tag (0x30, '0'); base64 of one starts with "MI".
	if bytes.HasPrefix(text, []byte("MI")) {
		if _, err := base64.StdEncoding.DecodeString(string(text)); err == nil {
			return exp.refuse(protocol.CodeCSRRejected, "base64 text; send the decoded DER bytes")
		}
	}
	var seq asn1.RawValue
	if _, err := asn1.Unmarshal(der, &seq); err != nil || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence {
		return exp.refuse(protocol.CodeCSRRejected, "not DER: a CSR is an ASN.1 SEQUENCE")
	}
	return nil
}

func matchReported(exp Expectation, pub crypto.PublicKey) error {
	if len(exp.ReportedKey) == 0 {
		return exp.refuse(protocol.CodeKeyMismatch, "no key was reported for this attempt, so the CSR's key cannot be matched")
	}
	reported, err := x509.ParsePKIXPublicKey(exp.ReportedKey)
	if err != nil {
		return exp.refuse(protocol.CodeKeyMismatch, "the key reported for this attempt is unreadable: %w", err)
	}
	// Compare keys, not encodings: the same key may be encoded in more than one way.
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if k, ok := pub.(equaler); !ok || !k.Equal(reported) {
		return exp.refuse(protocol.CodeKeyMismatch, "the CSR's key (%s) is not the key reported for this attempt (%s)", fingerprint(pub), fingerprint(reported))
	}
	return nil
}

// fingerprint names a key in messages by its subject key identifier.
func fingerprint(pub crypto.PublicKey) string {
	id, err := ca.KeyID(pub)
	if err != nil {
		return fmt.Sprintf("%T", pub)
	}
	return fmt.Sprintf("key id %x", id)
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// Ignored describes the names the CSR asked for, which the certificate will not carry
// as asked; the caller may log it. It is empty when the CSR asked for none.
func (c *CheckedCSR) Ignored() string {
	r := c.Request
	if r == nil {
		return ""
	}
	var parts []string
	if s := r.Subject.String(); s != "" {
		parts = append(parts, "subject "+s)
	}
	if n := len(r.DNSNames) + len(r.EmailAddresses) + len(r.IPAddresses) + len(r.URIs); n > 0 {
		parts = append(parts, fmt.Sprintf("%d subject alternative names", n))
	}
	others := 0
	for _, e := range r.Extensions {
		if !e.Id.Equal(oidSubjectAltName) {
			others++
		}
	}
	if others > 0 {
		parts = append(parts, fmt.Sprintf("%d other requested extensions", others))
	}
	return strings.Join(parts, ", ")
}

// BuildSignRequest makes what the CA signs: the checked CSR's key, and every name from
// id, the identity the profile renders for the approved request's holder. The profile
// must be the one the CSR was checked against; its usages and validity apply.
func BuildSignRequest(c *CheckedCSR, p profile.Profile, id profile.Identity) (ca.SignRequest, error) {
	if c == nil || c.PublicKey == nil {
		return ca.SignRequest{}, errors.New("ra: BuildSignRequest needs a checked CSR")
	}
	exp := Expectation{JobID: c.JobID, Attempt: c.Attempt, Profile: p}
	if p.Name != c.Profile {
		return ca.SignRequest{}, exp.refuse(protocol.CodePolicyViolation, "the CSR was checked against profile %q, not %q", c.Profile, p.Name)
	}
	// Checked again so that no path signs a key the profile does not allow.
	if err := p.AllowsKey(c.PublicKey); err != nil {
		return ca.SignRequest{}, exp.refuse(protocol.CodePolicyViolation, "%w", err)
	}
	u, err := p.Usages()
	if err != nil {
		return ca.SignRequest{}, exp.refuse(protocol.CodePolicyViolation, "profile usages: %w", err)
	}
	id.TokenLabel = "" // not a certificate field
	return ca.SignRequest{
		PublicKey: c.PublicKey,
		Identity:  id,
		Usages:    u,
		Validity:  time.Duration(p.Validity),
		JobID:     c.JobID,
		Attempt:   c.Attempt,
		Profile:   p.Name,
	}, nil
}
