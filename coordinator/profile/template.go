package profile

import (
	"fmt"
	"strings"
)

// Holder is the person (or service) a certificate is issued to, as the directory knows
// them.
type Holder struct {
	ID           string
	Name         string
	Email        string
	UPN          string
	Organization string
	Attributes   map[string]string // free attributes, e.g. "department", "hostname"
}

// part is one piece of a parsed template: literal text or a placeholder.
type part struct {
	lit   string
	field string // "Name", "Email", ..., or "Attributes.<key>"; empty for literal text
}

var holderFields = []string{"ID", "Name", "Email", "UPN", "Organization"}

// parseTemplate splits s into literal text and placeholders, refusing any placeholder that
// is not a holder attribute.
func parseTemplate(s string) ([]part, error) {
	var parts []part
	for s != "" {
		i := strings.Index(s, "{{")
		if i < 0 {
			parts = append(parts, part{lit: s})
			break
		}
		if i > 0 {
			parts = append(parts, part{lit: s[:i]})
		}
		j := strings.Index(s[i:], "}}")
		if j < 0 {
			return nil, fmt.Errorf("unclosed placeholder %q", s[i:])
		}
		inner := strings.TrimSpace(s[i+2 : i+j])
		field, err := placeholder(inner)
		if err != nil {
			return nil, err
		}
		parts = append(parts, part{field: field})
		s = s[i+j+2:]
	}
	return parts, nil
}

func placeholder(inner string) (string, error) {
	known := "known: {{.ID}}, {{.Name}}, {{.Email}}, {{.UPN}}, {{.Organization}}, {{.Attributes.<key>}}"
	name, ok := strings.CutPrefix(inner, ".")
	if !ok {
		return "", fmt.Errorf("placeholder {{%s}} is not a holder attribute (%s)", inner, known)
	}
	for _, f := range holderFields {
		if name == f {
			return f, nil
		}
	}
	if key, ok := strings.CutPrefix(name, "Attributes."); ok {
		if key == "" || strings.IndexFunc(key, func(r rune) bool {
			return !isAlnum(r) && r != '_' && r != '-'
		}) >= 0 {
			return "", fmt.Errorf("placeholder {{%s}}: attribute key %q must be letters, digits, '_' or '-'", inner, key)
		}
		return name, nil
	}
	return "", fmt.Errorf("placeholder {{%s}} is not a holder attribute (%s)", inner, known)
}

// literal returns the template's text without its placeholders.
func literal(parts []part) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(p.lit)
	}
	return b.String()
}

// lookup returns the holder's value for a placeholder field, blank-trimmed.
func (h Holder) lookup(field string) string {
	var v string
	switch field {
	case "ID":
		v = h.ID
	case "Name":
		v = h.Name
	case "Email":
		v = h.Email
	case "UPN":
		v = h.UPN
	case "Organization":
		v = h.Organization
	default:
		v = h.Attributes[strings.TrimPrefix(field, "Attributes.")]
	}
	return strings.TrimSpace(v)
}

// execute fills the template; it returns the names of the placeholders the holder lacks.
func execute(parts []part, h Holder) (string, []string) {
	var b strings.Builder
	var missing []string
	for _, p := range parts {
		if p.field == "" {
			b.WriteString(p.lit)
			continue
		}
		v := h.lookup(p.field)
		if v == "" {
			missing = append(missing, p.field)
		}
		b.WriteString(v)
	}
	return b.String(), missing
}
