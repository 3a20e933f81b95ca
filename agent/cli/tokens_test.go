package cli_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/cli"
	"github.com/tokenfleet/tokenfleet/agent/inventory"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.MainWithSoftHSM(m)) }

// tokenWithCertificate prepares a token entirely with tools this project did not write:
// softhsm2-util initialises it, pkcs11-tool generates the key and writes the certificate.
func tokenWithCertificate(t *testing.T, label, cn string, notAfter time.Time) (serial string) {
	t.Helper()
	const pin = "123456"
	serial = testenv.InitToken(t, label, "12345678", pin)
	dir := t.TempDir()
	testenv.PKCS11Tool(t, "--token-label", label, "--login", "--pin", pin,
		"--keypairgen", "--key-type", "EC:prime256v1", "--id", "a1", "--label", "holder key")
	pubPath := filepath.Join(dir, "pub.der")
	testenv.PKCS11Tool(t, "--token-label", label, "--read-object", "--type", "pubkey", "--id", "a1", "-o", pubPath)
	pubDER, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(pubDER)
	if err != nil {
		t.Fatalf("public key from pkcs11-tool: %v", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(4242),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Acme"}},
		Issuer:       pkix.Name{CommonName: "Test CA"},
		NotBefore:    time.Now().Add(-time.Hour).Truncate(time.Second),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	parent := &x509.Certificate{Subject: pkix.Name{CommonName: "Test CA"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	certPath := filepath.Join(dir, "cert.der")
	if err := os.WriteFile(certPath, der, 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.PKCS11Tool(t, "--token-label", label, "--login", "--pin", pin,
		"--write-object", certPath, "--type", "cert", "--id", "a1", "--label", "holder cert")
	return serial
}

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = cli.Main(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func findToken(t *testing.T, rep *inventory.Report, serial string) inventory.SlotReport {
	t.Helper()
	for _, m := range rep.Modules {
		for _, s := range m.Slots {
			if s.Token != nil && s.Token.Serial == serial {
				return s
			}
		}
	}
	t.Fatalf("token %s not in the report", serial)
	return inventory.SlotReport{}
}

func TestTokensListsTokenAndCertificate(t *testing.T) {
	notAfter := time.Now().Add(400 * 24 * time.Hour).UTC().Truncate(time.Second)
	serial := tokenWithCertificate(t, "listed", "Alice Example", notAfter)

	stdout, stderr, code := run(t, "tokens", "--module", testenv.SoftHSMModule, "--json", "--no-usb")
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, stderr)
	}
	var rep inventory.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, stdout)
	}
	s := findToken(t, &rep, serial)
	if s.Token.Label != "listed" || !s.Token.Initialized || !s.Token.UserPINInitialized {
		t.Errorf("token info = %+v", s.Token)
	}
	if len(s.Certificates) != 1 {
		t.Fatalf("certificates = %+v, want one", s.Certificates)
	}
	c := s.Certificates[0]
	if c.Subject != "CN=Alice Example,O=Acme" || !c.NotAfter.Equal(notAfter) || c.ID != "a1" || c.Expired {
		t.Errorf("certificate = %+v; want subject CN=Alice Example,O=Acme, not after %s, id a1", c, notAfter)
	}

	// The table names the same things for people.
	stdout, _, code = run(t, "tokens", "--module", testenv.SoftHSMModule, "--no-usb")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{`Token "listed"`, "serial " + serial, "CN=Alice Example,O=Acme", notAfter.Format("2006-01-02"), "user PIN    ok"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
}

func TestTokensShowsExpiredAndLockedState(t *testing.T) {
	serial := tokenWithCertificate(t, "expired", "Bob Example", time.Now().Add(-time.Minute).UTC().Truncate(time.Second))
	stdout, _, code := run(t, "tokens", "--module", testenv.SoftHSMModule, "--json", "--no-usb")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var rep inventory.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if c := findToken(t, &rep, serial).Certificates; len(c) != 1 || !c[0].Expired {
		t.Errorf("certificates = %+v, want one expired", c)
	}
}

func TestTokensModuleThatDoesNotLoad(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "libnothere.so")
	notELF := filepath.Join(t.TempDir(), "notamodule.so")
	if err := os.WriteFile(notELF, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, reason string }{
		{bad, "does not exist"},
		{notELF, "not an ELF shared library"},
	} {
		stdout, stderr, code := run(t, "tokens", "--module", tc.path, "--module", testenv.SoftHSMModule, "--no-usb")
		if code != cli.ExitError {
			t.Errorf("%s: exit %d, want %d", tc.path, code, cli.ExitError)
		}
		if !strings.Contains(stdout, tc.path) || !strings.Contains(stdout, tc.reason) {
			t.Errorf("%s: output does not name the path and %q:\n%s%s", tc.path, tc.reason, stdout, stderr)
		}
		// The module that works is still listed.
		if !strings.Contains(stdout, "Module "+testenv.SoftHSMModule+" (SoftHSM") {
			t.Errorf("the working module is missing:\n%s", stdout)
		}
	}
}

func TestTokensNoTokenSaysSo(t *testing.T) {
	// No module given and no USB bus here: nothing to look at, and it says so.
	stdout, stderr, code := run(t, "tokens")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "No token found") {
		t.Errorf("output = %q", stdout)
	}
}

func TestTokensUsageErrors(t *testing.T) {
	_, stderr, code := run(t, "tokens", "--bogus")
	if code != cli.ExitUsage || !strings.Contains(stderr, "bogus") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	_, _, code = run(t, "tokens", "extra-arg")
	if code == 0 {
		t.Errorf("an unexpected argument was accepted")
	}
}

// TestTokensBinary runs the built program, as an administrator would.
func TestTokensBinary(t *testing.T) {
	serial := tokenWithCertificate(t, "binary", "Carol Example", time.Now().Add(30*24*time.Hour).UTC().Truncate(time.Second))
	bin := testenv.Binary(t, "./agent/cmd/tokenfleet-agent")
	out, err := exec.Command(bin, "tokens", "--module", testenv.SoftHSMModule, "--json").Output()
	if err != nil {
		t.Fatalf("tokenfleet-agent tokens: %v", err)
	}
	var rep inventory.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatal(err)
	}
	s := findToken(t, &rep, serial)
	if s.Token.Label != "binary" || len(s.Certificates) != 1 || s.Certificates[0].Subject != "CN=Carol Example,O=Acme" {
		t.Errorf("slot = %+v", s)
	}
}
