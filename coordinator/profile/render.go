package profile

import (
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Identity is what a profile gives for one holder: the certificate's subject and SAN
// values, and the token label. The CA encodes them into the certificate (the UPN as an
// otherName of type OIDUPN).
type Identity struct {
	Subject    pkix.Name
	Emails     []string
	UPNs       []string
	DNSNames   []string
	TokenLabel string // empty unless the profile initialises the token
}

// subjectAttr describes one subject attribute: its YAML name, its templates, the check
// of a rendered value, and where the value goes.
type subjectAttr struct {
	name      string
	templates []string
	multi     bool
	check     func(string) error
	set       func(n *pkix.Name, vs []string)
}

// Upper bounds from RFC 5280 (ub-*); country is the two-letter ISO 3166 code.
func subjectAttrs(s Subject) []subjectAttr {
	one := func(t string) []string {
		if t == "" {
			return nil
		}
		return []string{t}
	}
	return []subjectAttr{
		{"common_name", one(s.CommonName), false, maxLen(64), func(n *pkix.Name, v []string) { n.CommonName = v[0] }},
		{"organization", s.Organization, true, maxLen(64), func(n *pkix.Name, v []string) { n.Organization = v }},
		{"organizational_unit", s.OrganizationalUnit, true, maxLen(64), func(n *pkix.Name, v []string) { n.OrganizationalUnit = v }},
		{"country", s.Country, true, countryCode, func(n *pkix.Name, v []string) { n.Country = v }},
		{"province", s.Province, true, maxLen(128), func(n *pkix.Name, v []string) { n.Province = v }},
		{"locality", s.Locality, true, maxLen(128), func(n *pkix.Name, v []string) { n.Locality = v }},
		{"street_address", s.StreetAddress, true, maxLen(128), func(n *pkix.Name, v []string) { n.StreetAddress = v }},
		{"postal_code", s.PostalCode, true, maxLen(40), func(n *pkix.Name, v []string) { n.PostalCode = v }},
		{"serial_number", one(s.SerialNumber), false, maxLen(64), func(n *pkix.Name, v []string) { n.SerialNumber = v[0] }},
	}
}

func maxLen(n int) func(string) error {
	return func(v string) error {
		if c := utf8.RuneCountInString(v); c > n {
			return fmt.Errorf("%q is %d characters, at most %d", v, c, n)
		}
		return nil
	}
}

func countryCode(v string) error {
	if len(v) != 2 || v[0] < 'A' || v[0] > 'Z' || v[1] < 'A' || v[1] > 'Z' {
		return fmt.Errorf("%q is not a two-letter country code such as FR", v)
	}
	return nil
}

// Render fills the profile's templates from the holder's attributes. Every missing
// attribute is reported (code missing_holder_attribute, naming the attribute, the field
// and the profile), as is every value a certificate cannot carry (code
// invalid_holder_attribute).
func (p Profile) Render(h Holder) (Identity, error) {
	ps := &problems{profile: p.Name}
	var id Identity
	render := func(field, tmpl string, check func(string) error) (string, bool) {
		parts, err := parseTemplate(tmpl)
		if err != nil {
			ps.invalid(field, "%v", err)
			return "", false
		}
		v, missing := execute(parts, h)
		for _, m := range missing {
			ps.add(CodeMissingAttribute, field, "holder %q has no %s, which the template %q needs", h.ID, m, tmpl)
		}
		if len(missing) > 0 {
			return "", false
		}
		if !utf8.ValidString(v) || strings.IndexFunc(v, unicode.IsControl) >= 0 {
			ps.add(CodeInvalidAttribute, field, "holder %q: rendered value %q holds control characters or invalid UTF-8", h.ID, v)
			return "", false
		}
		if check != nil {
			if err := check(v); err != nil {
				ps.add(CodeInvalidAttribute, field, "holder %q: %v", h.ID, err)
				return "", false
			}
		}
		return v, true
	}

	for _, a := range subjectAttrs(p.Subject) {
		var vs []string
		for i, tmpl := range a.templates {
			field := "subject." + a.name
			if a.multi {
				field = fmt.Sprintf("%s[%d]", field, i)
			}
			if v, ok := render(field, tmpl, a.check); ok {
				vs = append(vs, v)
			}
		}
		if len(vs) == len(a.templates) && len(vs) > 0 {
			a.set(&id.Subject, vs)
		}
	}
	if p.SANs.Email != "" {
		if v, ok := render("sans.email", p.SANs.Email, checkEmail); ok {
			id.Emails = []string{v}
		}
	}
	if p.SANs.UPN != "" {
		if v, ok := render("sans.upn", p.SANs.UPN, checkUPN); ok {
			id.UPNs = []string{v}
		}
	}
	for i, tmpl := range p.SANs.DNS {
		if v, ok := render(fmt.Sprintf("sans.dns[%d]", i), tmpl, checkDNSName); ok {
			if v = strings.ToLower(v); !slices.Contains(id.DNSNames, v) {
				id.DNSNames = append(id.DNSNames, v)
			}
		}
	}
	if p.Token.Initialize && p.Token.Label != "" {
		if v, ok := render("token.label", p.Token.Label, nil); ok {
			id.TokenLabel = truncateLabel(v)
		}
	}
	if len(ps.errs) > 0 {
		return Identity{}, errors.Join(ps.errs...)
	}
	return id, nil
}

// checkEmail accepts a bare ASCII address: an rfc822Name SAN is an IA5String.
func checkEmail(v string) error {
	a, err := mail.ParseAddress(v)
	if err != nil || a.Address != v || a.Name != "" {
		return fmt.Errorf("%q is not an e-mail address", v)
	}
	for _, r := range v {
		if r > unicode.MaxASCII {
			return fmt.Errorf("%q is not ASCII; an e-mail SAN cannot carry it", v)
		}
	}
	return nil
}

func checkUPN(v string) error {
	user, domain, ok := strings.Cut(v, "@")
	if !ok || user == "" || domain == "" || strings.Contains(domain, "@") || strings.ContainsFunc(v, unicode.IsSpace) {
		return fmt.Errorf("%q is not a user principal name (user@domain)", v)
	}
	return nil
}

// checkDNSName accepts a host name in ASCII (an IDN must be given in punycode); wildcards
// are refused: a token key is for one named host.
func checkDNSName(v string) error {
	if len(v) > 253 {
		return fmt.Errorf("DNS name %q is longer than 253 characters", v)
	}
	for _, label := range strings.Split(v, ".") {
		ok := len(label) >= 1 && len(label) <= 63 && label[0] != '-' && label[len(label)-1] != '-'
		for _, r := range label {
			if !isAlnum(r) && r != '-' {
				ok = false
			}
		}
		if !ok {
			return fmt.Errorf("%q is not a DNS host name (letters, digits and '-' in dot-separated labels; no wildcard)", v)
		}
	}
	return nil
}

// truncateLabel cuts a label to MaxTokenLabel bytes without splitting a character: the
// label is a display name, and refusing issuance for a long holder name would help nobody.
func truncateLabel(v string) string {
	if len(v) <= MaxTokenLabel {
		return v
	}
	cut := MaxTokenLabel
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return strings.TrimRight(v[:cut], " ")
}

// Canonical returns a stable JSON form of the identity, for the job binding hash: an
// approval covers exactly this subject, these SANs and this label.
func (id Identity) Canonical() string {
	s := id.Subject
	// nil and empty lists mean the same: encode both as [].
	l := func(v []string) []string {
		if v == nil {
			return []string{}
		}
		return v
	}
	b, err := json.Marshal(struct {
		CN           string   `json:"cn"`
		O            []string `json:"o"`
		OU           []string `json:"ou"`
		C            []string `json:"c"`
		ST           []string `json:"st"`
		L            []string `json:"l"`
		Street       []string `json:"street"`
		PostalCode   []string `json:"postal_code"`
		SerialNumber string   `json:"serial_number"`
		Emails       []string `json:"emails"`
		UPNs         []string `json:"upns"`
		DNSNames     []string `json:"dns"`
		TokenLabel   string   `json:"token_label"`
	}{s.CommonName, l(s.Organization), l(s.OrganizationalUnit), l(s.Country), l(s.Province), l(s.Locality),
		l(s.StreetAddress), l(s.PostalCode), s.SerialNumber, l(id.Emails), l(id.UPNs), l(id.DNSNames), id.TokenLabel})
	if err != nil {
		// Only strings and slices of strings: marshalling cannot fail.
		panic("profile: marshal identity: " + err.Error())
	}
	return string(b)
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}
