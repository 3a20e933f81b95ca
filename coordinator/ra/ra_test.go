package ra_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/ra"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// examples loads the example profiles by name.
func examples(t *testing.T) map[string]profile.Profile {
	t.Helper()
	files, err := filepath.Glob("../../examples/profiles/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("example profiles: %v (%d files)", err, len(files))
	}
	out := map[string]profile.Profile{}
	for _, f := range files {
		ps, err := profile.LoadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			out[p.Name] = p
		}
	}
	return out
}

var keyCache = struct {
	sync.Mutex
	m map[string]crypto.Signer
}{m: map[string]crypto.Signer{}}

// key returns a cached test key: "rsa1024", "rsa2048", "rsa3072", "p224", "p256",
// "p384", "p256-other", "e3" (RSA-2048 with public exponent 3), "ed25519".
func key(t *testing.T, name string) crypto.Signer {
	t.Helper()
	keyCache.Lock()
	defer keyCache.Unlock()
	if k, ok := keyCache.m[name]; ok {
		return k
	}
	var (
		k   crypto.Signer
		err error
	)
	switch name {
	case "rsa1024":
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	case "rsa2048":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa3072":
		k, err = rsa.GenerateKey(rand.Reader, 3072)
	case "p224":
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "p256", "p256-other":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "e3":
		k = rsaWithExponent(t, 2048, 3)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("no test key %q", name)
	}
	if err != nil {
		t.Fatal(err)
	}
	keyCache.m[name] = k
	return k
}

// rsaWithExponent builds an RSA key with public exponent e by hand: rsa.GenerateKey
// always uses 65537.
func rsaWithExponent(t *testing.T, bits, e int) *rsa.PrivateKey {
	t.Helper()
	one := big.NewInt(1)
	for {
		p, err := rand.Prime(rand.Reader, bits/2)
		if err != nil {
			t.Fatal(err)
		}
		q, err := rand.Prime(rand.Reader, bits/2)
		if err != nil {
			t.Fatal(err)
		}
		n := new(big.Int).Mul(p, q)
		if p.Cmp(q) == 0 || n.BitLen() != bits {
			continue
		}
		phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
		d := new(big.Int).ModInverse(big.NewInt(int64(e)), phi)
		if d == nil {
			continue // e shares a factor with phi
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: e}, D: d, Primes: []*big.Int{p, q}}
		if err := k.Validate(); err != nil {
			continue
		}
		k.Precompute()
		return k
	}
}

