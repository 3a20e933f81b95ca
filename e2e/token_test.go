//go:build cgo

package e2e_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// Everything here looks at the token from outside, with OpenSC's pkcs11-tool and openssl:
// separate processes, which read the SoftHSM2 store as it is on disk now.

// tool runs a program and returns its standard output; it fails the test on a non-zero
// exit, with the standard error.
func tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, errOut, err := toolErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// toolErr runs a program and returns its standard output and error, and how it ended.
func toolErr(name string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(name, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func p11(t testing.TB, args ...string) string {
	t.Helper()
	return tool(t, "pkcs11-tool", append([]string{"--module", testenv.SoftHSMModule}, args...)...)
}

func p11Err(args ...string) (string, string, error) {
	return toolErr("pkcs11-tool", append([]string{"--module", testenv.SoftHSMModule}, args...)...)
}

// slotInfo is a slot as pkcs11-tool -L lists it.
type slotInfo struct {
	id          string // hex, e.g. 0x6b44622a
	label       string
	serial      string
	flags       string
	initialized bool
}

// slots lists the slots of the store.
func slots(t testing.TB) []slotInfo {
	t.Helper()
	return parseSlots(p11(t, "--list-slots"))
}

// parseSlots reads pkcs11-tool --list-slots.
func parseSlots(out string) []slotInfo {
	var slots []slotInfo
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "Slot "); ok {
			_, id, _ := strings.Cut(rest, "(")
			id, _, _ = strings.Cut(id, ")")
			slots = append(slots, slotInfo{id: id})
			continue
		}
		if len(slots) == 0 {
			continue
		}
		s := &slots[len(slots)-1]
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.TrimSpace(key) {
		case "token label":
			s.label = value
		case "serial num":
			s.serial = value
		case "token flags":
			s.flags = value
			s.initialized = strings.Contains(value, "token initialized")
		}
	}
	return slots
}

