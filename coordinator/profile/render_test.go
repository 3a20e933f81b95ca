package profile

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

var ann = Holder{
	ID: "u-1001", Name: "Ann Martin", Email: "ann.martin@acme.example", UPN: "amartin@corp.acme.example",
	Organization: "Acme", Attributes: map[string]string{"hostname": "Web01.acme.example", "department": "R&D"},
}

func TestRender(t *testing.T) {
	src := strings.Replace(base, "subject:\n  common_name: \"{{.Name}}\"\n", `subject:
  common_name: "{{.Name}}"
  organization: "{{.Organization}}"
  organizational_unit: ["{{.Attributes.department}}", Staff]
  country: FR
  locality: Paris
  serial_number: "{{.ID}}"
`, 1)
	src = strings.Replace(src, "  upn: true\n", "  upn: true\n  email: true\n  dns: [\"{{.Attributes.hostname}}\", \"{{.Attributes.hostname}}\", \"vpn-{{.ID}}.acme.example\"]\n", 1)
	src = strings.Replace(src, `label: "{{.Name}}"`, `label: "{{.Name}} - {{.Organization}} - {{.Attributes.department}} token"`, 1)
	p := loadOne(t, src)
	id, err := p.Render(ann)
	if err != nil {
		t.Fatal(err)
	}
	s := id.Subject
	if s.CommonName != "Ann Martin" || !reflect.DeepEqual(s.Organization, []string{"Acme"}) ||
		!reflect.DeepEqual(s.OrganizationalUnit, []string{"R&D", "Staff"}) || !reflect.DeepEqual(s.Country, []string{"FR"}) ||
		!reflect.DeepEqual(s.Locality, []string{"Paris"}) || s.SerialNumber != "u-1001" || s.Province != nil {
		t.Errorf("subject %+v", s)
	}
	if !reflect.DeepEqual(id.Emails, []string{"ann.martin@acme.example"}) || !reflect.DeepEqual(id.UPNs, []string{"amartin@corp.acme.example"}) {
		t.Errorf("SANs %v %v", id.Emails, id.UPNs)
	}
	// DNS names are lower-cased and deduplicated.
	if !reflect.DeepEqual(id.DNSNames, []string{"web01.acme.example", "vpn-u-1001.acme.example"}) {
		t.Errorf("DNS %v", id.DNSNames)
	}
	// "Ann Martin - Acme - R&D token" is 29 bytes: fits.
	if id.TokenLabel != "Ann Martin - Acme - R&D token" {
		t.Errorf("label %q", id.TokenLabel)
	}
	if got := s.String(); got != "SERIALNUMBER=u-1001,CN=Ann Martin,OU=R&D+OU=Staff,O=Acme,L=Paris,C=FR" {
		t.Errorf("subject DN %s", got)
	}
}

func TestRenderTokenLabelTruncated(t *testing.T) {
	p := loadOne(t, base)
	h := ann
	h.Name = "Anne-Élisabeth Marie-Thérèse de la Tour"
	id, err := p.Render(h)
	if err != nil {
		t.Fatal(err)
	}
	if len(id.TokenLabel) > MaxTokenLabel || !strings.HasPrefix(h.Name, id.TokenLabel) || id.TokenLabel != "Anne-Élisabeth Marie-Thérèse" {
		t.Errorf("label %q (%d bytes)", id.TokenLabel, len(id.TokenLabel))
	}
	if id.Subject.CommonName != h.Name {
		t.Errorf("CN %q", id.Subject.CommonName)
	}
}

func TestRenderMissingAttributes(t *testing.T) {
	src := strings.Replace(base, "  upn: true\n", "  upn: true\n  email: true\n  dns: [\"{{.Attributes.hostname}}\"]\n", 1)
	p := loadOne(t, src)
	h := Holder{ID: "u-7", Name: "  ", Email: "b@acme.example"} // blank name counts as missing
	_, err := p.Render(h)
	if !errors.Is(err, ErrMissingAttribute) {
		t.Fatalf("got %v", err)
	}
	for _, want := range []string{
		`profile "test-profile": subject.common_name: holder "u-7" has no Name, which the template "{{.Name}}" needs`,
		`profile "test-profile": sans.upn: holder "u-7" has no UPN`,
		`profile "test-profile": sans.dns[0]: holder "u-7" has no Attributes.hostname`,
		`profile "test-profile": token.label: holder "u-7" has no Name`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error:\n%v\nlacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "sans.email") {
		t.Errorf("email reported though present: %v", err)
	}
}