func pkixOf(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// csr makes a CSR signed by k, asking for the names in tmpl (nil: a plain one).
func csr(t *testing.T, k crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: "token key"}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// withSPKI re-encodes a CSR with another SubjectPublicKeyInfo and the old signature,
// which therefore no longer verifies.
func withSPKI(t *testing.T, der, spki []byte) []byte {
	t.Helper()
	var outer struct {
		Info   asn1.RawValue
		SigAlg asn1.RawValue
		Sig    asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &outer); err != nil {
		t.Fatal(err)
	}
	var info struct {
		Version int
		Subject asn1.RawValue
		SPKI    asn1.RawValue
		Attrs   asn1.RawValue
	}
	if _, err := asn1.Unmarshal(outer.Info.FullBytes, &info); err != nil {
		t.Fatal(err)
	}
	info.SPKI = asn1.RawValue{FullBytes: spki}
	infoDER, err := asn1.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	outer.Info = asn1.RawValue{FullBytes: infoDER}
	out, err := asn1.Marshal(outer)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// opensslCSR makes a CSR on a named curve with openssl, which knows curves Go does not;
// extra options go to the key generation.
func opensslCSR(t *testing.T, curve string, pkeyopts ...string) []byte {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required by this test: %v", err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "req.der")
	args := []string{"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:" + curve}
	for _, o := range pkeyopts {
		args = append(args, "-pkeyopt", o)
	}
	args = append(args, "-nodes", "-keyout", filepath.Join(dir, "key.pem"), "-subj", "/CN=token key", "-outform", "DER", "-out", out)
	cmd := exec.Command(path, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl req on %s: %v\n%s", curve, err, b)
	}
	der, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestCheck(t *testing.T) {
	ps := examples(t)
	smartcard, email, server := ps["smartcard-logon"], ps["email-signing"], ps["server-high-assurance"]

	// expect builds the expectation for a CSR of key k under profile p.
	expect := func(p profile.Profile, k crypto.Signer) ra.Expectation {
		return ra.Expectation{JobID: "job-42", Attempt: 2, Profile: p, ReportedKey: pkixOf(t, k.Public())}
	}
	good := csr(t, key(t, "rsa2048"), nil)
	tampered := bytes.Clone(good)
	tampered[len(tampered)-1] ^= 0x01 // last byte of the signature

	evenE := withSPKI(t, good, pkixOf(t, &rsa.PublicKey{N: key(t, "rsa2048").Public().(*rsa.PublicKey).N, E: 65538}))
	evenKey := &rsa.PublicKey{N: key(t, "rsa2048").Public().(*rsa.PublicKey).N, E: 65538}

	pemCSR := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good})
	b64CSR := []byte(base64.StdEncoding.EncodeToString(good))

	tests := []struct {
		name     string
		der      []byte
		exp      ra.Expectation
		code     protocol.ErrorCode // empty: accepted
		sentinel error
		text     string
		keyType  protocol.KeyType
	}{
		{name: "RSA-2048 for smart-card logon", der: good, exp: expect(smartcard, key(t, "rsa2048")), keyType: protocol.KeyRSA2048},
		{name: "P-256 for e-mail signing", der: csr(t, key(t, "p256"), nil), exp: expect(email, key(t, "p256")), keyType: protocol.KeyP256},
		{name: "RSA-3072 for the server profile", der: csr(t, key(t, "rsa3072"), nil), exp: expect(server, key(t, "rsa3072")), keyType: protocol.KeyRSA3072},

		{name: "tampered signature", der: tampered, exp: expect(smartcard, key(t, "rsa2048")),
			code: protocol.CodeCSRRejected, sentinel: ra.ErrCSRRejected, text: "signature does not verify"},
		{name: "RSA-1024", der: csr(t, key(t, "rsa1024"), nil), exp: expect(smartcard, key(t, "rsa1024")),
			code: protocol.CodeWeakKey, sentinel: ra.ErrWeakKey, text: "1024 bits"},
		{name: "exponent 3", der: csr(t, key(t, "e3"), nil), exp: expect(smartcard, key(t, "e3")),
			code: protocol.CodeWeakKey, sentinel: ra.ErrWeakKey, text: "exponent 3 is below 65537"},
		{name: "even exponent", der: evenE, exp: ra.Expectation{JobID: "job-42", Attempt: 2, Profile: smartcard, ReportedKey: pkixOf(t, evenKey)},
			code: protocol.CodeWeakKey, sentinel: ra.ErrWeakKey, text: "65538 is even"},
		{name: "P-224", der: csr(t, key(t, "p224"), nil), exp: expect(email, key(t, "p224")),
			code: protocol.CodeWeakKey, sentinel: ra.ErrWeakKey, text: "P-224"},
		{name: "secp256k1 (not a NIST curve)", der: opensslCSR(t, "secp256k1"), exp: expect(email, key(t, "p256")),
			code: protocol.CodeWeakKey, sentinel: ra.ErrWeakKey, text: "secp256k1"},
		{name: "brainpoolP256r1", der: opensslCSR(t, "brainpoolP256r1"), exp: expect(email, key(t, "p256")),
			code: protocol.CodeWeakKey, sentinel: ra.ErrWeakKey, text: "brainpoolP256r1"},
		{name: "explicit curve parameters", der: opensslCSR(t, "P-256", "ec_param_enc:explicit"), exp: expect(email, key(t, "p256")),
			code: protocol.CodeWeakKey, sentinel: ra.ErrWeakKey, text: "explicit curve parameters"},
		{name: "ed25519", der: csr(t, key(t, "ed25519"), nil), exp: expect(email, key(t, "ed25519")),
			code: protocol.CodeWeakKey, sentinel: ra.ErrWeakKey, text: "Ed25519 keys are not accepted"},

		{name: "EC key for an RSA profile", der: csr(t, key(t, "p256"), nil), exp: expect(smartcard, key(t, "p256")),
			code: protocol.CodePolicyViolation, sentinel: ra.ErrPolicyViolation, text: "ec-P-256 is not allowed (rsa-2048)"},
		{name: "P-384 where the profile says P-256", der: csr(t, key(t, "p384"), nil), exp: expect(email, key(t, "p384")),
			code: protocol.CodePolicyViolation, sentinel: ra.ErrPolicyViolation, text: "ec-P-384"},
		{name: "RSA-2048 where the profile wants 3072 or 4096", der: good, exp: expect(server, key(t, "rsa2048")),
			code: protocol.CodePolicyViolation, sentinel: ra.ErrPolicyViolation, text: "rsa-3072, rsa-4096"},

		{name: "key other than the reported one", der: csr(t, key(t, "p256"), nil), exp: expect(email, key(t, "p256-other")),
			code: protocol.CodeKeyMismatch, sentinel: ra.ErrKeyMismatch, text: "not the key reported"},
		{name: "no key reported", der: good, exp: ra.Expectation{JobID: "job-42", Attempt: 2, Profile: smartcard},
			code: protocol.CodeKeyMismatch, sentinel: ra.ErrKeyMismatch, text: "no key was reported"},
		{name: "unreadable reported key", der: good, exp: ra.Expectation{JobID: "job-42", Attempt: 2, Profile: smartcard, ReportedKey: []byte{0x30, 0x00}},
			code: protocol.CodeKeyMismatch, sentinel: ra.ErrKeyMismatch, text: "unreadable"},

		{name: "second CSR for the attempt", der: good, exp: func() ra.Expectation {
			e := expect(smartcard, key(t, "rsa2048"))
			e.CSRAccepted = true
			return e
		}(), code: protocol.CodeCSRRejected, sentinel: ra.ErrCSRRejected, text: "already accepted"},
		{name: "PEM instead of DER", der: pemCSR, exp: expect(smartcard, key(t, "rsa2048")),
			code: protocol.CodeCSRRejected, sentinel: ra.ErrCSRRejected, text: "PEM text; send the DER bytes"},
		{name: "base64 instead of DER", der: b64CSR, exp: expect(smartcard, key(t, "rsa2048")),
			code: protocol.CodeCSRRejected, sentinel: ra.ErrCSRRejected, text: "base64"},
		{name: "oversized", der: append(bytes.Clone(good), make([]byte, ra.MaxCSRSize)...), exp: expect(smartcard, key(t, "rsa2048")),
			code: protocol.CodeCSRRejected, sentinel: ra.ErrCSRRejected, text: "exceeds the limit"},
		{name: "empty", der: nil, exp: expect(smartcard, key(t, "rsa2048")),
			code: protocol.CodeCSRRejected, sentinel: ra.ErrCSRRejected, text: "empty"},
		{name: "not DER", der: []byte("hello, coordinator"), exp: expect(smartcard, key(t, "rsa2048")),
			code: protocol.CodeCSRRejected, sentinel: ra.ErrCSRRejected, text: "not DER"},
		{name: "trailing bytes", der: append(bytes.Clone(good), 0, 0), exp: expect(smartcard, key(t, "rsa2048")),
			code: protocol.CodeCSRRejected, sentinel: ra.ErrCSRRejected, text: "not a PKCS#10 CSR"},
		{name: "a certificate, not a CSR", der: selfSigned(t, key(t, "rsa2048")), exp: expect(smartcard, key(t, "rsa2048")),
			code: protocol.CodeCSRRejected, sentinel: ra.ErrCSRRejected, text: "not a PKCS#10 CSR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ra.Check(tt.der, tt.exp)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if got.KeyType != tt.keyType || got.JobID != "job-42" || got.Attempt != 2 || got.Profile != tt.exp.Profile.Name {
					t.Errorf("checked CSR %+v", got)
				}
				reported, _ := x509.ParsePKIXPublicKey(tt.exp.ReportedKey)
				if !got.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(reported) {
					t.Error("checked key is not the reported key")
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want %s", tt.code)
			}
			if got != nil {
				t.Error("a refusal returned a checked CSR")
			}
			if c := protocol.CodeOf(err); c != tt.code {
				t.Errorf("code %q, want %q (%v)", c, tt.code, err)
			}
			if !errors.Is(err, tt.sentinel) || !errors.Is(err, &protocol.Error{Code: tt.code}) {
				t.Errorf("errors.Is does not match %s: %v", tt.code, err)
			}
			var re *ra.Error
			if !errors.As(err, &re) || re.JobID != "job-42" || re.Attempt != 2 {
				t.Errorf("error does not name the attempt: %v", err)
			}
			if strings.Count(err.Error(), string(tt.code)) != 1 {
				t.Errorf("error %q does not name its code once", err)
			}
			if !strings.Contains(err.Error(), tt.text) || !strings.Contains(err.Error(), "job-42") {
				t.Errorf("error %q does not say %q", err, tt.text)
			}
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Validate() != nil || pe.Message == "" {
				t.Errorf("wire form %+v is not a valid protocol error", pe)
			}
		})
	}
}

