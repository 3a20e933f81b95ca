package protocol

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"
)

// bodyCase mutates a fresh valid body; code "" means the result must be
// valid.
type bodyCase[T Body] struct {
	name string
	mod  func(*T)
	code ErrorCode
	want string
}

func runBodyCases[T Body](t *testing.T, fresh func() T, cases []bodyCase[T]) {
	t.Helper()
	if err := fresh().Validate(); err != nil {
		t.Fatalf("base body invalid: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := fresh()
			tc.mod(&b)
			err := b.Validate()
			if tc.code == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			checkErr(t, err, tc.code, tc.want)
		})
	}
}

func sampleOf[T Body](t *testing.T, typ MessageType) func() T {
	return func() T { return testSamples(t)[typ].body.(T) }
}

func TestJobDispatchValidate(t *testing.T) {
	m := testMaterial(t)
	user := &SealedPINs{UserPIN: testSealed(1)}
	so := &SealedPINs{SOPIN: testSealed(2)}
	policy := &PINPolicy{MinLength: 6, MaxLength: 8}
	key := &KeyParams{Type: KeyRSA2048, ID: DeriveKeyID(testJob)}
	bySerial := TokenSelector{Serial: "0a1b2c3d4e5f6789"}
	// minimal builds the smallest valid dispatch of a kind from scratch.
	minimal := func(kind JobKind) func(*JobDispatch) {
		return func(d *JobDispatch) {
			*d = JobDispatch{Kind: kind, Deadline: testTime, Token: bySerial}
			switch kind {
			case KindIssue, KindCSR, KindRenew:
				d.Key, d.PINs = key, user
			case KindInstallCertificate:
				d.Key = &KeyParams{ID: "01"}
				d.Certificates = &CertificateChain{Certificate: m.certDER}
				d.PINs = user
			case KindServerKeygen, KindRecoverKey:
				d.Key = &KeyParams{Type: KeyP256, ID: DeriveKeyID(testJob)}
				d.Certificates = &CertificateChain{Certificate: m.certDER, Chain: [][]byte{m.issuerDER}}
				d.PrivateKey = sealedKey(100)
				d.PINs = user
			case KindRegisterCertificate:
				d.Key = &KeyParams{ID: DeriveKeyID(testJob)}
			case KindUnblockPIN:
				d.PINs, d.PINPolicy, d.ResultKey = so, policy, m.sealKeyDER
			case KindWipe:
				d.PINs = so
			case KindInventory:
				d.Token = TokenSelector{}
			}
		}
	}
	cases := []bodyCase[JobDispatch]{
		{"kind missing", func(d *JobDispatch) { d.Kind = "" }, CodeBadRequest, "kind: required"},
		{"kind unknown", func(d *JobDispatch) { d.Kind = "format" }, CodeBadRequest, `kind: unknown value "format"`},
		{"kind revoke", func(d *JobDispatch) { d.Kind = KindRevoke }, CodeBadRequest, "never dispatched"},
		{"deadline missing", func(d *JobDispatch) { d.Deadline = time.Time{} }, CodeBadRequest, "deadline: required"},
		{"deadline not UTC", func(d *JobDispatch) { d.Deadline = testTime.In(time.FixedZone("X", -7200)) }, CodeBadRequest, "deadline: not UTC"},
		{"profile too long", func(d *JobDispatch) { d.Profile = strings.Repeat("p", MaxShortLen+1) }, CodeTooLarge, "profile: 65 bytes, limit 64"},
		{"no token criterion", func(d *JobDispatch) { d.Token = TokenSelector{} }, CodeBadRequest, "token: no criterion"},
		{"token serial too long", func(d *JobDispatch) { d.Token.Serial = strings.Repeat("1", 17) }, CodeTooLarge, "token.serial: 17 bytes, limit 16"},
		{"token model with newline", func(d *JobDispatch) { d.Token.Model = "Soft\nHSM" }, CodeBadRequest, "token.model: control character U+000A"},
		{"token uri scheme", func(d *JobDispatch) { d.Token.URI = "file:///etc/passwd" }, CodeBadRequest, `token.uri: does not start with "pkcs11:"`},
		{"token uri space", func(d *JobDispatch) { d.Token.URI = "pkcs11:model=SoftHSM v2" }, CodeBadRequest, "token.uri: contains white space"},
		{"token label too long", func(d *JobDispatch) { d.TokenLabel = strings.Repeat("l", 33) }, CodeTooLarge, "token_label: 33 bytes, limit 32"},
		{"pin policy too short", func(d *JobDispatch) { d.PINPolicy.MinLength = 3 }, CodeBadRequest, "pin_policy.min_length: 3, want 4 to 64"},
		{"pin policy max below min", func(d *JobDispatch) { d.PINPolicy.MaxLength = 5 }, CodeBadRequest, "pin_policy.max_length: 5, want 6 (min_length) to 64"},
		{"pin policy too long", func(d *JobDispatch) { d.PINPolicy.MaxLength = 65 }, CodeBadRequest, "pin_policy.max_length: 65"},
		{"so pin too short", func(d *JobDispatch) { d.PINPolicy.SOLength = 3 }, CodeBadRequest, "pin_policy.so_length: 3, want 0 (as the user PIN) or 4 to 64"},
		{"so pin too long", func(d *JobDispatch) { d.PINPolicy.SOLength = 65 }, CodeBadRequest, "pin_policy.so_length: 65"},
		{"key type unknown", func(d *JobDispatch) { d.Key.Type = "rsa1024" }, CodeBadRequest, `key.type: unknown value "rsa1024"`},
		{"key type missing", func(d *JobDispatch) { d.Key.Type = "" }, CodeBadRequest, "key.type: required"},
		{"key id upper case", func(d *JobDispatch) { d.Key.ID = "AB" }, CodeBadRequest, "key.id: byte 0 ('A') is not a lowercase hex digit"},
		{"key id odd", func(d *JobDispatch) { d.Key.ID = "abc" }, CodeBadRequest, "key.id: odd number of hex digits"},
		{"key id too long", func(d *JobDispatch) { d.Key.ID = strings.Repeat("00", MaxKeyIDBytes+1) }, CodeTooLarge, "key.id: 129 bytes, limit 128"},
		{"key missing", func(d *JobDispatch) { d.Key = nil }, CodeBadRequest, "key: required by issue jobs that initialise the token"},
		{"pin policy missing", func(d *JobDispatch) { d.PINPolicy = nil }, CodeBadRequest, "pin_policy: required by issue jobs that initialise"},
		{"result key missing", func(d *JobDispatch) { d.ResultKey = nil }, CodeBadRequest, "result_key: required by issue jobs that initialise"},
		{"result key not X25519", func(d *JobDispatch) { d.ResultKey = m.pubDER }, CodeBadRequest, "result_key: a *ecdsa.PublicKey is not an X25519 key"},
		{"result key garbage", func(d *JobDispatch) { d.ResultKey = []byte("not a key") }, CodeBadRequest, "result_key: not a PKIX public key"},
		{"re-initialise without SO PIN", func(d *JobDispatch) { d.Token = bySerial; d.PINs = nil }, CodeBadRequest, "pins.so_pin: required to re-initialise"},
		{"re-initialise with SO PIN", func(d *JobDispatch) { d.Token = bySerial }, "", ""},
		{"blank without initialise", func(d *JobDispatch) { d.Initialise = false }, CodeBadRequest, "token.blank: a blank token must be initialised first"},
		{"token label without initialise", func(d *JobDispatch) { d.Token, d.Initialise, d.PINs = bySerial, false, user }, CodeBadRequest, "token_label: only used when initialise is set"},
		{"no user PIN without initialise", func(d *JobDispatch) {
			d.Token, d.Initialise, d.TokenLabel, d.PINPolicy, d.ResultKey = bySerial, false, "", nil, nil
		}, CodeBadRequest, "pins.user_pin: required by issue jobs"},
		{"certificates on issue", func(d *JobDispatch) { d.Certificates = &CertificateChain{Certificate: m.certDER} }, CodeBadRequest, "certificates: not used by issue jobs"},
		{"empty sealed PINs", func(d *JobDispatch) { d.PINs = &SealedPINs{} }, CodeBadRequest, "pins: neither user_pin nor so_pin is set"},
		{"sealed algorithm", func(d *JobDispatch) { d.PINs.SOPIN.Algorithm = "rsa-oaep" }, CodeBadRequest, `pins.so_pin.alg: unknown algorithm "rsa-oaep"`},
		{"sealed nonce", func(d *JobDispatch) { d.PINs.SOPIN.Nonce = d.PINs.SOPIN.Nonce[:11] }, CodeBadRequest, "pins.so_pin.nonce: 11 bytes, want 12"},
		{"sealed key id", func(d *JobDispatch) { d.PINs.SOPIN.KeyID = "abcd" }, CodeBadRequest, "pins.so_pin.kid: 4 hex digits, want 32"},
		{"sealed ephemeral key", func(d *JobDispatch) { d.PINs.SOPIN.EphemeralKey = nil }, CodeBadRequest, "pins.so_pin.epk: 0 bytes, want 32"},
		{"sealed tag only", func(d *JobDispatch) { d.PINs.SOPIN.Ciphertext = make([]byte, SealTagSize) }, CodeBadRequest, "pins.so_pin.ct: 16 bytes, want 17 to 272"},
		{"sealed too long", func(d *JobDispatch) { d.PINs.SOPIN.Ciphertext = make([]byte, SealTagSize+MaxSealedPlaintext+1) }, CodeBadRequest, "pins.so_pin.ct: 273 bytes"},

		{"minimal issue", minimal(KindIssue), "", ""},
		{"minimal csr", minimal(KindCSR), "", ""},
		{"minimal renew", minimal(KindRenew), "", ""},
		{"minimal install_certificate", minimal(KindInstallCertificate), "", ""},
		{"minimal unblock_pin", minimal(KindUnblockPIN), "", ""},
		{"minimal wipe", minimal(KindWipe), "", ""},
		{"minimal inventory", minimal(KindInventory), "", ""},
		{"minimal server_keygen", minimal(KindServerKeygen), "", ""},
		{"minimal recover_key", minimal(KindRecoverKey), "", ""},
		{"minimal register_certificate", minimal(KindRegisterCertificate), "", ""},

		// server_keygen, recover_key: an escrowed key, imported with its certificate.
		{"server_keygen without private key", func(d *JobDispatch) { minimal(KindServerKeygen)(d); d.PrivateKey = nil }, CodeBadRequest, "private_key: required by server_keygen jobs"},
		{"recover_key without private key", func(d *JobDispatch) { minimal(KindRecoverKey)(d); d.PrivateKey = nil }, CodeBadRequest, "private_key: required by recover_key jobs"},
		{"server_keygen without certificates", func(d *JobDispatch) { minimal(KindServerKeygen)(d); d.Certificates = nil }, CodeBadRequest, "certificates: required by server_keygen jobs"},
		{"server_keygen without key", func(d *JobDispatch) { minimal(KindServerKeygen)(d); d.Key = nil }, CodeBadRequest, "key: required by server_keygen jobs"},
		{"server_keygen without key type", func(d *JobDispatch) { minimal(KindServerKeygen)(d); d.Key.Type = "" }, CodeBadRequest, "key.type: required"},
		{"server_keygen without user PIN", func(d *JobDispatch) { minimal(KindServerKeygen)(d); d.PINs = so }, CodeBadRequest, "pins.user_pin: required by server_keygen jobs"},
		{"server_keygen with no PINs", func(d *JobDispatch) { minimal(KindServerKeygen)(d); d.PINs = nil }, CodeBadRequest, "pins.user_pin: required by server_keygen jobs"},
		{"server_keygen with initialise", func(d *JobDispatch) { minimal(KindServerKeygen)(d); d.Initialise = true }, CodeBadRequest, "initialise: not used by server_keygen jobs"},
		{"server_keygen with policy", func(d *JobDispatch) { minimal(KindServerKeygen)(d); d.PINPolicy = policy }, CodeBadRequest, "pin_policy: not used by server_keygen jobs"},
		{"server_keygen with result key", func(d *JobDispatch) { minimal(KindServerKeygen)(d); d.ResultKey = m.sealKeyDER }, CodeBadRequest, "result_key: not used by server_keygen jobs"},
		{"server_keygen replaces", func(d *JobDispatch) { minimal(KindServerKeygen)(d); d.Key.Replaces = "02" }, CodeBadRequest, "key.replaces: only used by renew jobs"},
		{"private key at its bound", func(d *JobDispatch) {
			minimal(KindServerKeygen)(d)
			d.PrivateKey.Ciphertext = make([]byte, SealTagSize+MaxSealedKey)
		}, "", ""},
		{"private key too long", func(d *JobDispatch) {
			minimal(KindServerKeygen)(d)
			d.PrivateKey.Ciphertext = make([]byte, SealTagSize+MaxSealedKey+1)
		}, CodeBadRequest, "private_key.ct: 8209 bytes, want 17 to 8208"},
		{"private key malformed", func(d *JobDispatch) { minimal(KindRecoverKey)(d); d.PrivateKey.Nonce = nil }, CodeBadRequest, "private_key.nonce: 0 bytes, want 12"},
		// A PIN keeps its own bound even in a dispatch that carries a key.
		{"user PIN at the key's bound", func(d *JobDispatch) {
			minimal(KindServerKeygen)(d)
			d.PINs = &SealedPINs{UserPIN: sealedKey(1)}
		}, CodeBadRequest, "pins.user_pin.ct: 4112 bytes, want 17 to 272"},
		{"private key on issue", func(d *JobDispatch) { d.PrivateKey = sealedKey(1) }, CodeBadRequest, "private_key: not used by issue jobs"},
		{"private key on install_certificate", func(d *JobDispatch) { minimal(KindInstallCertificate)(d); d.PrivateKey = sealedKey(1) }, CodeBadRequest, "private_key: not used by install_certificate jobs"},
		{"private key on renew", func(d *JobDispatch) { minimal(KindRenew)(d); d.PrivateKey = sealedKey(1) }, CodeBadRequest, "private_key: not used by renew jobs"},
		{"private key on register_certificate", func(d *JobDispatch) { minimal(KindRegisterCertificate)(d); d.PrivateKey = sealedKey(1) }, CodeBadRequest, "private_key: not used by register_certificate jobs"},
		{"private key on wipe", func(d *JobDispatch) { minimal(KindWipe)(d); d.PrivateKey = sealedKey(1) }, CodeBadRequest, "private_key: not used by wipe jobs"},
		{"private key on inventory", func(d *JobDispatch) { minimal(KindInventory)(d); d.PrivateKey = sealedKey(1) }, CodeBadRequest, "private_key: not used by inventory jobs"},

		// register_certificate reads a certificate back: no login, nothing to write.
		{"register_certificate with key type", func(d *JobDispatch) { minimal(KindRegisterCertificate)(d); d.Key.Type = KeyRSA2048 }, "", ""},
		{"register_certificate without key", func(d *JobDispatch) { minimal(KindRegisterCertificate)(d); d.Key = nil }, CodeBadRequest, "key: required by register_certificate jobs"},
		{"register_certificate with PINs", func(d *JobDispatch) { minimal(KindRegisterCertificate)(d); d.PINs = user }, CodeBadRequest, "pins: not used by register_certificate jobs"},
		{"register_certificate with certificates", func(d *JobDispatch) {
			minimal(KindRegisterCertificate)(d)
			d.Certificates = &CertificateChain{Certificate: m.certDER}
		}, CodeBadRequest, "certificates: not used by register_certificate jobs"},
		{"register_certificate without token", func(d *JobDispatch) { minimal(KindRegisterCertificate)(d); d.Token = TokenSelector{} }, CodeBadRequest, "token: no criterion"},
		{"wipe with label", func(d *JobDispatch) { minimal(KindWipe)(d); d.TokenLabel = "spare" }, "", ""},
		{"renew with initialise", func(d *JobDispatch) { minimal(KindRenew)(d); d.Initialise = true }, CodeBadRequest, "initialise: not used by renew jobs"},
		{"renew without user PIN", func(d *JobDispatch) { minimal(KindRenew)(d); d.PINs = so }, CodeBadRequest, "pins.user_pin: required by renew jobs"},
		{"install without certificates", func(d *JobDispatch) { minimal(KindInstallCertificate)(d); d.Certificates = nil }, CodeBadRequest, "certificates: required by install_certificate jobs"},
		{"install without key", func(d *JobDispatch) { minimal(KindInstallCertificate)(d); d.Key = nil }, CodeBadRequest, "key: required by install_certificate jobs"},
		{"unblock without policy", func(d *JobDispatch) { minimal(KindUnblockPIN)(d); d.PINPolicy = nil }, CodeBadRequest, "pin_policy: required by unblock_pin jobs"},
		{"unblock without SO PIN", func(d *JobDispatch) { minimal(KindUnblockPIN)(d); d.PINs = user }, CodeBadRequest, "pins.so_pin: required by unblock_pin jobs"},
		{"unblock with key", func(d *JobDispatch) { minimal(KindUnblockPIN)(d); d.Key = key }, CodeBadRequest, "key: not used by unblock_pin jobs"},
		{"wipe with key", func(d *JobDispatch) { minimal(KindWipe)(d); d.Key = key }, CodeBadRequest, "key: not used by wipe jobs"},
		{"wipe with result key", func(d *JobDispatch) { minimal(KindWipe)(d); d.ResultKey = m.sealKeyDER }, CodeBadRequest, "result_key: not used by wipe jobs"},
		{"wipe without token", func(d *JobDispatch) { minimal(KindWipe)(d); d.Token = TokenSelector{} }, CodeBadRequest, "token: no criterion"},
		{"inventory with PINs", func(d *JobDispatch) { minimal(KindInventory)(d); d.PINs = user }, CodeBadRequest, "pins: not used by inventory jobs"},
		{"inventory with policy", func(d *JobDispatch) { minimal(KindInventory)(d); d.PINPolicy = policy }, CodeBadRequest, "pin_policy: not used by inventory jobs"},

		// factory_pins: the agent knows the PINs per model and replaces them.
		{"factory PINs", func(d *JobDispatch) {
			d.Token, d.Initialise, d.TokenLabel, d.PINs, d.FactoryPINs = bySerial, false, "", nil, true
		}, "", ""},
		{"factory PINs on csr", func(d *JobDispatch) {
			d.Kind, d.Token, d.Initialise, d.TokenLabel, d.PINs, d.FactoryPINs = KindCSR, bySerial, false, "", nil, true
		}, "", ""},
		{"factory PINs without policy", func(d *JobDispatch) {
			d.Token, d.Initialise, d.TokenLabel, d.PINs, d.FactoryPINs, d.PINPolicy = bySerial, false, "", nil, true, nil
		}, CodeBadRequest, "pin_policy: required by issue jobs that replace factory PINs"},
		{"factory PINs without result key", func(d *JobDispatch) {
			d.Token, d.Initialise, d.TokenLabel, d.PINs, d.FactoryPINs, d.ResultKey = bySerial, false, "", nil, true, nil
		}, CodeBadRequest, "result_key: required by issue jobs that replace factory PINs"},
		{"factory PINs re-initialise without SO PIN", func(d *JobDispatch) { d.Token, d.PINs, d.FactoryPINs = bySerial, nil, true }, "", ""},
		{"factory PINs on a blank token", func(d *JobDispatch) { d.FactoryPINs = true }, CodeBadRequest, "factory_pins: a blank token has no PINs"},
		{"factory PINs on renew", func(d *JobDispatch) { minimal(KindRenew)(d); d.FactoryPINs = true }, CodeBadRequest, "factory_pins: not used by renew jobs"},
		{"factory PINs on unblock", func(d *JobDispatch) { minimal(KindUnblockPIN)(d); d.FactoryPINs = true }, CodeBadRequest, "factory_pins: not used by unblock_pin jobs"},
		// key.replaces names the key a renewal removes once the new one is verified.
		{"renew replaces", func(d *JobDispatch) {
			minimal(KindRenew)(d)
			d.Key = &KeyParams{Type: KeyP256, ID: DeriveKeyID("renewal"), Replaces: DeriveKeyID(testJob)}
		}, "", ""},
		{"renew replaces itself", func(d *JobDispatch) {
			minimal(KindRenew)(d)
			d.Key = &KeyParams{Type: KeyP256, ID: DeriveKeyID(testJob), Replaces: DeriveKeyID(testJob)}
		}, CodeBadRequest, "key.replaces: is the new key's own id"},
		{"renew replaces not hex", func(d *JobDispatch) {
			minimal(KindRenew)(d)
			d.Key = &KeyParams{Type: KeyP256, ID: DeriveKeyID(testJob), Replaces: "XY"}
		}, CodeBadRequest, "key.replaces: byte 0 ('X') is not a lowercase hex digit"},
		{"issue replaces", func(d *JobDispatch) { d.Key = &KeyParams{Type: KeyP256, ID: "01", Replaces: "02"} }, CodeBadRequest, "key.replaces: only used by renew jobs"},
	}
	runBodyCases(t, sampleOf[JobDispatch](t, TypeDispatch), cases)
}

