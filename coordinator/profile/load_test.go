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
		{"unknown top-level field", base + "colour: blue\n",
			`line 16, column 1: profile "test-profile": colour: unknown field "colour" (known fields: name, description, key, allowed_keys, subject, sans, key_usage, extended_key_usage, validity, renew_before, expiry_warning, token, temporary, pin_policy, approval, register, self_service)`},
		{"misspelt field", strings.Replace(base, "approval: {required: 1,", "approval: {requird: 1,", 1),
			`line 15, column 12: profile "test-profile": approval.requird: unknown field "requird"; did you mean "required"? (known fields: required, roles, scope, expires_after, ca_operator_required)`},
		{"unknown nested field", strings.Replace(base, "key: {type: rsa, size: 2048}", "key: {type: rsa, size: 2048, exponent: 3}", 1),
			`line 3, column 30: profile "test-profile": key.exponent: unknown field "exponent" (known fields: type, size, curve, origin, escrow)`},
		{"unknown field in a list item", strings.Replace(base, "key: {type: rsa, size: 2048}", "key: {type: rsa, size: 2048}\nallowed_keys:\n  - {type: rsa, size: 2048}\n  - {type: ec, curv: P-256}", 1),
			`line 6, column 16: profile "test-profile": allowed_keys[1].curv: unknown field "curv"; did you mean "curve"? (known fields: type, size, curve, origin, escrow)`},
		{"unknown sans field", strings.Replace(base, "  upn: true", "  upn: true\n  ip: 10.0.0.1", 1),
			`line 8, column 3: profile "test-profile": sans.ip: unknown field "ip" (known fields: email, upn, dns)`},
		{"sans key twice", strings.Replace(base, "  upn: true", "  upn: true\n  upn: false", 1),
			`line 8, column 3: profile "test-profile": sans.upn: given twice (first on line 7): keep one`},
		{"top-level key twice", base + "validity: 30d\n", `line 16, column 1: profile "test-profile": validity: given twice (first on line 10): keep one`},
		{"sans wrong type", strings.Replace(base, "  upn: true", "  upn: [a]", 1),
			`line 7, column 8: profile "test-profile": sans.upn: want true, false or a template, got a list`},
		{"wrong type", strings.Replace(base, "min_length: 6", "min_length: six", 1),
			`line 14, column 26: profile "test-profile": pin_policy.min_length: want a whole number, got text "six"`},
		{"duration without unit", strings.Replace(base, "validity: 365d", "validity: 365", 1),
			`line 10, column 11: profile "test-profile": validity: duration 365 needs a unit, e.g. 365d or 365h`},
		{"fractional days", strings.Replace(base, "validity: 365d", "validity: 1.5d", 1),
			`line 10, column 11: profile "test-profile": validity: duration "1.5d": days must be a whole number, e.g. 365d`},
		{"garbage duration", strings.Replace(base, "validity: 365d", "validity: soon", 1),
			`line 10, column 11: profile "test-profile": validity: duration "soon": want a whole number of days (365d) or a duration like 36h or 90m`},
		{"list of non-strings", strings.Replace(base, `  common_name: "{{.Name}}"`, "  organization: [[a]]", 1),
			`line 5, column 18: profile "test-profile": subject.organization[0]: list items must be text, got a list`},
		{"number as template", strings.Replace(base, `  common_name: "{{.Name}}"`, "  organization: 42", 1),
			`line 5, column 17: profile "test-profile": subject.organization: want text or a list of text, got the number 42 (quote it)`},
		{"syntax error", base + "key: [\n", `line 16, column 1: profile: not valid YAML: `},
		{"tab indentation", strings.Replace(base, "  upn: true", "\tupn: true", 1),
			`line 7, column 1: profile: a tab in the indentation: YAML indents with spaces only; replace the tab with spaces`},
		{"not a mapping", "just text\n", `line 1, column 1: profile document 1: want a mapping of fields (name: value), got text "just text"`},
		{"empty input", "", "profile: no profile in input"},
		{"only comments", "# nothing\n", "profile: no profile in input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(strings.NewReader(tt.src))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want invalid_profile", err)
			}
			// Whole messages are compared; one ending in ": " is a prefix (the rest is the
			// YAML parser's own words).
			if got := err.Error(); got != tt.wantIn && (!strings.HasSuffix(tt.wantIn, ": ") || !strings.HasPrefix(got, tt.wantIn)) {
				t.Errorf("message\n%s\nwant\n%s", got, tt.wantIn)
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
	// Lines count from the start of the input; a missing field is placed at the start of
	// what encloses it.
	for _, want := range []string{
		`line 3, column 24: profile "test-profile": key.size: 1024 is not allowed (2048, 3072, 4096)`,
		"line 17, column 1: profile document 2: name: required",
		`line 32, column 7: profile "test-profile": name: defined twice (documents 1 and 3)`,
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
	want := path + `:10:11: profile "test-profile": validity: must be positive (e.g. 365d)`
	if !errors.Is(err, ErrInvalid) || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
	var pe *Error
	if !errors.As(err, &pe) || pe.File != path || pe.Line != 10 || pe.Col != 11 || pe.Field != "validity" {
		t.Fatalf("error fields %+v", pe)
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
