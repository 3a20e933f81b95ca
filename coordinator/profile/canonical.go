package profile

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Normalized returns a copy in normal form: allowed_keys filled with the profile's key
// when empty, key and extended key usages by canonical name (an OID with a name becomes
// the name) in sorted order, allowed keys and approval roles sorted, scope defaulted to
// organization. Two profiles that mean the same thing have the same normal form. Names
// this package does not know are kept as they are (Validate reports them).
func (p Profile) Normalized() Profile {
	n := p
	n.AllowedKeys = slices.Clone(p.allowedKeys())
	slices.SortFunc(n.AllowedKeys, func(a, b KeySpec) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Size, b.Size), cmp.Compare(a.Curve, b.Curve))
	})
	n.KeyUsage = canonicalList(p.KeyUsage, canonicalKeyUsage)
	n.ExtKeyUsage = canonicalList(p.ExtKeyUsage, canonicalExtKeyUsage)
	n.Approval.Roles = slices.Clone(p.Approval.Roles)
	slices.Sort(n.Approval.Roles)
	if n.Approval.Scope == "" {
		n.Approval.Scope = "organization"
	}
	s := &n.Subject
	s.CommonName, s.SerialNumber = canonicalTemplate(s.CommonName), canonicalTemplate(s.SerialNumber)
	for _, l := range []*Templates{&s.Organization, &s.OrganizationalUnit, &s.Country, &s.Province, &s.Locality, &s.StreetAddress, &s.PostalCode, &n.SANs.DNS} {
		*l = canonicalTemplates(*l)
	}
	n.SANs.Email, n.SANs.UPN = canonicalTemplate(n.SANs.Email), canonicalTemplate(n.SANs.UPN)
	n.Token.Label = canonicalTemplate(n.Token.Label)
	return n
}

// canonicalTemplate writes placeholders without inner spaces ("{{ .Name }}" becomes
// "{{.Name}}"); a template that does not parse is kept as it is.
func canonicalTemplate(t string) string {
	parts, err := parseTemplate(t)
	if err != nil {
		return t
	}
	var b strings.Builder
	for _, p := range parts {
		if p.field != "" {
			b.WriteString("{{." + p.field + "}}")
			continue
		}
		b.WriteString(p.lit)
	}
	return b.String()
}

func canonicalTemplates(ts Templates) Templates {
	if ts == nil {
		return nil
	}
	out := make(Templates, len(ts))
	for i, t := range ts {
		out[i] = canonicalTemplate(t)
	}
	return out
}

func canonicalList(in []string, canon func(string) (string, error)) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if c, err := canon(s); err == nil {
			s = c
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Canonical returns the canonical serialisation of the profile: JSON of its normal form,
// fields in declaration order, no insignificant whitespace.
func (p Profile) Canonical() ([]byte, error) {
	b, err := json.Marshal(p.Normalized())
	if err != nil {
		return nil, fmt.Errorf("profile %q: canonical form: %w", p.Name, err)
	}
	return b, nil
}

// Hash returns the hex SHA-256 of the canonical form; approvals are bound to it.
func (p Profile) Hash() (string, error) {
	b, err := p.Canonical()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// AllowsKey checks a public key (from a CSR) against the profile's allowed keys; a
// refusal has code key_not_allowed and names what was found and what is allowed.
func (p Profile) AllowsKey(pub any) error {
	var got KeySpec
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return &Error{Code: CodeKeyNotAllowed, Profile: p.Name, Field: "allowed_keys", Msg: "empty RSA public key"}
		}
		got = KeySpec{Type: KeyRSA, Size: k.N.BitLen()}
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return &Error{Code: CodeKeyNotAllowed, Profile: p.Name, Field: "allowed_keys", Msg: "empty EC public key"}
		}
		got = KeySpec{Type: KeyEC}
		switch k.Curve {
		case elliptic.P256():
			got.Curve = "P-256"
		case elliptic.P384():
			got.Curve = "P-384"
		default:
			got.Curve = k.Curve.Params().Name
		}
	default:
		return &Error{Code: CodeKeyNotAllowed, Profile: p.Name, Field: "allowed_keys", Msg: fmt.Sprintf("unsupported public key type %T", pub)}
	}
	allowed := p.allowedKeys()
	if slices.Contains(allowed, got) {
		return nil
	}
	names := make([]string, len(allowed))
	for i, k := range allowed {
		names[i] = k.String()
	}
	return &Error{Code: CodeKeyNotAllowed, Profile: p.Name, Field: "allowed_keys", Msg: fmt.Sprintf("key %s is not allowed (%s)", got, strings.Join(names, ", "))}
}