func TestCertificateDeliveryValidate(t *testing.T) {
	cases := []bodyCase[CertificateDelivery]{
		{"key id missing", func(c *CertificateDelivery) { c.KeyID = "" }, CodeBadRequest, "key_id: required"},
		{"certificate missing", func(c *CertificateDelivery) { c.Certificates.Certificate = nil }, CodeBadRequest, "certificates.certificate: required"},
		{"certificate PEM", func(c *CertificateDelivery) {
			c.Certificates.Certificate = []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
		}, CodeBadRequest, "certificates.certificate: PEM; send the DER bytes"},
		{"certificate garbage", func(c *CertificateDelivery) { c.Certificates.Certificate = []byte{0x30, 0x05, 0x01} }, CodeBadRequest, "certificates.certificate: not DER"},
		{"trailing data", func(c *CertificateDelivery) {
			c.Certificates.Certificate = append(append([]byte(nil), c.Certificates.Certificate...), 0)
		}, CodeBadRequest, "certificates.certificate: 1 bytes of trailing data"},
		{"not a sequence", func(c *CertificateDelivery) { c.Certificates.Certificate = []byte{0x02, 0x01, 0x01} }, CodeBadRequest, "not a SEQUENCE"},
		{"certificate too large", func(c *CertificateDelivery) { c.Certificates.Certificate = make([]byte, MaxCertificateSize+1) }, CodeTooLarge, "certificates.certificate: 16385 bytes, limit 16384"},
		{"chain too long", func(c *CertificateDelivery) {
			c.Certificates.Chain = make([][]byte, MaxChainLength+1)
		}, CodeTooLarge, "certificates.chain: 9 entries, limit 8"},
		{"chain entry empty", func(c *CertificateDelivery) { c.Certificates.Chain = [][]byte{nil} }, CodeBadRequest, "certificates.chain[0]: required"},
		{"label with escape", func(c *CertificateDelivery) { c.Certificates.Label = "sign\x1b[2J" }, CodeBadRequest, "certificates.label: control character U+001B"},
		{"no chain", func(c *CertificateDelivery) { c.Certificates.Chain = nil }, "", ""},
	}
	runBodyCases(t, sampleOf[CertificateDelivery](t, TypeCertificate), cases)
}

