package profile

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateProblems(t *testing.T) {
	type repl struct{ old, new string }
	tests := []struct {
		name  string
		repls []repl
		want  string // full "field: message" text expected in the error
	}{
		{"name missing", []repl{{"name: test-profile\n", ""}}, "name: required"},
		{"name not a slug", []repl{{"name: test-profile", "name: Test_Profile"}}, `name: "Test_Profile" is not a slug`},
		{"rsa 1024", []repl{{"size: 2048", "size: 1024"}}, "key.size: 1024 is not allowed (2048, 3072, 4096)"},
		{"rsa with curve", []repl{{"size: 2048", "size: 2048, curve: P-256"}}, "key.curve: an rsa key has no curve"},
		{"ec bad curve", []repl{{"{type: rsa, size: 2048}", "{type: ec, curve: P-521}"}}, `key.curve: "P-521" is not allowed (P-256, P-384)`},
		{"ec with size", []repl{{"{type: rsa, size: 2048}", "{type: ec, curve: P-256, size: 256}"}}, "key.size: an ec key's size comes from its curve"},
		{"key type", []repl{{"type: rsa", "type: dsa"}}, `key.type: "dsa" is not allowed (rsa, ec)`},
		{"key type missing", []repl{{"key: {type: rsa, size: 2048}", "key: {size: 2048}"}}, "key.type: required (rsa or ec)"},
		{"allowed keys without own key", []repl{{"validity:", "allowed_keys: [{type: rsa, size: 4096}]\nvalidity:"}}, "allowed_keys: does not include the profile's own key rsa-2048"},
		{"allowed keys duplicate", []repl{{"validity:", "allowed_keys: [{type: rsa, size: 2048}, {type: rsa, size: 2048}]\nvalidity:"}}, "allowed_keys[1]: rsa-2048 listed twice"},
		{"allowed key invalid", []repl{{"validity:", "allowed_keys: [{type: rsa, size: 2048}, {type: ec, curve: P-192}]\nvalidity:"}}, `allowed_keys[1].curve: "P-192" is not allowed`},
		{"unknown placeholder", []repl{{`common_name: "{{.Name}}"`, `common_name: "{{.Surname}}"`}}, "subject.common_name: placeholder {{.Surname}} is not a holder attribute"},
		{"function in template", []repl{{`common_name: "{{.Name}}"`, `common_name: "{{upper .Name}}"`}}, "subject.common_name: placeholder {{upper .Name}} is not a holder attribute"},
		{"unclosed placeholder", []repl{{`common_name: "{{.Name}}"`, `common_name: "{{.Name"`}}, "subject.common_name: unclosed placeholder"},
		{"bad attribute key", []repl{{`common_name: "{{.Name}}"`, `common_name: "{{.Attributes.a b}}"`}}, `subject.common_name: placeholder {{.Attributes.a b}}: attribute key "a b" must be letters, digits, '_' or '-'`},
		{"empty template", []repl{{`common_name: "{{.Name}}"`, `common_name: "{{.Name}}"` + "\n  organization: [\" \"]"}}, "subject.organization[0]: empty template"},
		{"literal country", []repl{{`common_name: "{{.Name}}"`, `common_name: "{{.Name}}"` + "\n  country: France"}}, `subject.country[0]: "France" is not a two-letter country code`},
		{"literal CN too long", []repl{{`common_name: "{{.Name}}"`, `common_name: "` + strings.Repeat("x", 65) + `"`}}, "subject.common_name: \"" + strings.Repeat("x", 65) + "\" is 65 characters, at most 64"},
		{"nobody named", []repl{{"subject:\n  common_name: \"{{.Name}}\"\n", ""}, {"sans:\n  upn: true\n", ""}}, "subject: the profile names nobody"},
		{"bad SAN template", []repl{{"upn: true", `upn: "{{.Login}}@corp"`}}, "sans.upn: placeholder {{.Login}}"},
		{"bad DNS template", []repl{{"upn: true", `dns: ["{{.Host}}"]`}}, "sans.dns[0]: placeholder {{.Host}}"},
		{"no key usage", []repl{{"key_usage: [digitalSignature]\n", ""}}, "key_usage: required"},
		{"unknown key usage", []repl{{"[digitalSignature]", "[digitalSignature, sign]"}}, `key_usage[1]: unknown key usage "sign"`},
		{"CA key usage", []repl{{"[digitalSignature]", "[digitalSignature, keyCertSign]"}}, "key_usage[1]: keyCertSign is a CA usage"},
		{"duplicate key usage via alias", []repl{{"[digitalSignature]", "[nonRepudiation, contentCommitment]"}}, "key_usage[1]: contentCommitment repeats key_usage[0]"},
		{"rsa key agreement", []repl{{"[digitalSignature]", "[keyAgreement]"}}, "key_usage[0]: keyAgreement needs a key-agreement key; rsa-2048 cannot do it"},
		{"ec key encipherment", []repl{{"{type: rsa, size: 2048}", "{type: ec, curve: P-256}"}, {"[digitalSignature]", "[digitalSignature, keyEncipherment]"}}, "key_usage[1]: keyEncipherment needs an encryption key; ec-P-256 cannot do it"},
		{"encipherOnly alone", []repl{{"{type: rsa, size: 2048}", "{type: ec, curve: P-256}"}, {"[digitalSignature]", "[encipherOnly]"}}, "key_usage: encipherOnly and decipherOnly only qualify keyAgreement"},
		{"no EKU", []repl{{"extended_key_usage: [clientAuth]\n", ""}}, "extended_key_usage: required"},
		{"unknown EKU", []repl{{"[clientAuth]", "[clientAuth, vpn]"}}, `extended_key_usage[1]: "vpn" is neither a known extended key usage`},
		{"any EKU", []repl{{"[clientAuth]", "[any]"}}, "extended_key_usage[0]: any would make the certificate valid for every purpose"},
		{"any EKU by OID", []repl{{"[clientAuth]", `["2.5.29.37.0"]`}}, "extended_key_usage[0]: 2.5.29.37.0 is anyExtendedKeyUsage"},
		{"bad OID", []repl{{"[clientAuth]", `["1.3.06.1"]`}}, `extended_key_usage[0]: "1.3.06.1" is neither`},
		{"EKU repeated by OID", []repl{{"[clientAuth]", `[clientAuth, "1.3.6.1.5.5.7.3.2"]`}}, "extended_key_usage[1]: 1.3.6.1.5.5.7.3.2 repeats extended_key_usage[0]"},
		{"validity zero", []repl{{"validity: 365d", "validity: 0d"}}, "validity: must be positive"},
		{"validity negative", []repl{{"validity: 365d", "validity: -1h"}}, "validity: must be positive"},
		{"validity too long", []repl{{"validity: 365d", "validity: 3654d"}}, "validity: 3654d exceeds the maximum of 3653d"},
		{"validity sub-second", []repl{{"validity: 365d", "validity: 1500ms"}}, "validity: 1.5s is not a whole number of seconds"},
		{"renew before negative", []repl{{"validity: 365d", "validity: 365d\nrenew_before: -1h"}}, "renew_before: must be positive (e.g. 30d)"},
		{"renew before the validity", []repl{{"validity: 365d", "validity: 365d\nrenew_before: 365d"}}, "renew_before: 365d is not below the validity 365d"},
		{"renew before sub-second", []repl{{"validity: 365d", "validity: 365d\nrenew_before: 1500ms"}}, "renew_before: 1.5s is not a whole number of seconds"},
		{"expiry warning negative", []repl{{"validity: 365d", "validity: 365d\nexpiry_warning: -1h"}}, "expiry_warning: must be positive (e.g. 30d)"},
		{"expiry warning past the validity", []repl{{"validity: 365d", "validity: 365d\nexpiry_warning: 400d"}}, "expiry_warning: 400d is not below the validity 365d"},
		{"temporary validity zero", []repl{{"validity: 365d", "validity: 365d\ntemporary: {validity: 0s}"}}, "temporary.validity: must be positive (e.g. 7d)"},
		{"temporary past the validity", []repl{{"validity: 365d", "validity: 365d\ntemporary: {validity: 400d}"}}, "temporary.validity: 400d is longer than the validity 365d"},
		{"label without initialise", []repl{{"  initialize: true\n", ""}, {", so_pin_length: 16", ""}}, "token.label: only used when token.initialize is true"},
		{"initialise without label", []repl{{"  label: \"{{.Name}}\"\n", ""}}, "token.label: required when token.initialize is true"},
		{"label literal too long", []repl{{`label: "{{.Name}}"`, `label: "` + strings.Repeat("L", 33) + `"`}}, "token.label: fixed text alone is 33 bytes; a token label holds 32"},
		{"any blank without initialise", []repl{{"token:\n  initialize: true\n  label: \"{{.Name}}\"\n", "token: {any_blank: true}\n"}, {", so_pin_length: 16", ""}}, "token.any_blank: a blank token must be initialised"},
		{"pin too short", []repl{{"min_length: 6", "min_length: 3"}}, "pin_policy.min_length: 3 outside 4..64"},
		{"pin max below min", []repl{{"max_length: 8", "max_length: 5"}}, "pin_policy.max_length: 5 is below min_length 6"},
		{"pin max too big", []repl{{"max_length: 8", "max_length: 65"}}, "pin_policy.max_length: 65 outside 4..64"},
		{"pin policy missing", []repl{{"pin_policy: {min_length: 6, max_length: 8, so_pin_length: 16}\n", ""}}, "pin_policy.min_length: 0 outside 4..64"},
		{"SO PIN missing", []repl{{", so_pin_length: 16", ""}}, "pin_policy.so_pin_length: 0 outside 4..64 (the SO PIN is set when the token is initialised)"},
		{"SO PIN without initialise", []repl{{"token:\n  initialize: true\n  label: \"{{.Name}}\"\n", ""}}, "pin_policy.so_pin_length: only used when token.initialize is true"},
		{"approval without roles", []repl{{"roles: [approver], ", ""}}, "approval.roles: required when approval.required is 1"},
		{"roles without approval", []repl{{"required: 1, ", ""}, {", expires_after: 72h", ""}}, "approval.roles: given but approval.required is 0"},
		{"auditor approves", []repl{{"roles: [approver]", "roles: [approver, auditor]"}}, "approval.roles[1]: auditor is read-only and cannot approve"},
		{"malformed role", []repl{{"roles: [approver]", "roles: [Manager]"}}, `approval.roles[0]: "Manager" is neither a built-in role`},
		{"role twice", []repl{{"roles: [approver]", "roles: [approver, approver]"}}, "approval.roles[1]: approver listed twice"},
		{"bad scope", []repl{{"expires_after: 72h", "expires_after: 72h, scope: company"}}, `approval.scope: "company" is not allowed (organization, any)`},
		{"too many approvals", []repl{{"required: 1", "required: 11"}}, "approval.required: 11 outside 0..10"},
		{"no expiry", []repl{{", expires_after: 72h", ""}}, "approval.expires_after: required when approvals are needed"},
		{"expiry too long", []repl{{"expires_after: 72h", "expires_after: 91d"}}, "approval.expires_after: 91d exceeds the maximum of 90d"},
		{"unknown document rule", []repl{{"validity: 365d", "validity: 365d\nregister: {document: always}"}}, `register.document: "always" is not allowed (required, optional, or leave it out)`},
		{"expiry without gate", []repl{{"approval: {required: 1, roles: [approver], expires_after: 72h}", "approval: {expires_after: 72h}"}}, "approval.expires_after: given but no approval is needed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := base
			for _, r := range tt.repls {
				if !strings.Contains(src, r.old) {
					t.Fatalf("fixture lacks %q", r.old)
				}
				src = strings.Replace(src, r.old, r.new, 1)
			}
			_, err := Load(strings.NewReader(src))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want invalid_profile", err)
			}
			prefix := `profile "test-profile": `
			if tt.name == "name missing" {
				prefix = "profile document 1: "
			}
			if tt.name == "name not a slug" {
				prefix = `profile "Test_Profile": `
			}
			if !strings.Contains(err.Error(), prefix+tt.want) {
				t.Errorf("error:\n%v\nlacks:\n%s%s", err, prefix, tt.want)
			}
		})
	}
}

