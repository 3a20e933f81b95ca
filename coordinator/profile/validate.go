package profile

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

// Bounds a profile must respect.
const (
	// MaxValidity is ten years, leap days included.
	MaxValidity = 3653 * 24 * time.Hour
	// MaxApprovalExpiry bounds how long a request or an approval stays valid.
	MaxApprovalExpiry = 90 * 24 * time.Hour
	// MinPINLength and MaxPINLength bound user and SO PIN lengths.
	MinPINLength = 4
	MaxPINLength = 64
	// MaxTokenLabel is the PKCS#11 token label size in bytes.
	MaxTokenLabel = 32

	maxDescription = 1024
	maxModel       = 64
)

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$`)
	rsaSizes = []int{2048, 3072, 4096}
	ecCurves = []string{"P-256", "P-384"}
)

// Validate checks the profile and returns every problem found, each an *Error naming the
// profile and the field path, joined with errors.Join.
func (p Profile) Validate() error { return p.validateIn(0, nil) }

// validateIn validates a profile read from document doc of a YAML file, locating each
// problem in it.
func (p Profile) validateIn(doc int, src *yamlstrict.Doc) error {
	ps := &problems{profile: p.Name, doc: doc, src: src}

	switch {
	case p.Name == "":
		ps.invalid("name", "required")
	case !nameRE.MatchString(p.Name):
		ps.invalid("name", "%q is not a slug (a-z, 0-9 and '-', at most 64 characters, no leading or trailing '-')", p.Name)
	}
	if n := utf8.RuneCountInString(p.Description); n > maxDescription {
		ps.invalid("description", "%d characters, at most %d", n, maxDescription)
	}

	keyOK := validateKey(ps, "key", p.Key)
	for i, k := range p.AllowedKeys {
		field := fmt.Sprintf("allowed_keys[%d]", i)
		if k.Origin != OriginToken || k.Escrow {
			ps.invalid(field, "origin and escrow belong to the profile's key, not to allowed_keys")
		}
		if validateKey(ps, field, k) && slices.Index(p.AllowedKeys, k) < i {
			ps.invalid(field, "%s listed twice", k)
		}
	}
	if keyOK && len(p.AllowedKeys) > 0 && !slices.Contains(p.AllowedKeys, p.Key.Algorithm()) {
		ps.invalid("allowed_keys", "does not include the profile's own key %s", p.Key)
	}

	validateNames(ps, p)
	validateUsages(ps, p)

	switch v := time.Duration(p.Validity); {
	case v <= 0:
		ps.invalid("validity", "must be positive (e.g. 365d)")
	case v > MaxValidity:
		ps.invalid("validity", "%s exceeds the maximum of %s", p.Validity, Duration(MaxValidity))
	case v%time.Second != 0:
		ps.invalid("validity", "%s is not a whole number of seconds", p.Validity)
	}

	switch rb := time.Duration(p.RenewBefore); {
	case rb < 0:
		ps.invalid("renew_before", "must be positive (e.g. 30d), or left out for no standing renewals")
	case rb > 0 && rb >= time.Duration(p.Validity) && p.Validity > 0:
		ps.invalid("renew_before", "%s is not below the validity %s: every certificate would be due for renewal as soon as it is issued; give less (e.g. a third of it)", p.RenewBefore, p.Validity)
	case rb%time.Second != 0:
		ps.invalid("renew_before", "%s is not a whole number of seconds", p.RenewBefore)
	}

	switch ew := time.Duration(p.ExpiryWarning); {
	case ew < 0:
		ps.invalid("expiry_warning", "must be positive (e.g. 30d), or left out for no expiry warnings")
	case ew > 0 && ew >= time.Duration(p.Validity) && p.Validity > 0:
		ps.invalid("expiry_warning", "%s is not below the validity %s: every certificate would be expiring as soon as it is issued; give less (e.g. 30d)", p.ExpiryWarning, p.Validity)
	case ew%time.Second != 0:
		ps.invalid("expiry_warning", "%s is not a whole number of seconds", p.ExpiryWarning)
	}

	if p.Temporary != nil {
		switch v := time.Duration(p.Temporary.Validity); {
		case v <= 0:
			ps.invalid("temporary.validity", "must be positive (e.g. 7d), or leave temporary out: the profile then issues no temporary tokens")
		case v > time.Duration(p.Validity) && p.Validity > 0:
			ps.invalid("temporary.validity", "%s is longer than the validity %s: a temporary certificate is the short one", p.Temporary.Validity, p.Validity)
		case v%time.Second != 0:
			ps.invalid("temporary.validity", "%s is not a whole number of seconds", p.Temporary.Validity)
		}
	}

	validateEscrow(ps, p)
	validateToken(ps, p)
	validatePIN(ps, p)
	validateApproval(ps, p.Approval)
	switch p.Register.Document {
	case DocumentNone, DocumentOptional, DocumentRequired:
	default:
		ps.invalid("register.document", "%q is not allowed (required, optional, or leave it out)", p.Register.Document)
	}
	return errors.Join(ps.errs...)
}

// validateKey reports whether k is a valid key spec, recording problems otherwise.
func validateKey(ps *problems, field string, k KeySpec) bool {
	n := len(ps.errs)
	switch k.Type {
	case KeyRSA:
		if !slices.Contains(rsaSizes, k.Size) {
			ps.invalid(field+".size", "%d is not allowed (2048, 3072, 4096)", k.Size)
		}
		if k.Curve != "" {
			ps.invalid(field+".curve", "an rsa key has no curve")
		}
	case KeyEC:
		if !slices.Contains(ecCurves, k.Curve) {
			ps.invalid(field+".curve", "%q is not allowed (P-256, P-384)", k.Curve)
		}
		if k.Size != 0 {
			ps.invalid(field+".size", "an ec key's size comes from its curve; give curve only")
		}
	case "":
		ps.invalid(field+".type", "required (rsa or ec)")
	default:
		ps.invalid(field+".type", "%q is not allowed (rsa, ec)", k.Type)
	}
	return len(ps.errs) == n
}

// templateCheck parses a template and checks its literal text against a bound; it returns
// the parsed template or nil.
func templateCheck(ps *problems, field, tmpl string) []part {
	if strings.TrimSpace(tmpl) == "" {
		ps.invalid(field, "empty template")
		return nil
	}
	parts, err := parseTemplate(tmpl)
	if err != nil {
		ps.invalid(field, "%v", err)
		return nil
	}
	if strings.IndexFunc(literal(parts), unicode.IsControl) >= 0 {
		ps.invalid(field, "control characters are not allowed")
		return nil
	}
	return parts
}

func validateNames(ps *problems, p Profile) {
	s := p.Subject
	empty := true
	for _, a := range subjectAttrs(s) {
		for i, tmpl := range a.templates {
			empty = false
			field := "subject." + a.name
			if a.multi {
				field = fmt.Sprintf("%s[%d]", field, i)
			}
			parts := templateCheck(ps, field, tmpl)
			if parts == nil {
				continue
			}
			// Literal-only values can be checked now; rendered ones when rendering.
			if lit := literal(parts); len(parts) == 1 && parts[0].field == "" {
				if err := a.check(lit); err != nil {
					ps.invalid(field, "%v", err)
				}
			}
		}
	}
	if p.SANs.Email != "" {
		empty = false
		templateCheck(ps, "sans.email", p.SANs.Email)
	}
	if p.SANs.UPN != "" {
		empty = false
		templateCheck(ps, "sans.upn", p.SANs.UPN)
	}
	for i, tmpl := range p.SANs.DNS {
		empty = false
		templateCheck(ps, fmt.Sprintf("sans.dns[%d]", i), tmpl)
	}
	if empty {
		ps.invalid("subject", "the profile names nobody: give a subject attribute or a SAN")
	}
}

func validateUsages(ps *problems, p Profile) {
	if len(p.KeyUsage) == 0 {
		ps.invalid("key_usage", "required (e.g. [digitalSignature])")
	}
	seen := map[string]int{}
	for i, name := range p.KeyUsage {
		field := fmt.Sprintf("key_usage[%d]", i)
		c, err := canonicalKeyUsage(name)
		if err != nil {
			ps.invalid(field, "%v", err)
			continue
		}
		if j, dup := seen[c]; dup {
			ps.invalid(field, "%s repeats key_usage[%d]", name, j)
			continue
		}
		seen[c] = i
	}
	keys := p.allowedKeys()
	// Usages the key algorithm cannot perform would give an unusable certificate.
	for i, name := range p.KeyUsage {
		c, err := canonicalKeyUsage(name)
		if err != nil || seen[c] != i {
			continue
		}
		field := fmt.Sprintf("key_usage[%d]", i)
		for _, k := range keys {
			switch {
			case k.Type == KeyRSA && (c == "keyAgreement" || c == "encipherOnly" || c == "decipherOnly"):
				ps.invalid(field, "%s needs a key-agreement key; %s cannot do it", c, k)
			case k.Type == KeyEC && (c == "keyEncipherment" || c == "dataEncipherment"):
				ps.invalid(field, "%s needs an encryption key; %s cannot do it (use keyAgreement)", c, k)
			}
		}
	}
	_, enc := seen["encipherOnly"]
	_, dec := seen["decipherOnly"]
	_, ka := seen["keyAgreement"]
	if (enc || dec) && !ka {
		ps.invalid("key_usage", "encipherOnly and decipherOnly only qualify keyAgreement, which is missing")
	}
	if enc && dec {
		ps.invalid("key_usage", "encipherOnly and decipherOnly exclude each other")
	}

	if len(p.ExtKeyUsage) == 0 {
		ps.invalid("extended_key_usage", "required: a certificate without one is valid for any purpose")
	}
	seenEKU := map[string]int{}
	for i, s := range p.ExtKeyUsage {
		field := fmt.Sprintf("extended_key_usage[%d]", i)
		c, err := canonicalExtKeyUsage(s)
		if err != nil {
			ps.invalid(field, "%v", err)
			continue
		}
		if j, dup := seenEKU[c]; dup {
			ps.invalid(field, "%s repeats extended_key_usage[%d]", s, j)
			continue
		}
		seenEKU[c] = i
	}
}

func validateToken(ps *problems, p Profile) {
	t := p.Token
	if t.Initialize {
		if t.Label == "" {
			ps.invalid("token.label", "required when token.initialize is true")
		} else if parts := templateCheck(ps, "token.label", t.Label); parts != nil {
			if n := len(literal(parts)); n > MaxTokenLabel {
				ps.invalid("token.label", "fixed text alone is %d bytes; a token label holds %d", n, MaxTokenLabel)
			}
		}
	} else {
		if t.Label != "" {
			ps.invalid("token.label", "only used when token.initialize is true")
		}
		if t.AnyBlank {
			ps.invalid("token.any_blank", "a blank token must be initialised: set token.initialize")
		}
	}
	if utf8.RuneCountInString(t.Model) > maxModel || strings.IndexFunc(t.Model, unicode.IsControl) >= 0 {
		ps.invalid("token.model", "at most %d printable characters", maxModel)
	}
}

func validatePIN(ps *problems, p Profile) {
	pp := p.PINPolicy
	minOK := pp.MinLength >= MinPINLength && pp.MinLength <= MaxPINLength
	if !minOK {
		ps.invalid("pin_policy.min_length", "%d outside %d..%d", pp.MinLength, MinPINLength, MaxPINLength)
	}
	switch {
	case pp.MaxLength < MinPINLength || pp.MaxLength > MaxPINLength:
		ps.invalid("pin_policy.max_length", "%d outside %d..%d", pp.MaxLength, MinPINLength, MaxPINLength)
	case minOK && pp.MaxLength < pp.MinLength:
		ps.invalid("pin_policy.max_length", "%d is below min_length %d", pp.MaxLength, pp.MinLength)
	}
	switch {
	case p.Token.Initialize && (pp.SOPINLength < MinPINLength || pp.SOPINLength > MaxPINLength):
		ps.invalid("pin_policy.so_pin_length", "%d outside %d..%d (the SO PIN is set when the token is initialised)", pp.SOPINLength, MinPINLength, MaxPINLength)
	case !p.Token.Initialize && pp.SOPINLength != 0:
		ps.invalid("pin_policy.so_pin_length", "only used when token.initialize is true")
	}
}

func validateApproval(ps *problems, a Approval) {
	if a.Required < 0 || a.Required > jobs.MaxRequired {
		ps.invalid("approval.required", "%d outside 0..%d", a.Required, jobs.MaxRequired)
	}
	if a.Required > 0 && len(a.Roles) == 0 {
		ps.invalid("approval.roles", "required when approval.required is %d (usually [approver])", a.Required)
	}
	if a.Required == 0 && len(a.Roles) > 0 {
		ps.invalid("approval.roles", "given but approval.required is 0")
	}
	for i, r := range a.Roles {
		field := fmt.Sprintf("approval.roles[%d]", i)
		switch {
		case r == jobs.RoleAuditor:
			ps.invalid(field, "auditor is read-only and cannot approve")
		case !r.WellFormed():
			ps.invalid(field, "%q is neither a built-in role (helpdesk, approver, ca_operator, admin) nor a custom role's name (%s)", r, jobs.CustomRoleNameRule)
		case slices.Index(a.Roles, r) < i:
			ps.invalid(field, "%s listed twice", r)
		}
	}
	if a.Scope != "" && !a.Scope.Valid() {
		ps.invalid("approval.scope", "%q is not allowed (organization, any)", a.Scope)
	}
	gated := a.Required > 0 || a.CAOperatorRequired
	switch e := time.Duration(a.ExpiresAfter); {
	case gated && e <= 0:
		ps.invalid("approval.expires_after", "required when approvals are needed (e.g. 72h)")
	case !gated && e != 0:
		ps.invalid("approval.expires_after", "given but no approval is needed")
	case e > MaxApprovalExpiry:
		ps.invalid("approval.expires_after", "%s exceeds the maximum of %s", a.ExpiresAfter, Duration(MaxApprovalExpiry))
	}
}

// Usages that make a key a signing key, and extended usages only a signing key serves: such
// a key must stay generated on the token, where it never leaves, so it can never be escrowed.
var (
	signingKeyUsages    = []string{"digitalSignature", "nonRepudiation"}
	encryptionKeyUsages = []string{"keyEncipherment", "dataEncipherment", "keyAgreement"}
	signingExtKeyUsages = []string{"clientAuth", "codeSigning", "timeStamping", "OCSPSigning", "smartcardLogon"}
)

// validateEscrow checks key.origin and key.escrow: only an encryption key may be made by
// the server, and such a key is always escrowed (a server-made key kept nowhere would be
// lost with the token, which is what escrow is for).
func validateEscrow(ps *problems, p Profile) {
	k := p.Key
	switch k.Origin {
	case OriginToken:
		if k.Escrow {
			ps.invalid("key.escrow", "a key generated on the token never leaves it and cannot be escrowed; give key.origin: server (encryption keys only), or leave escrow out")
		}
		return
	case OriginServer:
	default:
		ps.invalid("key.origin", "%q is not allowed (server, or leave it out for a key generated on the token)", k.Origin)
		return
	}
	if !k.Escrow {
		ps.invalid("key.escrow", "a key generated by the server must be escrowed: add escrow: true")
	}
	usages := canonicalList(p.KeyUsage, canonicalKeyUsage)
	for _, u := range signingKeyUsages {
		if slices.Contains(usages, u) {
			ps.invalid("key.origin", "%s makes this a signing key; signing keys are generated on the token and are never escrowed: remove %s, or leave key.origin out", u, u)
		}
	}
	if !slices.ContainsFunc(usages, func(u string) bool { return slices.Contains(encryptionKeyUsages, u) }) {
		ps.invalid("key.origin", "only encryption keys are generated by the server and escrowed: key_usage needs keyEncipherment or dataEncipherment (rsa), or keyAgreement (ec)")
	}
	for _, e := range canonicalList(p.ExtKeyUsage, canonicalExtKeyUsage) {
		if slices.Contains(signingExtKeyUsages, e) {
			ps.invalid("key.origin", "extended key usage %s is a signing purpose; an escrowed encryption key cannot serve it", e)
		}
	}
}