func TestCancelValidate(t *testing.T) {
	cases := []bodyCase[Cancel]{
		{"state missing", func(c *Cancel) { c.State = "" }, CodeBadRequest, "state: required"},
		{"state succeeded", func(c *Cancel) { c.State = StateSucceeded }, CodeBadRequest, "state: succeeded is not a reason to cancel"},
		{"state unknown", func(c *Cancel) { c.State = "stopped" }, CodeBadRequest, `state: unknown value "stopped"`},
		{"rejected by the CA operator", func(c *Cancel) { c.State = StateRejected }, "", ""},
		{"state running", func(c *Cancel) { c.State = StateRunning }, CodeBadRequest, "state: running is not a reason to cancel"},
		{"expired", func(c *Cancel) { c.State = StateExpired }, "", ""},
		{"superseded", func(c *Cancel) { c.State = StateSuperseded }, "", ""},
		{"failed by the coordinator", func(c *Cancel) { c.State, c.Reason = StateFailed, "CSR refused: RSA key under 2048 bits" }, "", ""},
		{"cancelled without reason", func(c *Cancel) { c.State, c.Reason = StateCancelled, "" }, "", ""},
		{"reason too long", func(c *Cancel) { c.Reason = strings.Repeat("r", MaxTextLen+1) }, CodeTooLarge, "reason: 1025 bytes, limit 1024"},
	}
	runBodyCases(t, sampleOf[Cancel](t, TypeCancel), cases)
}

