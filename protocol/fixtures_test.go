package protocol

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

// testTime is a fixed instant with nanoseconds, so that round trips show
// whether precision survives.
var testTime = time.Date(2026, 11, 21, 9, 30, 15, 123456789, time.UTC)

const (
	testAgent = "ws-0042"
	testJob   = "0193a5c4-7d2e-7b1f-9c3a-2f4e5d6c7b8a"
)

var testJobRef = JobRef{JobID: testJob, Attempt: 3}

// material is real DER produced by the standard library: the validators
// see the same bytes as in production.
type material struct {
	certDER, issuerDER, csrDER []byte
	pubDER                     []byte // PKIX P-256 key of the leaf
	sealKeyDER                 []byte // PKIX X25519 key
}

var (
	materialOnce sync.Once
	materialVal  material
	materialErr  error
)

func testMaterial(t testing.TB) material {
	t.Helper()
	materialOnce.Do(func() { materialVal, materialErr = makeMaterial() })
	if materialErr != nil {
		t.Fatalf("test material: %v", materialErr)
	}
	return materialVal
}

func makeMaterial() (material, error) {
	var m material
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return m, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return m, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test Issuing CA"},
		NotBefore:             testTime.Add(-time.Hour),
		NotAfter:              testTime.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	if m.issuerDER, err = x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey); err != nil {
		return m, err
	}
	ca, err := x509.ParseCertificate(m.issuerDER)
	if err != nil {
		return m, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0x1a2b3c),
		Subject:      pkix.Name{CommonName: "Alice Martin", Organization: []string{"Example"}},
		NotBefore:    testTime,
		NotAfter:     testTime.Add(2 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if m.certDER, err = x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey); err != nil {
		return m, err
	}
	if m.csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "Alice Martin"}}, key); err != nil {
		return m, err
	}
	if m.pubDER, err = x509.MarshalPKIXPublicKey(&key.PublicKey); err != nil {
		return m, err
	}
	sk, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return m, err
	}
	m.sealKeyDER, err = x509.MarshalPKIXPublicKey(sk.PublicKey())
	return m, err
}

// testSealed has the shape of a sealed value; only protocol/seal makes real
// ones, and Validate checks shape only.
func testSealed(fill byte) *Sealed {
	return &Sealed{
		Algorithm:    SealAlgorithm,
		KeyID:        strings.Repeat("ab", FingerprintSize),
		EphemeralKey: bytesOf(fill, SealEphemeralKeySize),
		Nonce:        bytesOf(fill+1, SealNonceSize),
		Ciphertext:   bytesOf(fill+2, SealTagSize+6),
	}
}

// sealedKey has the shape of a sealed PKCS#8 private key, longer than any
// PIN may be.
func sealedKey(fill byte) *Sealed {
	s := testSealed(fill)
	s.Ciphertext = bytesOf(fill+2, SealTagSize+4096)
	return s
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b + byte(i)
	}
	return out
}

func testToken(m material) Token {
	return Token{
		Serial:       "0a1b2c3d4e5f6789",
		Label:        "Alice Martin",
		Model:        "SoftHSM v2",
		Manufacturer: "SoftHSM project",
		URI:          "pkcs11:serial=0a1b2c3d4e5f6789",
		Flags:        TokenFlags{Initialized: true, UserPINInitialized: true, LoginRequired: true, UserPINCountLow: true},
		PINMinLength: 4,
		PINMaxLength: 255,
		USB:          &USBIdentity{VendorID: "1050", ProductID: "0407", Serial: "12345678", Vendor: "Yubico", Product: "YubiKey 5"},
		Keys: []KeyInfo{
			{ID: DeriveKeyID(testJob), Label: "signing", Type: string(KeyP256), Private: true, Public: true},
			{ID: "01", Label: "legacy", Type: "rsa1024", Public: true},
		},
		Certificates: []CertificateInfo{{
			ID:        DeriveKeyID(testJob),
			Label:     "signing",
			Subject:   "CN=Alice Martin,O=Example",
			Issuer:    "CN=Test Issuing CA",
			Serial:    "1a2b3c",
			NotBefore: testTime,
			NotAfter:  testTime.Add(2 * 365 * 24 * time.Hour),
			SHA256:    strings.Repeat("0f", 32),
		}},
	}
}