func selfSigned(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestBuildSignRequest(t *testing.T) {
	ps := examples(t)
	smartcard := ps["smartcard-logon"]
	k := key(t, "rsa2048")
	checked, err := ra.Check(csr(t, k, nil), ra.Expectation{JobID: "job-7", Attempt: 1, Profile: smartcard, ReportedKey: pkixOf(t, k.Public())})
	if err != nil {
		t.Fatal(err)
	}
	id, err := smartcard.Render(profile.Holder{ID: "u1", Name: "Alice Martin", Organization: "Example Org", UPN: "alice@corp.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	req, err := ra.BuildSignRequest(checked, smartcard, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := req.Validate(); err != nil {
		t.Errorf("the request does not validate: %v", err)
	}
	u, _ := smartcard.Usages()
	switch {
	case req.PublicKey != checked.PublicKey:
		t.Error("not the checked key")
	case req.Identity.Subject.String() != id.Subject.String() || len(req.Identity.UPNs) != 1 || req.Identity.UPNs[0] != "alice@corp.example.org":
		t.Errorf("identity %+v", req.Identity)
	case req.Identity.TokenLabel != "":
		t.Error("token label carried into the certificate request")
	case req.Usages.KeyUsage != u.KeyUsage || len(req.Usages.UnknownExtKeyUsage) != 1:
		t.Errorf("usages %+v", req.Usages)
	case req.JobID != "job-7" || req.Attempt != 1 || req.Profile != "smartcard-logon":
		t.Errorf("record fields %q %d %q", req.JobID, req.Attempt, req.Profile)
	case req.Validity != 730*24*time.Hour:
		t.Errorf("validity %s", req.Validity)
	}

	if _, err := ra.BuildSignRequest(checked, ps["email-signing"], id); !errors.Is(err, ra.ErrPolicyViolation) {
		t.Errorf("another profile than the one checked: %v", err)
	}
	if _, err := ra.BuildSignRequest(nil, smartcard, id); err == nil {
		t.Error("nil checked CSR accepted")
	}
}

func TestIgnored(t *testing.T) {
	ps := examples(t)
	k := key(t, "p256")
	exp := ra.Expectation{JobID: "j", Attempt: 1, Profile: ps["email-signing"], ReportedKey: pkixOf(t, k.Public())}
	plain, err := ra.Check(csr(t, k, &x509.CertificateRequest{}), exp)
	if err != nil {
		t.Fatal(err)
	}
	if got := plain.Ignored(); got != "" {
		t.Errorf("a CSR asking for nothing: Ignored() = %q", got)
	}
	asking, err := ra.Check(csr(t, k, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "Mallory"},
		DNSNames:       []string{"evil.example"},
		EmailAddresses: []string{"mallory@evil.example"},
	}), exp)
	if err != nil {
		t.Fatal(err)
	}
	if got := asking.Ignored(); !strings.Contains(got, "CN=Mallory") || !strings.Contains(got, "2 subject alternative names") {
		t.Errorf("Ignored() = %q", got)
	}
}