func TestHelloValidate(t *testing.T) {
	m := testMaterial(t)
	tok := func(h *Hello) *Token { return &h.Tokens[0] }
	cases := []bodyCase[Hello]{
		{"instance id missing", func(h *Hello) { h.InstanceID = "" }, CodeBadRequest, "instance_id: required"},
		{"instance id form", func(h *Hello) { h.InstanceID = "42" }, CodeBadRequest, "instance_id: 2 bytes; want a 36-byte lowercase UUID"},
		{"hostname missing", func(h *Hello) { h.Hostname = "" }, CodeBadRequest, "hostname: required"},
		{"hostname too long", func(h *Hello) { h.Hostname = strings.Repeat("h", 254) }, CodeTooLarge, "hostname: 254 bytes, limit 253"},
		{"os missing", func(h *Hello) { h.OS = "" }, CodeBadRequest, "os: required"},
		{"arch missing", func(h *Hello) { h.Arch = "" }, CodeBadRequest, "arch: required"},
		{"agent version missing", func(h *Hello) { h.AgentVersion = "" }, CodeBadRequest, "agent_version: required"},
		{"protocol min zero", func(h *Hello) { h.Protocol.Min = 0 }, CodeBadRequest, "protocol.min: 0: versions start at 1"},
		{"protocol max below min", func(h *Hello) { h.Protocol = VersionRange{Min: 2, Max: 1} }, CodeBadRequest, "protocol.max: 1 is below min 2"},
		{"seal key missing", func(h *Hello) { h.SealKey = nil }, CodeBadRequest, "seal_key: required"},
		{"seal key P-256", func(h *Hello) { h.SealKey = m.pubDER }, CodeBadRequest, "seal_key: a *ecdsa.PublicKey is not an X25519 key"},
		{"seal key too large", func(h *Hello) { h.SealKey = make([]byte, MaxPublicKeySize+1) }, CodeTooLarge, "seal_key: 4097 bytes"},
		{"no tokens", func(h *Hello) { h.Tokens = nil }, "", ""},
		{"too many tokens", func(h *Hello) { h.Tokens = make([]Token, MaxTokens+1) }, CodeTooLarge, "tokens: 17 entries, limit 16"},
		{"token serial missing", func(h *Hello) { tok(h).Serial = "" }, CodeBadRequest, "tokens[0].serial: required"},
		{"token manufacturer too long", func(h *Hello) { tok(h).Manufacturer = strings.Repeat("m", 33) }, CodeTooLarge, "tokens[0].manufacturer: 33 bytes, limit 32"},
		{"token model too long", func(h *Hello) { tok(h).Model = strings.Repeat("m", 17) }, CodeTooLarge, "tokens[0].model: 17 bytes, limit 16"},
		{"token firmware too long", func(h *Hello) { tok(h).Firmware = strings.Repeat("9", 17) }, CodeTooLarge, "tokens[0].firmware: 17 bytes, limit 16"},
		{"token firmware control", func(h *Hello) { tok(h).Firmware = "2.\x00" }, CodeBadRequest, "tokens[0].firmware: control character"},
		{"token uri", func(h *Hello) { tok(h).URI = "serial=1" }, CodeBadRequest, "tokens[0].uri: does not start"},
		{"token pin lengths", func(h *Hello) { tok(h).PINMinLength, tok(h).PINMaxLength = 8, 6 }, CodeBadRequest, "tokens[0].pin_max_length: 6 is below pin_min_length 8"},
		{"token pin length garbage", func(h *Hello) { tok(h).PINMaxLength = 1 << 30 }, CodeBadRequest, "tokens[0].pin_max_length: 1073741824, want 0 to 255"},
		{"token pin length negative", func(h *Hello) { tok(h).PINMinLength = -1 }, CodeBadRequest, "tokens[0].pin_min_length: -1"},
		{"usb vendor id upper", func(h *Hello) { tok(h).USB.VendorID = "10AB" }, CodeBadRequest, "tokens[0].usb.vendor_id: byte 2 ('A')"},
		{"usb product id short", func(h *Hello) { tok(h).USB.ProductID = "07" }, CodeBadRequest, `tokens[0].usb.product_id: "07": want 4 hex digits`},
		{"usb product id missing", func(h *Hello) { tok(h).USB.ProductID = "" }, CodeBadRequest, "tokens[0].usb.product_id: required"},
		{"too many keys", func(h *Hello) { tok(h).Keys = make([]KeyInfo, MaxKeysPerToken+1) }, CodeTooLarge, "tokens[0].keys: 65 entries, limit 64"},
		{"key type missing", func(h *Hello) { tok(h).Keys[1].Type = "" }, CodeBadRequest, "tokens[0].keys[1].type: required"},
		{"key type spaces", func(h *Hello) { tok(h).Keys[1].Type = "RSA 1024" }, CodeBadRequest, "tokens[0].keys[1].type: \"RSA 1024\": byte 0"},
		{"key type too long", func(h *Hello) { tok(h).Keys[1].Type = strings.Repeat("x", 33) }, CodeTooLarge, "tokens[0].keys[1].type: 33 bytes, limit 32"},
		{"key with no half", func(h *Hello) { tok(h).Keys[0].Private, tok(h).Keys[0].Public = false, false }, CodeBadRequest, "tokens[0].keys[0]: neither private nor public is set"},
		{"key id empty", func(h *Hello) { tok(h).Keys[0].ID = "" }, "", ""},
		{"too many certificates", func(h *Hello) { tok(h).Certificates = make([]CertificateInfo, MaxCertificatesPerToken+1) }, CodeTooLarge, "tokens[0].certificates: 65 entries, limit 64"},
		{"certificate serial missing", func(h *Hello) { tok(h).Certificates[0].Serial = "" }, CodeBadRequest, "tokens[0].certificates[0].serial: required"},
		{"certificate serial too long", func(h *Hello) { tok(h).Certificates[0].Serial = strings.Repeat("01", 41) }, CodeTooLarge, "tokens[0].certificates[0].serial: 41 bytes, limit 40"},
		{"certificate expiry missing", func(h *Hello) { tok(h).Certificates[0].NotAfter = time.Time{} }, CodeBadRequest, "tokens[0].certificates[0].not_after: required"},
		{"certificate validity reversed", func(h *Hello) { tok(h).Certificates[0].NotAfter = testTime.Add(-time.Second) }, CodeBadRequest, "tokens[0].certificates[0].not_after: 2026-11-21T09:30:14Z is before not_before"},
		{"certificate fingerprint short", func(h *Hello) { tok(h).Certificates[0].SHA256 = "abcd" }, CodeBadRequest, "tokens[0].certificates[0].sha256: 4 hex digits, want 64"},
		{"certificate subject too long", func(h *Hello) { tok(h).Certificates[0].Subject = strings.Repeat("s", MaxDNLen+1) }, CodeTooLarge, "tokens[0].certificates[0].subject: 1025 bytes"},
		{"certificate subject empty", func(h *Hello) { tok(h).Certificates[0].Subject = "" }, "", ""},
		{"second token invalid", func(h *Hello) { h.Tokens = append(h.Tokens, Token{}) }, CodeBadRequest, "tokens[1].serial: required"},
	}
	runBodyCases(t, sampleOf[Hello](t, TypeHello), cases)
}