type sample struct {
	job  JobRef
	body Body
}

// testSamples returns one valid, fully populated body per message type.
func testSamples(t testing.TB) map[MessageType]sample {
	m := testMaterial(t)
	keyID := DeriveKeyID(testJob)
	return map[MessageType]sample{
		TypeDispatch: {testJobRef, JobDispatch{
			Kind:       KindIssue,
			Deadline:   testTime.Add(48 * time.Hour),
			Profile:    "qualified-signature",
			Token:      TokenSelector{Model: "SoftHSM v2", Blank: true, URI: "pkcs11:model=SoftHSM%20v2"},
			Initialise: true,
			TokenLabel: "Alice Martin",
			PINPolicy:  &PINPolicy{MinLength: 6, MaxLength: 8, DigitsOnly: true},
			Key:        &KeyParams{Type: KeyP256, ID: keyID, Label: "signing"},
			PINs:       &SealedPINs{SOPIN: testSealed(1)},
			ResultKey:  m.sealKeyDER,
		}},
		TypeCertificate: {testJobRef, CertificateDelivery{
			KeyID:        keyID,
			Certificates: CertificateChain{Certificate: m.certDER, Chain: [][]byte{m.issuerDER}, Label: "signing"},
		}},
		TypeCancel: {testJobRef, Cancel{State: StateSuperseded, Reason: "a newer request for the same user and profile"}},
		TypeHello: {JobRef{}, Hello{
			InstanceID:   "4f6b2d1e-8a3c-4b5d-9e7f-1a2b3c4d5e6f",
			Hostname:     "ws-0042.corp.example",
			OS:           "linux",
			Arch:         "amd64",
			AgentVersion: "1.0.0",
			Protocol:     VersionRange{Min: 1, Max: Version},
			SealKey:      m.sealKeyDER,
			Tokens:       []Token{testToken(m)},
		}},
		TypeHeartbeat: {JobRef{}, Heartbeat{
			InstanceID:    "4f6b2d1e-8a3c-4b5d-9e7f-1a2b3c4d5e6f",
			Seq:           17,
			UptimeSeconds: 3600,
			CurrentJob:    &JobRef{JobID: testJob, Attempt: 3},
			Step:          StepWaitingForToken,
		}},
		TypeProgress: {testJobRef, Progress{
			Step:        StepKeyGenerated,
			Detail:      "P-256 key generated on the token",
			TokenSerial: "0a1b2c3d4e5f6789",
			KeyID:       keyID,
			PublicKey:   m.pubDER,
			KeyExisted:  true,
		}},
		TypeCSR: {testJobRef, CSRSubmission{CSR: m.csrDER, KeyID: keyID, PublicKey: m.pubDER, TokenSerial: "0a1b2c3d4e5f6789"}},
		TypeResult: {testJobRef, Result{
			Outcome: OutcomeFailed,
			Error:   NewError(CodeTokenDeviceRemoved, "token 0a1b2c3d4e5f6789 removed while writing the certificate"),
			Outputs: &Outputs{
				TokenSerial:       "0a1b2c3d4e5f6789",
				KeyID:             keyID,
				CertificateSerial: "1a2b3c",
				PINs:              &SealedPINs{UserPIN: testSealed(10), SOPIN: testSealed(20)},
				Tokens:            []Token{testToken(m)},
			},
		}},
		TypeInventory: {JobRef{}, Inventory{Tokens: []Token{testToken(m), {Serial: "blank01", Flags: TokenFlags{}}}}},
	}
}

// encodeSample builds and encodes the sample of type t.
func encodeSample(t testing.TB, typ MessageType) []byte {
	t.Helper()
	s, ok := testSamples(t)[typ]
	if !ok {
		t.Fatalf("no sample for %s", typ)
	}
	e, err := NewEnvelope(testAgent, s.job, s.body)
	if err != nil {
		t.Fatalf("NewEnvelope(%s): %v", typ, err)
	}
	e.ID = "0b7e4c1a-2d3f-4e5a-8b6c-7d8e9f0a1b2c"
	e.Time = testTime
	data, err := Encode(e)
	if err != nil {
		t.Fatalf("Encode(%s): %v", typ, err)
	}
	return data
}
