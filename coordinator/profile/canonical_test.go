package profile

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func hashOf(t *testing.T, p Profile) string {
	t.Helper()
	h, err := p.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHashSameMeaningSameHash(t *testing.T) {
	h0 := hashOf(t, loadOne(t, base))
	equivalents := map[string][2]string{
		"days as hours":          {"validity: 365d", "validity: 8760h"},
		"upn as template":        {"upn: true", `upn: "{{.UPN}}"`},
		"placeholder spacing":    {"upn: true", `upn: "{{ .UPN }}"`},
		"usage alias":            {"key_usage: [digitalSignature]", "key_usage: [digitalSignature, contentCommitment]"},
		"EKU by OID":             {"extended_key_usage: [clientAuth]", `extended_key_usage: ["1.3.6.1.5.5.7.3.2"]`},
		"explicit allowed key":   {"validity:", "allowed_keys: [{type: rsa, size: 2048}]\nvalidity:"},
		"explicit scope":         {"expires_after: 72h", "expires_after: 72h, scope: organization"},
		"expiry as days":         {"expires_after: 72h", "expires_after: 3d"},
		"flow vs block mappings": {"key: {type: rsa, size: 2048}", "key:\n  type: rsa\n  size: 2048"},
		// A profile without standing renewals keeps the hash it had before the field existed.
		"renew_before zero":   {"validity: 365d", "validity: 365d\nrenew_before: 0d"},
		"expiry_warning zero": {"validity: 365d", "validity: 365d\nexpiry_warning: 0d"},
		"register empty":      {"validity: 365d", "validity: 365d\nregister: {}"},
		"self_service empty":  {"validity: 365d", "validity: 365d\nself_service: {request: false}"},
	}
	for name, r := range equivalents {
		want := h0
		if name == "usage alias" {
			want = hashOf(t, loadOne(t, strings.Replace(base, "key_usage: [digitalSignature]", "key_usage: [nonRepudiation, digitalSignature]", 1)))
		}
		if got := hashOf(t, loadOne(t, strings.Replace(base, r[0], r[1], 1))); got != want {
			t.Errorf("%s: hash changed", name)
		}
	}
	// Order of usages does not matter.
	a := loadOne(t, strings.Replace(base, "key_usage: [digitalSignature]", "key_usage: [digitalSignature, keyEncipherment]", 1))
	b := loadOne(t, strings.Replace(base, "key_usage: [digitalSignature]", "key_usage: [keyEncipherment, digitalSignature]", 1))
	if hashOf(t, a) != hashOf(t, b) {
		t.Error("usage order changes the hash")
	}
}

func TestHashAnyChangeChangesHash(t *testing.T) {
	h0 := hashOf(t, loadOne(t, base))
	changes := [][2]string{
		{"description: a test profile", "description: another"},
		{"size: 2048", "size: 3072"},
		{`common_name: "{{.Name}}"`, `common_name: "{{.Email}}"`},
		{"upn: true", "email: true"},
		{"[digitalSignature]", "[digitalSignature, keyEncipherment]"},
		{"[clientAuth]", "[clientAuth, emailProtection]"},
		{"validity: 365d", "validity: 366d"},
		{`label: "{{.Name}}"`, `label: "{{.Name}} card"`},
		{"min_length: 6", "min_length: 5"},
		{"so_pin_length: 16", "so_pin_length: 12"},
		{"required: 1", "required: 2"},
		{"expires_after: 72h", "expires_after: 73h"},
		{"expires_after: 72h", "expires_after: 72h, scope: any"},
		{"expires_after: 72h", "expires_after: 72h, ca_operator_required: true"},
		{"roles: [approver]", "roles: [approver, admin]"},
		{"validity:", "allowed_keys: [{type: rsa, size: 2048}, {type: rsa, size: 4096}]\nvalidity:"},
		{"validity: 365d", "validity: 365d\nrenew_before: 30d"},
		{"validity: 365d", "validity: 365d\nexpiry_warning: 30d"},
		{"validity: 365d", "validity: 365d\nregister: {document: required}"},
		{"validity: 365d", "validity: 365d\nregister: {document: optional}"},
		{"validity: 365d", "validity: 365d\nself_service: {request: true}"},
		{"validity: 365d", "validity: 365d\nself_service: {reveal_pin: true}"},
		{"validity: 365d", "validity: 365d\nself_service: {unblock_pin: true}"},
	}
	for _, c := range changes {
		if hashOf(t, loadOne(t, strings.Replace(base, c[0], c[1], 1))) == h0 {
			t.Errorf("%q → %q keeps the hash", c[0], c[1])
		}
	}
}

func TestCanonicalIsNormalFormJSON(t *testing.T) {
	p := loadOne(t, strings.Replace(base, "key_usage: [digitalSignature]", "key_usage: [keyEncipherment, contentCommitment]", 1))
	c, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"key_usage":["keyEncipherment","nonRepudiation"]`, `"validity":"365d"`, `"scope":"organization"`, `"allowed_keys":[{"type":"rsa","size":2048}]`, `"upn":"{{.UPN}}"`} {
		if !bytes.Contains(c, []byte(want)) {
			t.Errorf("canonical form %s lacks %s", c, want)
		}
	}
	// Hashing does not depend on whether the caller normalised first.
	raw := Profile{Name: "x", Key: KeySpec{Type: KeyRSA, Size: 2048}, KeyUsage: []string{"contentCommitment"}}
	if hashOf(t, raw) != hashOf(t, raw.Normalized()) {
		t.Error("hash of a raw profile differs from its normal form's")
	}
}

// A profile written back as YAML loads again to the same hash: what an admin exports and
// re-imports keeps its approvals.
func TestYAMLRoundTrip(t *testing.T) {
	for _, p := range loadExamples(t) {
		out, err := yaml.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		back := loadOne(t, string(out))
		if hashOf(t, back) != hashOf(t, p) {
			t.Errorf("%s: round trip changes the hash:\n%s", p.Name, out)
		}
	}
}

func TestAllowsKey(t *testing.T) {
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)

	rsaOnly := loadOne(t, base)
	ec := loadOne(t, strings.Replace(strings.Replace(base, "{type: rsa, size: 2048}", "{type: ec, curve: P-256}", 1), "validity:", "allowed_keys: [{type: ec, curve: P-256}, {type: ec, curve: P-384}]\nvalidity:", 1))
	tests := []struct {
		name string
		p    Profile
		pub  any
		want string // "" = allowed
	}{
		{"rsa 2048", rsaOnly, &rsa2048.PublicKey, ""},
		{"ec on rsa profile", rsaOnly, &p256.PublicKey, "key ec-P-256 is not allowed (rsa-2048)"},
		{"P-256", ec, &p256.PublicKey, ""},
		{"P-384 allowed too", ec, &p384.PublicKey, ""},
		{"P-521", ec, &p521.PublicKey, "key ec-P-521 is not allowed (ec-P-256, ec-P-384)"},
		{"rsa on ec profile", ec, &rsa2048.PublicKey, "key rsa-2048 is not allowed"},
		{"ed25519", ec, edPub, "unsupported public key type ed25519.PublicKey"},
		{"nil rsa", rsaOnly, (*rsa.PublicKey)(nil), "empty RSA public key"},
	}
	for _, tt := range tests {
		err := tt.p.AllowsKey(tt.pub)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrKeyNotAllowed) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want key_not_allowed with %q", tt.name, err, tt.want)
		}
	}
}