func TestHeartbeatValidate(t *testing.T) {
	cases := []bodyCase[Heartbeat]{
		{"seq zero", func(h *Heartbeat) { h.Seq = 0 }, CodeBadRequest, "seq: required"},
		{"instance id", func(h *Heartbeat) { h.InstanceID = "" }, CodeBadRequest, "instance_id: required"},
		{"step without job", func(h *Heartbeat) { h.CurrentJob = nil }, CodeBadRequest, "step: set without current_job"},
		{"idle", func(h *Heartbeat) { h.CurrentJob, h.Step = nil, "" }, "", ""},
		{"job attempt zero", func(h *Heartbeat) { h.CurrentJob.Attempt = 0 }, CodeBadRequest, "current_job.attempt: required"},
		{"job id bad", func(h *Heartbeat) { h.CurrentJob.JobID = "job/1" }, CodeBadRequest, "current_job.job_id: \"job/1\" contains '/'"},
		{"step unknown", func(h *Heartbeat) { h.Step = "sleeping" }, CodeBadRequest, `step: unknown value "sleeping"`},
		{"job without step", func(h *Heartbeat) { h.Step = "" }, "", ""},
	}
	runBodyCases(t, sampleOf[Heartbeat](t, TypeHeartbeat), cases)
}

func TestProgressValidate(t *testing.T) {
	cases := []bodyCase[Progress]{
		{"step missing", func(p *Progress) { p.Step = "" }, CodeBadRequest, "step: required"},
		{"public key missing at key_generated", func(p *Progress) { p.PublicKey = nil }, CodeBadRequest, "public_key: required"},
		{"key id missing at key_generated", func(p *Progress) { p.KeyID = "" }, CodeBadRequest, "key_id: required"},
		{"public key garbage", func(p *Progress) { p.PublicKey = []byte{0x30, 0x00} }, CodeBadRequest, "public_key: not a PKIX public key"},
		{"public key at another step", func(p *Progress) { p.Step = StepCSRSent; p.KeyID = "" }, CodeBadRequest, "public_key: only sent at step key_generated"},
		{"key id at another step", func(p *Progress) { p.Step = StepCSRSent }, CodeBadRequest, "key_id: only sent at step key_generated"},
		{"key existed at another step", func(p *Progress) { *p = Progress{Step: StepVerified, KeyExisted: true} }, CodeBadRequest, "key_existed: only sent at step key_generated"},
		{"plain step", func(p *Progress) { *p = Progress{Step: StepWaitingForToken, Detail: "insert the token labelled Alice"} }, "", ""},
		{"detail too long", func(p *Progress) { p.Detail = strings.Repeat("d", MaxTextLen+1) }, CodeTooLarge, "detail: 1025 bytes"},
		{"token serial with tab", func(p *Progress) { p.TokenSerial = "12\t34" }, CodeBadRequest, "token_serial: control character U+0009"},
	}
	runBodyCases(t, sampleOf[Progress](t, TypeProgress), cases)
}

