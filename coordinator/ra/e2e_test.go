package ra_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/ca/builtin"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/ra"
)

func runOpenSSL(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required by this test: %v", err)
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func writePEMFile(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCSRNamesIgnored follows a CSR that asks for another identity, CA powers and extra
// SANs through the RA and the built-in CA: the certificate carries the approved identity
// only.
func TestCSRNamesIgnored(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	authority, err := builtin.New(ctx, ca.Options{
		DataDir:     filepath.Join(dir, "ca"),
		Revocations: &ca.MemRevocations{},
		Logger:      zerolog.Nop(),
		Builtin:     ca.BuiltinOptions{CRLURL: "http://coordinator.test/crl", Organization: "Example Org"},
	})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	writePEMFile(t, caFile, "CERTIFICATE", authority.CACertificates()[0].Raw)

	p := examples(t)["smartcard-logon"]
	approved := profile.Holder{ID: "u-1001", Name: "Alice Martin", Organization: "Example Org", UPN: "alice.martin@corp.example.org"}
	id, err := p.Render(approved)
	if err != nil {
		t.Fatal(err)
	}

	k := key(t, "rsa2048")
	basicCA, err := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	if err != nil {
		t.Fatal(err)
	}
	der := csr(t, k, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "Administrator", Organization: []string{"Evil Corp"}},
		DNSNames:       []string{"dc01.corp.example.org"},
		EmailAddresses: []string{"mallory@evil.example"},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: basicCA}, // asks to be a CA
		},
	})
	checked, err := ra.Check(der, ra.Expectation{JobID: "job-9", Attempt: 1, Profile: p, ReportedKey: pkixOf(t, k.Public())})
	if err != nil {
		t.Fatal(err)
	}
	if ign := checked.Ignored(); !strings.Contains(ign, "Administrator") || !strings.Contains(ign, "1 other requested extensions") {
		t.Errorf("Ignored() = %q", ign)
	}
	req, err := ra.BuildSignRequest(checked, p, id)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := authority.Sign(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(dir, "cert.pem")
	writePEMFile(t, certFile, "CERTIFICATE", cert.Raw)

	if out := runOpenSSL(t, "verify", "-CAfile", caFile, certFile); !strings.Contains(out, ": OK") {
		t.Fatalf("openssl verify: %s", out)
	}
	subject := strings.TrimSpace(runOpenSSL(t, "x509", "-in", certFile, "-noout", "-subject", "-nameopt", "RFC2253"))
	if subject != "subject=CN=Alice Martin,O=Example Org" {
		t.Errorf("subject %q", subject)
	}
	san := runOpenSSL(t, "x509", "-in", certFile, "-noout", "-ext", "subjectAltName")
	if lines := strings.Split(strings.TrimSpace(san), "\n"); len(lines) != 2 || strings.TrimSpace(lines[1]) != "othername: UPN::alice.martin@corp.example.org" {
		t.Errorf("SANs:\n%s", san)
	}
	text := runOpenSSL(t, "x509", "-in", certFile, "-noout", "-text")
	for _, banned := range []string{"Administrator", "Evil", "evil", "dc01", "mallory", "CA:TRUE"} {
		if strings.Contains(text, banned) {
			t.Errorf("certificate carries %q from the CSR:\n%s", banned, text)
		}
	}
	if !strings.Contains(text, "CA:FALSE") {
		t.Error("certificate is not marked end-entity")
	}
	if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
		t.Error("certificate is not for the CSR's key")
	}
}