func TestValidateReportsEverythingAtOnce(t *testing.T) {
	src := strings.NewReplacer("size: 2048", "size: 1024", "validity: 365d", "validity: 0d", "min_length: 6", "min_length: 2", "roles: [approver]", "roles: [auditor]").Replace(base)
	_, err := Load(strings.NewReader(src))
	for _, field := range []string{"key.size", "validity", "pin_policy.min_length", "approval.roles[0]"} {
		if err != nil && strings.Contains(err.Error(), ": "+field+": ") {
			continue
		}
		t.Errorf("error does not report %s: %v", field, err)
	}
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodeInvalidProfile || pe.Profile != "test-profile" || pe.Field == "" {
		t.Errorf("first problem %#v", pe)
	}
}

func TestValidateOnGoValue(t *testing.T) {
	// A profile built in code (not loaded) validates the same way; the zero value names
	// everything that is missing.
	err := Profile{}.Validate()
	for _, want := range []string{"name: required", "key.type: required", "key_usage: required", "validity: must be positive", "subject: the profile names nobody"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("zero profile: %v lacks %q", err, want)
		}
	}
	p := loadOne(t, base)
	if err := p.Validate(); err != nil {
		t.Errorf("loaded profile does not validate again: %v", err)
	}
}

func TestTemporaryValidity(t *testing.T) {
	p, err := Load(strings.NewReader(strings.Replace(base, "validity: 365d", "validity: 365d\ntemporary: {validity: 7d}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := p[0].CertificateValidity(true); got != 7*24*time.Hour {
		t.Errorf("temporary validity %s", got)
	}
	if got := p[0].CertificateValidity(false); got != 365*24*time.Hour {
		t.Errorf("validity %s", got)
	}
	// Without temporary the hash stays what it was: the field is left out of the canonical form.
	plain, err := Load(strings.NewReader(base))
	if err != nil {
		t.Fatal(err)
	}
	canon, err := plain[0].Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(canon), "temporary") {
		t.Error("a profile without temporary names it in its canonical form")
	}
}