func TestCSRSubmissionValidate(t *testing.T) {
	cases := []bodyCase[CSRSubmission]{
		{"csr missing", func(c *CSRSubmission) { c.CSR = nil }, CodeBadRequest, "csr: required"},
		{"csr garbage", func(c *CSRSubmission) { c.CSR = []byte("CSR") }, CodeBadRequest, "csr: not DER"},
		{"csr too large", func(c *CSRSubmission) { c.CSR = make([]byte, MaxCSRSize+1) }, CodeTooLarge, "csr: 16385 bytes"},
		{"key id missing", func(c *CSRSubmission) { c.KeyID = "" }, CodeBadRequest, "key_id: required"},
		{"public key missing", func(c *CSRSubmission) { c.PublicKey = nil }, CodeBadRequest, "public_key: required"},
		{"no token serial", func(c *CSRSubmission) { c.TokenSerial = "" }, "", ""},
	}
	runBodyCases(t, sampleOf[CSRSubmission](t, TypeCSR), cases)
}

func TestResultValidate(t *testing.T) {
	m := testMaterial(t)
	cases := []bodyCase[Result]{
		{"outcome missing", func(r *Result) { r.Outcome = "" }, CodeBadRequest, "outcome: required"},
		{"outcome unknown", func(r *Result) { r.Outcome = "partial" }, CodeBadRequest, `outcome: unknown value "partial"`},
		{"failed without error", func(r *Result) { r.Error = nil }, CodeBadRequest, "error: required when outcome is failed"},
		{"succeeded with error", func(r *Result) { r.Outcome = OutcomeSucceeded }, CodeBadRequest, "error: set although outcome is succeeded"},
		{"succeeded", func(r *Result) { r.Outcome, r.Error = OutcomeSucceeded, nil }, "", ""},
		{"error code missing", func(r *Result) { r.Error.Code = "" }, CodeBadRequest, "error: code: required"},
		{"error code upper case", func(r *Result) { r.Error.Code = "Token.PIN" }, CodeBadRequest, `error: code "Token.PIN": byte 0`},
		{"error code empty word", func(r *Result) { r.Error.Code = "token..pin" }, CodeBadRequest, `error: code "token..pin": empty word`},
		{"error code trailing dot", func(r *Result) { r.Error.Code = "token." }, CodeBadRequest, `ends with '.'`},
		{"error code digit first", func(r *Result) { r.Error.Code = "9lives" }, CodeBadRequest, "must start with a letter"},
		{"error code from a newer agent", func(r *Result) { r.Error.Code = "token.biometric_mismatch" }, "", ""},
		{"error message missing", func(r *Result) { r.Error.Message = "" }, CodeBadRequest, "error.message: required"},
		{"outputs serial odd", func(r *Result) { r.Outputs.CertificateSerial = "abc" }, CodeBadRequest, "outputs.certificate_serial: odd number"},
		{"outputs key id", func(r *Result) { r.Outputs.KeyID = "zz" }, CodeBadRequest, "outputs.key_id: byte 0 ('z')"},
		{"outputs pins empty", func(r *Result) { r.Outputs.PINs = &SealedPINs{} }, CodeBadRequest, "outputs.pins: neither user_pin nor so_pin"},
		{"outputs user pin broken", func(r *Result) { r.Outputs.PINs.UserPIN.Algorithm = "" }, CodeBadRequest, "outputs.pins.user_pin.alg: required"},
		{"outputs token invalid", func(r *Result) { r.Outputs.Tokens[0].Serial = "" }, CodeBadRequest, "outputs.tokens[0].serial: required"},
		{"no outputs", func(r *Result) { r.Outputs = nil }, "", ""},
		// register_certificate succeeds with the certificate it read.
		{"certificate registered", func(r *Result) {
			r.Outcome, r.Error = OutcomeSucceeded, nil
			r.Outputs = &Outputs{TokenSerial: "0a1b2c3d4e5f6789", KeyID: DeriveKeyID(testJob), CertificateSerial: "1a2b3c", Certificate: m.certDER}
		}, "", ""},
		{"certificate in a failure", func(r *Result) { r.Outputs.Certificate = m.certDER }, CodeBadRequest, "outputs.certificate: only sent in a succeeded result"},
		{"certificate PEM", func(r *Result) {
			r.Outcome, r.Error = OutcomeSucceeded, nil
			r.Outputs.Certificate = []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
		}, CodeBadRequest, "outputs.certificate: PEM; send the DER bytes"},
		{"certificate too large", func(r *Result) {
			r.Outcome, r.Error = OutcomeSucceeded, nil
			r.Outputs.Certificate = make([]byte, MaxCertificateSize+1)
		}, CodeTooLarge, "outputs.certificate: 16385 bytes, limit 16384"},
		{"certificate not DER", func(r *Result) {
			r.Outcome, r.Error, r.Outputs.Certificate = OutcomeSucceeded, nil, []byte{0x30, 0x05, 0x01}
		}, CodeBadRequest, "outputs.certificate: not DER"},
	}
	runBodyCases(t, sampleOf[Result](t, TypeResult), cases)
}