func TestRenderInvalidValues(t *testing.T) {
	tests := []struct {
		name   string
		repl   [2]string
		holder func(h *Holder)
		want   string
	}{
		{"country from attribute", [2]string{`common_name: "{{.Name}}"`, `common_name: "{{.Name}}"` + "\n  country: \"{{.Attributes.country}}\""},
			func(h *Holder) { h.Attributes = map[string]string{"country": "France"} }, `subject.country[0]: holder "u-1001": "France" is not a two-letter country code`},
		{"CN too long", [2]string{"", ""}, func(h *Holder) { h.Name = strings.Repeat("n", 65) }, "subject.common_name: holder \"u-1001\": \"" + strings.Repeat("n", 65) + "\" is 65 characters, at most 64"},
		{"control character", [2]string{"", ""}, func(h *Holder) { h.Name = "Ann\nMartin" }, "subject.common_name: holder \"u-1001\": rendered value \"Ann\\nMartin\" holds control characters"},
		{"bad UPN", [2]string{"", ""}, func(h *Holder) { h.UPN = "amartin" }, `sans.upn: holder "u-1001": "amartin" is not a user principal name`},
		{"UPN with two @", [2]string{"", ""}, func(h *Holder) { h.UPN = "a@b@c" }, `"a@b@c" is not a user principal name`},
		{"bad email", [2]string{"upn: true", "email: true"}, func(h *Holder) { h.Email = "Ann <ann@acme.example>" }, `sans.email: holder "u-1001": "Ann <ann@acme.example>" is not an e-mail address`},
		{"non-ASCII email", [2]string{"upn: true", "email: true"}, func(h *Holder) { h.Email = "anaïs@acme.example" }, "is not ASCII"},
		{"wildcard DNS", [2]string{"upn: true", `dns: ["{{.Attributes.hostname}}"]`}, func(h *Holder) { h.Attributes = map[string]string{"hostname": "*.acme.example"} }, `sans.dns[0]: holder "u-1001": "*.acme.example" is not a DNS host name`},
		{"DNS label with leading hyphen", [2]string{"upn: true", `dns: ["{{.Attributes.hostname}}"]`}, func(h *Holder) { h.Attributes = map[string]string{"hostname": "-web.acme.example"} }, "is not a DNS host name"},
		{"DNS empty label", [2]string{"upn: true", `dns: ["{{.Attributes.hostname}}"]`}, func(h *Holder) { h.Attributes = map[string]string{"hostname": "web..example"} }, "is not a DNS host name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := loadOne(t, strings.Replace(base, tt.repl[0], tt.repl[1], 1))
			h := ann
			tt.holder(&h)
			_, err := p.Render(h)
			if !errors.Is(err, ErrInvalidAttribute) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want invalid_holder_attribute with %q", err, tt.want)
			}
		})
	}
}

func TestIdentityCanonical(t *testing.T) {
	p := loadOne(t, base)
	a, err := p.Render(ann)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.Render(ann)
	if a.Canonical() != b.Canonical() {
		t.Fatal("canonical form is not deterministic")
	}
	// nil and empty lists are the same identity.
	c := a
	c.Emails = []string{}
	if c.Canonical() != a.Canonical() {
		t.Error("empty and nil lists differ")
	}
	for name, change := range map[string]func(id *Identity){
		"cn":    func(id *Identity) { id.Subject.CommonName = "Bob" },
		"ou":    func(id *Identity) { id.Subject.OrganizationalUnit = []string{"x"} },
		"upn":   func(id *Identity) { id.UPNs = []string{"bob@corp"} },
		"dns":   func(id *Identity) { id.DNSNames = []string{"h"} },
		"label": func(id *Identity) { id.TokenLabel = "other" },
	} {
		d := a
		change(&d)
		if d.Canonical() == a.Canonical() {
			t.Errorf("changing %s keeps the canonical form", name)
		}
	}
}
