package profile

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// OIDs the standard library has no constant for.
var (
	// OIDSmartcardLogon is the Microsoft smart-card logon extended key usage.
	OIDSmartcardLogon = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 2}
	// OIDUPN is the otherName type of a user principal name SAN.
	OIDUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}
)

var keyUsages = map[string]x509.KeyUsage{
	"digitalSignature": x509.KeyUsageDigitalSignature,
	"nonRepudiation":   x509.KeyUsageContentCommitment,
	"keyEncipherment":  x509.KeyUsageKeyEncipherment,
	"dataEncipherment": x509.KeyUsageDataEncipherment,
	"keyAgreement":     x509.KeyUsageKeyAgreement,
	"encipherOnly":     x509.KeyUsageEncipherOnly,
	"decipherOnly":     x509.KeyUsageDecipherOnly,
}

var keyUsageAliases = map[string]string{"contentCommitment": "nonRepudiation"}

// caKeyUsages belong to CA certificates; profiles describe end-entity certificates.
var caKeyUsages = map[string]bool{"keyCertSign": true, "cRLSign": true}

// knownEKU maps an EKU name to its OID and, when the standard library has one, its
// constant.
type knownEKU struct {
	oid asn1.ObjectIdentifier
	std x509.ExtKeyUsage // 0 (ExtKeyUsageAny) when there is none; any is never allowed
}

var extKeyUsages = map[string]knownEKU{
	"serverAuth":      {asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}, x509.ExtKeyUsageServerAuth},
	"clientAuth":      {asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}, x509.ExtKeyUsageClientAuth},
	"codeSigning":     {asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 3}, x509.ExtKeyUsageCodeSigning},
	"emailProtection": {asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 4}, x509.ExtKeyUsageEmailProtection},
	"timeStamping":    {asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 8}, x509.ExtKeyUsageTimeStamping},
	"OCSPSigning":     {asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 9}, x509.ExtKeyUsageOCSPSigning},
	"smartcardLogon":  {OIDSmartcardLogon, 0},
}

var oidAnyEKU = asn1.ObjectIdentifier{2, 5, 29, 37, 0}

// canonicalKeyUsage returns the canonical name of a key usage or an error saying why it
// is refused.
func canonicalKeyUsage(name string) (string, error) {
	if alias, ok := keyUsageAliases[name]; ok {
		name = alias
	}
	if _, ok := keyUsages[name]; ok {
		return name, nil
	}
	if caKeyUsages[name] {
		return "", fmt.Errorf("%s is a CA usage; profiles describe end-entity certificates", name)
	}
	return "", fmt.Errorf("unknown key usage %q (known: %s)", name, strings.Join(sortedKeys(keyUsages), ", "))
}

// canonicalExtKeyUsage returns the canonical form of an EKU: its name when it has one,
// else the dotted OID.
func canonicalExtKeyUsage(s string) (string, error) {
	if _, ok := extKeyUsages[s]; ok {
		return s, nil
	}
	if s == "any" || s == "anyExtendedKeyUsage" {
		return "", fmt.Errorf("%s would make the certificate valid for every purpose; name the purposes", s)
	}
	oid, err := parseOID(s)
	if err != nil {
		return "", fmt.Errorf("%q is neither a known extended key usage (%s) nor a dotted OID", s, strings.Join(sortedKeys(extKeyUsages), ", "))
	}
	if oid.Equal(oidAnyEKU) {
		return "", fmt.Errorf("%s is anyExtendedKeyUsage, which would make the certificate valid for every purpose", s)
	}
	for name, k := range extKeyUsages {
		if k.oid.Equal(oid) {
			return name, nil
		}
	}
	return oid.String(), nil
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	fields := strings.Split(s, ".")
	if len(fields) < 2 {
		return nil, fmt.Errorf("too few arcs")
	}
	oid := make(asn1.ObjectIdentifier, len(fields))
	for i, f := range fields {
		if f == "" || (len(f) > 1 && f[0] == '0') {
			return nil, fmt.Errorf("bad arc %q", f)
		}
		n, err := strconv.ParseUint(f, 10, 31)
		if err != nil {
			return nil, fmt.Errorf("bad arc %q", f)
		}
		oid[i] = int(n)
	}
	if oid[0] > 2 || (oid[0] < 2 && oid[1] >= 40) {
		return nil, fmt.Errorf("bad first arcs")
	}
	return oid, nil
}

// Usages is what a profile puts into a certificate's key usage and extended key usage
// extensions.
type Usages struct {
	KeyUsage           x509.KeyUsage
	ExtKeyUsage        []x509.ExtKeyUsage
	UnknownExtKeyUsage []asn1.ObjectIdentifier // smartcardLogon and dotted OIDs
}

// Usages maps the profile's usage names to x509 values.
func (p Profile) Usages() (Usages, error) {
	ps := problems{profile: p.Name}
	var u Usages
	for i, name := range p.KeyUsage {
		c, err := canonicalKeyUsage(name)
		if err != nil {
			ps.invalid(fmt.Sprintf("key_usage[%d]", i), "%v", err)
			continue
		}
		u.KeyUsage |= keyUsages[c]
	}
	for i, s := range p.ExtKeyUsage {
		c, err := canonicalExtKeyUsage(s)
		if err != nil {
			ps.invalid(fmt.Sprintf("extended_key_usage[%d]", i), "%v", err)
			continue
		}
		if k, ok := extKeyUsages[c]; ok && k.std != 0 {
			u.ExtKeyUsage = append(u.ExtKeyUsage, k.std)
		} else if ok {
			u.UnknownExtKeyUsage = append(u.UnknownExtKeyUsage, k.oid)
		} else {
			oid, _ := parseOID(c) // canonicalExtKeyUsage parsed it
			u.UnknownExtKeyUsage = append(u.UnknownExtKeyUsage, oid)
		}
	}
	if len(ps.errs) > 0 {
		return Usages{}, errors.Join(ps.errs...)
	}
	return u, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