func TestInventoryValidate(t *testing.T) {
	cases := []bodyCase[Inventory]{
		{"empty", func(i *Inventory) { i.Tokens = nil }, "", ""},
		{"too many tokens", func(i *Inventory) { i.Tokens = make([]Token, MaxTokens+1) }, CodeTooLarge, "tokens: 17 entries, limit 16"},
		{"invalid utf-8 label", func(i *Inventory) { i.Tokens[0].Label = "\xff\xfe" }, CodeBadRequest, "tokens[0].label: not valid UTF-8"},
		{"non-ASCII label", func(i *Inventory) { i.Tokens[0].Label = "Hélène Müller" }, "", ""},
	}
	runBodyCases(t, sampleOf[Inventory](t, TypeInventory), cases)
}

// TestInventoryAtCapsFits measures the inventory of the limits comment:
// every list at its cap, fields of realistic length.
func TestInventoryAtCapsFits(t *testing.T) {
	inv := Inventory{}
	for ti := range MaxTokens {
		tok := Token{
			Serial: fmt.Sprintf("%016x", ti), Label: strings.Repeat("L", 32), Model: "SafeNet eToken 5", Manufacturer: "SafeNet, Inc.",
			URI:          fmt.Sprintf("pkcs11:serial=%016x", ti),
			Flags:        TokenFlags{Initialized: true, UserPINInitialized: true, LoginRequired: true},
			PINMinLength: 6, PINMaxLength: 16,
			USB: &USBIdentity{VendorID: "0529", ProductID: "0620", Serial: "0123456789ab", Vendor: "SafeNet", Product: "eToken 5110"},
		}
		for i := range MaxKeysPerToken {
			tok.Keys = append(tok.Keys, KeyInfo{ID: DeriveKeyID(fmt.Sprint(ti, i)), Label: strings.Repeat("k", 32), Type: "rsa2048", Private: true, Public: true})
		}
		for i := range MaxCertificatesPerToken {
			sum := sha256.Sum256([]byte{byte(ti), byte(i)})
			tok.Certificates = append(tok.Certificates, CertificateInfo{
				ID: DeriveKeyID(fmt.Sprint(ti, i)), Label: strings.Repeat("c", 32),
				Subject: "CN=" + strings.Repeat("s", 97), Issuer: "CN=" + strings.Repeat("i", 97),
				Serial: hex.EncodeToString(sum[:16]), NotBefore: testTime, NotAfter: testTime.AddDate(3, 0, 0),
				SHA256: hex.EncodeToString(sum[:]),
			})
		}
		inv.Tokens = append(inv.Tokens, tok)
	}
	e, err := NewEnvelope(testAgent, JobRef{}, inv)
	if err != nil {
		t.Fatal(err)
	}
	data, err := Encode(e)
	if err != nil {
		t.Fatalf("inventory at the caps does not encode: %v", err)
	}
	t.Logf("inventory at the caps: %d bytes (%d KiB), limit %d", len(data), len(data)>>10, MaxMessageSize)
	if _, err := Decode(data); err != nil {
		t.Fatalf("inventory at the caps does not decode: %v", err)
	}
}
