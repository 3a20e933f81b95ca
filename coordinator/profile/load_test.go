package profile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// base is a valid profile; tests change it line by line.
const base = `name: test-profile
description: a test profile
key: {type: rsa, size: 2048}
subject:
  common_name: "{{.Name}}"
sans:
  upn: true
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 365d
token:
  initialize: true
  label: "{{.Name}}"
pin_policy: {min_length: 6, max_length: 8, so_pin_length: 16}
approval: {required: 1, roles: [approver], expires_after: 72h}
`

func loadOne(t *testing.T, src string) Profile {
	t.Helper()
	ps, err := Load(strings.NewReader(src))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if len(ps) != 1 {
		t.Fatalf("loaded %d profiles, want 1", len(ps))
	}
	return ps[0]
}

func TestLoadBase(t *testing.T) {
	p := loadOne(t, base)
	if p.Name != "test-profile" || p.Key != (KeySpec{Type: KeyRSA, Size: 2048}) || p.SANs.UPN != "{{.UPN}}" ||
		time.Duration(p.Validity) != 365*24*time.Hour || p.Approval.Scope != "organization" ||
		len(p.AllowedKeys) != 1 || p.AllowedKeys[0] != p.Key {
		t.Fatalf("loaded %+v", p)
	}
}

func TestLoadStrict(t *testing.T) {
	tests := []struct {
		name   string
		src    string
		wantIn string
	}{
		{"unknown top-level field", base + "colour: blue\n", "field colour not found"},
		{"unknown nested field", strings.Replace(base, "key: {type: rsa, size: 2048}", "key: {type: rsa, size: 2048, exponent: 3}", 1), "field exponent not found"},
		{"unknown sans field", strings.Replace(base, "  upn: true", "  upn: true\n  ip: 10.0.0.1", 1), "field ip not found in sans"},
		{"sans key twice", strings.Replace(base, "  upn: true", "  upn: true\n  upn: false", 1), "sans.upn given twice"},
		{"sans wrong type", strings.Replace(base, "  upn: true", "  upn: [a]", 1), "sans.upn must be true, false or a template"},
		{"duration without unit", strings.Replace(base, "validity: 365d", "validity: 365", 1), "needs a unit"},
		{"fractional days", strings.Replace(base, "validity: 365d", "validity: 1.5d", 1), "whole number"},
		{"garbage duration", strings.Replace(base, "validity: 365d", "validity: soon", 1), `"soon"`},
		{"list of non-strings", strings.Replace(base, `  common_name: "{{.Name}}"`, "  organization: [[a]]", 1), "list items must be strings"},
		{"number as template", strings.Replace(base, `  common_name: "{{.Name}}"`, "  organization: 42", 1), "want a string or a list"},
		{"syntax error", base + "key: [\n", "document 1"},
		{"not a mapping", "just text\n", "cannot unmarshal"},
		{"empty input", "", "no profile in input"},
		{"only comments", "# nothing\n", "no profile in input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(strings.NewReader(tt.src))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want invalid_profile", err)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("message %q lacks %q", err, tt.wantIn)
			}
		})
	}
}

func TestLoadMultiDocument(t *testing.T) {
	second := strings.Replace(base, "name: test-profile", "name: second", 1)
	ps, err := Load(strings.NewReader("---\n" + base + "---\n" + second))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Name != "test-profile" || ps[1].Name != "second" {
		t.Fatalf("loaded %d: %+v", len(ps), ps)
	}

	// Problems of every document are reported, each naming its profile or document.
	bad := strings.Replace(base, "size: 2048", "size: 1024", 1)
	unnamed := strings.Replace(base, "name: test-profile\n", "", 1)
	_, err = Load(strings.NewReader(bad + "---\n" + unnamed + "---\n" + base))
	for _, want := range []string{
		`profile "test-profile": key.size: 1024 is not allowed (2048, 3072, 4096)`,
		"profile document 2: name: required",
		`profile "test-profile": name: defined twice (documents 1 and 3)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(base, "validity: 365d", "validity: 0d", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFile(path)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "validity: must be positive") {
		t.Fatalf("got %v", err)
	}
	if _, err := LoadFile(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestTemplatesScalarOrList(t *testing.T) {
	p := loadOne(t, strings.Replace(base, `  common_name: "{{.Name}}"`, "  common_name: \"{{.Name}}\"\n  organization: Acme\n  organizational_unit: [IT, Paris]", 1))
	if len(p.Subject.Organization) != 1 || p.Subject.Organization[0] != "Acme" || len(p.Subject.OrganizationalUnit) != 2 {
		t.Fatalf("subject %+v", p.Subject)
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		str  string
	}{
		{"365d", 365 * 24 * time.Hour, "365d"},
		{"72h", 72 * time.Hour, "3d"},
		{"90m", 90 * time.Minute, "1h30m0s"},
		{"1h30m", 90 * time.Minute, "1h30m0s"},
		{"0d", 0, "0s"},
	}
	for _, tt := range tests {
		d, err := ParseDuration(tt.in)
		if err != nil || time.Duration(d) != tt.want || d.String() != tt.str {
			t.Errorf("%s: %v (%s), %v; want %v (%s)", tt.in, time.Duration(d), d, err, tt.want, tt.str)
		}
	}
	for _, in := range []string{"", "d", "1.5d", "1w", "ten days"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("%q parsed", in)
		}
	}
}
