package ca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"

	"github.com/tokenfleet/tokenfleet/coordinator/profile"
)

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// GeneralName tags (RFC 5280, 4.2.1.6).
const (
	tagOtherName  = 0
	tagRFC822Name = 1
	tagDNSName    = 2
)

// otherName is the body of an otherName GeneralName; the value is [0] EXPLICIT.
type otherName struct {
	TypeID asn1.ObjectIdentifier
	Value  asn1.RawValue
}

// SubjectAltName builds the subject alternative name extension for id: UPNs as otherName
// (profile.OIDUPN, UTF8String), e-mail addresses as rfc822Name, DNS names as dNSName.
// crypto/x509 cannot write otherName, so back ends put this extension in ExtraExtensions
// and leave the template's SAN fields empty. The extension is critical exactly when the
// subject is empty (RFC 5280, 4.1.2.6). ok is false when id has no SAN.
func SubjectAltName(id profile.Identity) (ext pkix.Extension, ok bool, err error) {
	var names []asn1.RawValue
	for _, upn := range id.UPNs {
		// The UTF8String inside an explicit [0].
		s, err := asn1.MarshalWithParams(upn, "utf8")
		if err != nil {
			return pkix.Extension{}, false, fmt.Errorf("UPN %q: %w", upn, err)
		}
		b, err := asn1.MarshalWithParams(otherName{
			TypeID: profile.OIDUPN,
			Value:  asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: s},
		}, fmt.Sprintf("tag:%d", tagOtherName))
		if err != nil {
			return pkix.Extension{}, false, fmt.Errorf("UPN %q: %w", upn, err)
		}
		names = append(names, asn1.RawValue{FullBytes: b})
	}
	for _, e := range id.Emails {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tagRFC822Name, Bytes: []byte(e)})
	}
	for _, d := range id.DNSNames {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tagDNSName, Bytes: []byte(d)})
	}
	if len(names) == 0 {
		return pkix.Extension{}, false, nil
	}
	value, err := asn1.Marshal(names)
	if err != nil {
		return pkix.Extension{}, false, fmt.Errorf("subject alternative names: %w", err)
	}
	return pkix.Extension{Id: oidSubjectAltName, Critical: SubjectEmpty(id.Subject), Value: value}, true, nil
}

// SubjectEmpty reports whether n encodes as an empty distinguished name.
func SubjectEmpty(n pkix.Name) bool {
	return len(n.ToRDNSequence()) == 0
}

// KeyID is the subject key identifier of pub: the leftmost 160 bits of the SHA-256 of
// the subjectPublicKey bits (RFC 7093, section 2, method 1).
func KeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	h := sha256.Sum256(spki.PublicKey.Bytes)
	return h[:20], nil
}

// UPNs reads the UPNs (otherName of type profile.OIDUPN) of c's subject alternative
// names, which crypto/x509 does not parse; a malformed extension gives none.
func UPNs(c *x509.Certificate) []string {
	var out []string
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq []asn1.RawValue
		if rest, err := asn1.Unmarshal(e.Value, &seq); err != nil || len(rest) != 0 {
			return nil
		}
		for _, gn := range seq {
			if gn.Class != asn1.ClassContextSpecific || gn.Tag != tagOtherName || !gn.IsCompound {
				continue
			}
			var typeID asn1.ObjectIdentifier
			rest, err := asn1.Unmarshal(gn.Bytes, &typeID)
			if err != nil || !typeID.Equal(profile.OIDUPN) {
				continue
			}
			var explicit, str asn1.RawValue
			if _, err := asn1.Unmarshal(rest, &explicit); err != nil || explicit.Class != asn1.ClassContextSpecific || explicit.Tag != 0 {
				continue
			}
			if _, err := asn1.Unmarshal(explicit.Bytes, &str); err != nil || str.Tag != asn1.TagUTF8String {
				continue
			}
			out = append(out, string(str.Bytes))
		}
	}
	return out
}
