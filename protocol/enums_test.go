package protocol

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"math/big"
	"slices"
	"testing"
)

// The strings are the ones DESIGN.md fixes; the coordinator stores them and
// UIs show them, so a rename is a breaking change this test catches.
func TestEnumSpellings(t *testing.T) {
	kinds := []JobKind{"issue", "csr", "install_certificate", "renew", "unblock_pin", "wipe", "inventory", "revoke",
		"server_keygen", "recover_key", "register_certificate"}
	if !slices.Equal(JobKinds(), kinds) {
		t.Errorf("JobKinds() = %q, want %q", JobKinds(), kinds)
	}
	states := []JobState{"pending_approval", "approved", "dispatched", "running", "awaiting_certificate", "installing",
		"succeeded", "failed", "rejected", "cancelled", "superseded", "expired"}
	if !slices.Equal(JobStates(), states) {
		t.Errorf("JobStates() = %q, want %q", JobStates(), states)
	}
	steps := []Step{"waiting_for_token", "token_found", "initialising", "key_generated", "key_imported", "csr_sent", "certificate_written", "verified"}
	if !slices.Equal(Steps(), steps) {
		t.Errorf("Steps() = %q, want %q", Steps(), steps)
	}
	keys := []KeyType{"rsa2048", "rsa3072", "rsa4096", "p256", "p384"}
	if !slices.Equal(KeyTypes(), keys) {
		t.Errorf("KeyTypes() = %q, want %q", KeyTypes(), keys)
	}
	// The lists are copies: a caller cannot change the package's sets.
	JobKinds()[0] = "format"
	if !KindIssue.Valid() || JobKind("format").Valid() {
		t.Error("JobKinds() exposes the package's slice")
	}
}

func TestEnumValid(t *testing.T) {
	for _, k := range JobKinds() {
		if !k.Valid() {
			t.Errorf("%s not valid", k)
		}
		if k.Dispatchable() == (k == KindRevoke) {
			t.Errorf("%s.Dispatchable() = %v", k, k.Dispatchable())
		}
	}
	for _, bad := range []string{"", "Issue", "issue ", "ISSUE"} {
		if JobKind(bad).Valid() || JobState(bad).Valid() || Step(bad).Valid() || KeyType(bad).Valid() {
			t.Errorf("%q accepted", bad)
		}
	}
	if JobKind("").Dispatchable() {
		t.Error("empty kind dispatchable")
	}
	for _, p := range []SealPurpose{PurposeUserPIN, PurposeSOPIN, PurposeAgentResume, PurposeBrokerCredentials, PurposePrivateKey} {
		if !p.Valid() {
			t.Errorf("%s not valid", p)
		}
		want := MaxSealedPlaintext
		if p == PurposePrivateKey {
			want = MaxSealedKey
		}
		if got := p.MaxPlaintext(); got != want {
			t.Errorf("%s.MaxPlaintext() = %d, want %d", p, got, want)
		}
	}
	if string(PurposePrivateKey) != "private_key" {
		t.Errorf("PurposePrivateKey = %q; it is bound into sealed values and must not change", PurposePrivateKey)
	}
	if SealPurpose("puk").Valid() || Outcome("partial").Valid() || !OutcomeFailed.Valid() {
		t.Error("purpose/outcome validity wrong")
	}
}

func TestIsTerminal(t *testing.T) {
	terminal := map[JobState]bool{
		StateSucceeded: true, StateFailed: true, StateRejected: true,
		StateCancelled: true, StateSuperseded: true, StateExpired: true,
	}
	for _, s := range JobStates() {
		if got := s.IsTerminal(); got != terminal[s] {
			t.Errorf("%s.IsTerminal() = %v, want %v", s, got, terminal[s])
		}
	}
	if JobState("done").IsTerminal() {
		t.Error("unknown state terminal")
	}
}

// rsaKeyOfBits builds a public key whose modulus has the given length;
// KeyTypeOf looks at nothing else, and generating 4096-bit keys is slow.
func rsaKeyOfBits(bits int) *rsa.PublicKey {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	return &rsa.PublicKey{N: n.Add(n, big.NewInt(1)), E: 65537}
}

func TestKeyTypeOf(t *testing.T) {
	ec := func(c elliptic.Curve) *ecdsa.PublicKey {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return &k.PublicKey
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  any
		want KeyType
		err  string
	}{
		{"rsa2048", rsaKeyOfBits(2048), KeyRSA2048, ""},
		{"rsa3072", rsaKeyOfBits(3072), KeyRSA3072, ""},
		{"rsa4096", rsaKeyOfBits(4096), KeyRSA4096, ""},
		{"p256", ec(elliptic.P256()), KeyP256, ""},
		{"p384", ec(elliptic.P384()), KeyP384, ""},
		{"rsa1024", rsaKeyOfBits(1024), "", "weak_key: RSA key of 1024 bits"},
		{"p521", ec(elliptic.P521()), "", "weak_key: EC key on curve P-521"},
		{"ed25519", edPub, "", "weak_key: key of type ed25519.PublicKey"},
		{"x25519", x.PublicKey(), "", "weak_key: key of type *ecdh.PublicKey"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := KeyTypeOf(tc.key)
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Errorf("got %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil || err.Error() != tc.err+"; profiles allow "+allowedFor(tc.name) {
				t.Errorf("got %q, %v; want error %q…", got, err, tc.err)
			}
		})
	}
}

func allowedFor(name string) string {
	switch name {
	case "rsa1024":
		return "2048, 3072 or 4096"
	case "p521":
		return "P-256 or P-384"
	}
	return "RSA or ECDSA keys"
}