// slotOf finds the token with the serial and fails the test unless exactly one has it.
func slotOf(t testing.TB, serial string) slotInfo {
	t.Helper()
	var found []slotInfo
	all := slots(t)
	for _, s := range all {
		if s.serial == serial {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("pkcs11-tool lists %d tokens with serial %s, want 1: %+v", len(found), serial, all)
	}
	return found[0]
}

// initializedTokens lists the initialised tokens of the store.
func initializedTokens(t testing.TB) []slotInfo {
	t.Helper()
	var out []slotInfo
	for _, s := range slots(t) {
		if s.initialized {
			out = append(out, s)
		}
	}
	return out
}

// object is an object as pkcs11-tool --list-objects shows it.
type object struct {
	class  string // "Private Key", "Public Key", "Certificate", "Data"
	label  string
	id     string
	access string
}

// objects lists the token's objects; with a PIN it logs in first (private objects too).
func objects(t testing.TB, serial, pin string) []object {
	t.Helper()
	args := []string{"--slot", slotOf(t, serial).id, "--list-objects"}
	if pin != "" {
		args = append(args, "--login", "--pin", pin)
	}
	var out []object
	for _, line := range strings.Split(p11(t, args...), "\n") {
		if class, _, ok := strings.Cut(line, " Object;"); ok && !strings.HasPrefix(line, " ") {
			out = append(out, object{class: class})
			continue
		}
		if class, ok := strings.CutSuffix(line, " Object"); ok && !strings.HasPrefix(line, " ") {
			out = append(out, object{class: class})
			continue
		}
		if len(out) == 0 {
			continue
		}
		o := &out[len(out)-1]
		key, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch key {
		case "label":
			o.label = value
		case "ID":
			o.id = value
		case "Access":
			o.access = value
		}
	}
	return out
}

func count(objs []object, class, id string) int {
	n := 0
	for _, o := range objs {
		if o.class == class && (id == "" || o.id == id) {
			n++
		}
	}
	return n
}

func describeObjects(objs []object) string {
	var b strings.Builder
	for _, o := range objs {
		fmt.Fprintf(&b, "\n  %s id=%s label=%q access=%q", o.class, o.id, o.label, o.access)
	}
	return b.String()
}

// wantOnlyKeyAndCertificate checks, logged in with the PIN, that the token holds exactly
// one private key, under keyID, sensitive, never extractable and made on the token, and
// one certificate under keyID, the one given (DER), besides the CA certificates the agent
// writes with it (caIDs: their IDs); and that the certificate belongs to the key: its
// public key is the token's public key of that ID, and the private key signs what the
// certificate's key verifies. It returns the certificate as PEM in a file.
func wantOnlyKeyAndCertificate(t testing.TB, serial, pin, keyID string, wantDER []byte) string {
	t.Helper()
	objs := objects(t, serial, pin)
	var others []object
	for _, o := range objs {
		switch {
		case (o.class == "Private Key" || o.class == "Public Key" || o.class == "Certificate") && o.id == keyID:
		case o.class == "Certificate" && o.label == caLabel:
		default:
			others = append(others, o)
		}
	}
	if count(objs, "Private Key", keyID) != 1 || count(objs, "Certificate", keyID) != 1 || len(others) != 0 {
		t.Fatalf("token %s holds, want exactly one private key and one certificate with ID %s (and the CA's certificate):%s",
			serial, keyID, describeObjects(objs))
	}
	for _, o := range objs {
		if o.class == "Private Key" {
			for _, want := range []string{"sensitive", "always sensitive", "never extractable", "local"} {
				if !slices.Contains(strings.Split(o.access, ", "), want) {
					t.Errorf("private key %s access %q: want %s", o.id, o.access, want)
				}
			}
		}
	}
	return wantKeyMatchesCertificate(t, serial, pin, keyID, wantDER)
}

// caLabel is the label of the CA certificate the agent writes with the holder's.
const caLabel = "tokenfleet CA"

// wantKeyMatchesCertificate reads the certificate and the public key of keyID off the token
// and checks with openssl that they hold the same key, that the certificate is wantDER
// (when given), and that the private key signs what the certificate verifies.
func wantKeyMatchesCertificate(t testing.TB, serial, pin, keyID string, wantDER []byte) string {
	t.Helper()
	dir := t.TempDir()
	slot := slotOf(t, serial).id
	certDER := filepath.Join(dir, "cert.der")
	p11(t, "--slot", slot, "--read-object", "--type", "cert", "--id", keyID, "-o", certDER)
	got, err := os.ReadFile(certDER)
	if err != nil {
		t.Fatal(err)
	}
	if wantDER != nil && !bytes.Equal(got, wantDER) {
		t.Errorf("the certificate on token %s is not the one the coordinator issued", serial)
	}
	certPEM := filepath.Join(dir, "cert.pem")
	tool(t, "openssl", "x509", "-inform", "DER", "-in", certDER, "-out", certPEM)
	certPub := tool(t, "openssl", "x509", "-in", certPEM, "-noout", "-pubkey")

	pubDER := filepath.Join(dir, "pub.der")
	p11(t, "--slot", slot, "--read-object", "--type", "pubkey", "--id", keyID, "-o", pubDER)
	tokenPub := tool(t, "openssl", "pkey", "-pubin", "-inform", "DER", "-in", pubDER, "-pubout")
	if tokenPub != certPub {
		t.Errorf("token %s: the public key object %s is not the certificate's key:\n%s\n%s", serial, keyID, tokenPub, certPub)
	}
	certMod := tool(t, "openssl", "x509", "-in", certPEM, "-noout", "-modulus")
	pubMod := tool(t, "openssl", "rsa", "-pubin", "-inform", "DER", "-in", pubDER, "-noout", "-modulus")
	if certMod != pubMod {
		t.Errorf("token %s: modulus of the certificate %s, of the public key %s", serial, certMod, pubMod)
	}

	// The private key signs; openssl verifies with the certificate's public key.
	data := filepath.Join(dir, "challenge")
	if err := os.WriteFile(data, []byte("tokenfleet e2e challenge "+t.Name()), 0o600); err != nil {
		t.Fatal(err)
	}
	sig := filepath.Join(dir, "sig")
	p11(t, "--slot", slot, "--login", "--pin", pin, "--sign", "--id", keyID, "--mechanism", "SHA256-RSA-PKCS",
		"--input-file", data, "--output-file", sig)
	pubPEM := filepath.Join(dir, "cert-pub.pem")
	if err := os.WriteFile(pubPEM, []byte(certPub), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := tool(t, "openssl", "dgst", "-sha256", "-verify", pubPEM, "-signature", sig, data); !strings.Contains(out, "Verified OK") {
		t.Errorf("openssl dgst -verify: %s", out)
	}
	return certPEM
}

// wantVerifiedByCA checks with openssl verify that the CA certificates (PEM, as
// tokenfleetctl ca cert prints them) accept the certificate.
func wantVerifiedByCA(t testing.TB, caPEM, certPEMFile string) {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte(caPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := toolErr("openssl", "verify", "-CAfile", ca, certPEMFile)
	if err != nil || !strings.Contains(out, ": OK") {
		t.Errorf("openssl verify -CAfile <the coordinator's CA>: %v\n%s%s", err, out, errOut)
	}
}

// wantLogin checks that the PIN logs in to the token (pkcs11-tool --login), or that it
// does not.
func wantLogin(t testing.TB, serial, pin string, works bool) {
	t.Helper()
	out, errOut, err := p11Err("--slot", slotOf(t, serial).id, "--login", "--pin", pin, "--list-objects")
	if works && err != nil {
		t.Errorf("the PIN does not log in to token %s: %v\n%s%s", serial, err, out, errOut)
	}
	if !works && err == nil {
		t.Errorf("a PIN that should no longer work logs in to token %s", serial)
	}
}

// wantSOLogin checks that the SO PIN logs in as the security officer.
func wantSOLogin(t testing.TB, serial, soPIN string) {
	t.Helper()
	if out, errOut, err := p11Err("--slot", slotOf(t, serial).id, "--session-rw", "--login", "--login-type", "so", "--so-pin", soPIN, "--list-objects"); err != nil {
		t.Errorf("the SO PIN does not log in to token %s: %v\n%s%s", serial, err, out, errOut)
	}
}

// certificateDER decodes a PEM certificate, as the coordinator's API gives it.
func certificateDER(t testing.TB, pemText string) []byte {
	t.Helper()
	b, _ := pem.Decode([]byte(pemText))
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", pemText)
	}
	if _, err := x509.ParseCertificate(b.Bytes); err != nil {
		t.Fatal(err)
	}
	return b.Bytes
}

// storeObjectFiles lists the object files SoftHSM2 keeps for the token (one per object,
// besides the token's own): what the store on disk says the token holds.
func storeObjectFiles(t testing.TB, tokenDir, serial string) []string {
	t.Helper()
	entries, err := os.ReadDir(tokenDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(tokenDir, e.Name(), "token.object"))
		if err != nil || !bytes.Contains(data, []byte(serial)) {
			continue
		}
		files, err := os.ReadDir(filepath.Join(tokenDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range files {
			if strings.HasSuffix(f.Name(), ".object") && f.Name() != "token.object" {
				out = append(out, f.Name())
			}
		}
		return out
	}
	t.Fatalf("no token with serial %s in the SoftHSM2 store %s", serial, tokenDir)
	return nil
}
