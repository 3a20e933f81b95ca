package builtin_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/ca/builtin"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/protocol"
)

const testCRLURL = "http://coordinator.test/crl"

// keys caches test keys by type: RSA generation is slow and the keys' values do not
// matter.
var keys = struct {
	sync.Mutex
	m map[protocol.KeyType]crypto.Signer
}{m: map[protocol.KeyType]crypto.Signer{}}

func testKey(t *testing.T, kt protocol.KeyType) crypto.Signer {
	t.Helper()
	keys.Lock()
	defer keys.Unlock()
	if k, ok := keys.m[kt]; ok {
		return k
	}
	var (
		k   crypto.Signer
		err error
	)
	switch kt {
	case protocol.KeyP256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case protocol.KeyP384:
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case protocol.KeyRSA2048:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case protocol.KeyRSA3072:
		k, err = rsa.GenerateKey(rand.Reader, 3072)
	case protocol.KeyRSA4096:
		k, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		t.Fatalf("no test key of type %s", kt)
	}
	if err != nil {
		t.Fatal(err)
	}
	keys.m[kt] = k
	return k
}

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testOptions are options for a CA created in a fresh data directory.
func testOptions(t *testing.T) ca.Options {
	return ca.Options{
		DataDir:     t.TempDir(),
		Revocations: &ca.MemRevocations{},
		Logger:      zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		Builtin:     ca.BuiltinOptions{CRLURL: testCRLURL, Organization: "Example Org", KeyType: protocol.KeyP256},
	}
}

func newCA(t *testing.T, opts ca.Options) *builtin.CA {
	t.Helper()
	c, err := builtin.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("builtin.New: %v", err)
	}
	return c
}

// openssl runs the openssl command line tool and returns its combined output; the tool
// must be installed.
func openssl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required by this test: %v", err)
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	return string(out), err
}

func mustOpenSSL(t *testing.T, args ...string) string {
	t.Helper()
	out, err := openssl(t, args...)
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
	return out
}

// writePEM writes certificates (or other DER blocks of typ) as PEM and returns the path.
func writePEM(t *testing.T, dir, name, typ string, ders ...[]byte) string {
	t.Helper()
	var data []byte
	for _, der := range ders {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})...)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeCAFile(t *testing.T, c *builtin.CA, dir string) string {
	t.Helper()
	var ders [][]byte
	for _, cert := range c.CACertificates() {
		ders = append(ders, cert.Raw)
	}
	return writePEM(t, dir, "ca.pem", "CERTIFICATE", ders...)
}

// holder is the person the example profiles are rendered for.
var holder = profile.Holder{
	ID:           "u-1001",
	Name:         "Alice Martin",
	Email:        "alice.martin@example.org",
	UPN:          "alice.martin@corp.example.org",
	Organization: "Example Org",
	Attributes:   map[string]string{"hostname": "srv1.example.org"},
}

func loadProfiles(t *testing.T) []profile.Profile {
	t.Helper()
	files, err := filepath.Glob("../../../examples/profiles/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("example profiles: %v (%d files)", err, len(files))
	}
	var out []profile.Profile
	for _, f := range files {
		ps, err := profile.LoadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ps...)
	}
	return out
}

func keyTypeOf(k profile.KeySpec) protocol.KeyType {
	switch k.String() {
	case "rsa-2048":
		return protocol.KeyRSA2048
	case "rsa-3072":
		return protocol.KeyRSA3072
	case "rsa-4096":
		return protocol.KeyRSA4096
	case "ec-P-256":
		return protocol.KeyP256
	case "ec-P-384":
		return protocol.KeyP384
	}
	return ""
}

// signRequest builds the request the RA would make for p, rendered for holder.
func signRequest(t *testing.T, p profile.Profile, pub crypto.PublicKey) ca.SignRequest {
	t.Helper()
	id, err := p.Render(holder)
	if err != nil {
		t.Fatal(err)
	}
	u, err := p.Usages()
	if err != nil {
		t.Fatal(err)
	}
	return ca.SignRequest{
		PublicKey: pub, Identity: id, Usages: u, Validity: time.Duration(p.Validity),
		JobID: "job-" + p.Name, Attempt: 1, Profile: p.Name,
	}
}

func parseCertPEM(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
