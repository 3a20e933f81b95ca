//go:build cgo

package pkcs11_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// Every test gets its own tokens in one private SoftHSM2 store. SoftHSM sees tokens made by
// softhsm2-util only after C_Initialize, so tests make their tokens first and open the
// module after; the last Close of a test finalizes it, so the next test starts afresh.
func TestMain(m *testing.M) { os.Exit(testenv.MainWithSoftHSM(m)) }

const (
	soPIN   = "87654321"
	userPIN = "123456"
)

var labels atomic.Int64

// newLabel gives a token label unique in this run.
func newLabel(t testing.TB) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	if len(name) > 24 {
		name = name[:24]
	}
	return fmt.Sprintf("%s-%d", name, labels.Add(1))
}

// newToken initializes a token with softhsm2-util (a tool nobody here wrote) and returns
// its label and serial. Call it before openModule.
func newToken(t testing.TB) (label, serial string) {
	t.Helper()
	label = newLabel(t)
	return label, testenv.InitToken(t, label, soPIN, userPIN)
}

func openModule(t testing.TB, opts pkcs11.Options) *pkcs11.Module {
	t.Helper()
	return openModuleAt(t, testenv.SoftHSMModule, opts)
}

// openModuleAt opens SoftHSM2 by another path to its library.
func openModuleAt(t testing.TB, path string, opts pkcs11.Options) *pkcs11.Module {
	t.Helper()
	mod, err := pkcs11.Open(path, opts)
	if err != nil {
		t.Fatalf("open SoftHSM2 at %s: %v", path, err)
	}
	t.Cleanup(func() {
		if err := mod.Close(); err != nil {
			t.Errorf("close module: %v", err)
		}
	})
	return mod
}

func openToken(t testing.TB, mod *pkcs11.Module, serial string) *pkcs11.Token {
	t.Helper()
	tok, err := mod.FindToken(context.Background(), &uri.URI{Serial: serial})
	if err != nil {
		t.Fatalf("open token %s: %v", serial, err)
	}
	t.Cleanup(func() { _ = tok.Close() })
	return tok
}

// loggedIn makes a token with softhsm2-util, opens it and logs the user in.
func loggedIn(t testing.TB, opts pkcs11.Options) (*pkcs11.Module, *pkcs11.Token, string) {
	t.Helper()
	label, serial := newToken(t)
	mod := openModule(t, opts)
	tok := openToken(t, mod, serial)
	if err := tok.Login(context.Background(), userPIN); err != nil {
		t.Fatalf("login: %v", err)
	}
	return mod, tok, label
}

func generate(t testing.TB, tok *pkcs11.Token, id []byte, spec string, usage pkcs11.Usage) *pkcs11.Key {
	t.Helper()
	s, err := pkcs11.ParseKeySpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	key, created, err := tok.GenerateKey(context.Background(), pkcs11.KeyRequest{ID: id, Label: "key-" + spec, Spec: s, Usage: usage})
	if err != nil {
		t.Fatalf("generate %s: %v", spec, err)
	}
	if !created {
		t.Fatalf("generate %s: key reported as already there", spec)
	}
	return key
}

// wantCode fails unless err is a *pkcs11.Error with the code.
func wantCode(t testing.TB, err error, code pkcs11.Code) {
	t.Helper()
	_ = codeErr(t, err, code)
}

// codeErr is wantCode that returns the *pkcs11.Error.
func codeErr(t testing.TB, err error, code pkcs11.Code) *pkcs11.Error {
	t.Helper()
	var e *pkcs11.Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %v (%T), want a *pkcs11.Error with code %s", err, err, code)
	}
	if e.Code != code {
		t.Fatalf("got code %s (%v), want %s", e.Code, err, code)
	}
	return e
}

// tool runs pkcs11-tool on the token with the label.
func tool(t testing.TB, label string, args ...string) string {
	t.Helper()
	return testenv.PKCS11Tool(t, append([]string{"--token-label", label}, args...)...)
}

// toolErr is tool for commands expected to fail.
func toolErr(label string, args ...string) (string, error) {
	return testenv.RunErr("pkcs11-tool", append([]string{"--module", testenv.SoftHSMModule, "--token-label", label}, args...)...)
}

// objectBlocks splits pkcs11-tool --list-objects output into one block per object.
func objectBlocks(out string) []string {
	var blocks []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, " Object;") {
			blocks = append(blocks, "")
		}
		if len(blocks) > 0 {
			blocks[len(blocks)-1] += line + "\n"
		}
	}
	return blocks
}

// blocksWithID keeps the blocks of objects with this ID.
func blocksWithID(out string, id []byte) []string {
	var keep []string
	for _, b := range objectBlocks(out) {
		if strings.Contains(b, "ID:         "+hex.EncodeToString(id)+"\n") {
			keep = append(keep, b)
		}
	}
	return keep
}

// countObjects counts, with pkcs11-tool, the objects of a kind ("Private Key", "Public
// Key", "Certificate") with this ID on the token.
func countObjects(t testing.TB, label string, id []byte, kind string) int {
	t.Helper()
	n := 0
	for _, b := range blocksWithID(tool(t, label, "--login", "--pin", userPIN, "--list-objects"), id) {
		if strings.HasPrefix(b, kind+" Object") {
			n++
		}
	}
	return n
}

// testCA is an issuing CA made in the test, standing in for the coordinator's.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA(t testing.TB, key crypto.Signer) *testCA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tokenfleet test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) issue(t testing.TB, cn string, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
