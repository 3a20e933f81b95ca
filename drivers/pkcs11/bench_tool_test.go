//go:build cgo

package pkcs11_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// timingBackend adds up the time spent inside the module's calls that do the work of an
// issuance. Time in the calls it does not time (token info, mechanism lists, session
// bookkeeping) counts as the driver's own, so the overhead it shows errs on the high side.
type timingBackend struct {
	pkcs11.Backend
	inModule atomic.Int64 // nanoseconds
}

func (t *timingBackend) timed(start time.Time) { t.inModule.Add(int64(time.Since(start))) }

func (t *timingBackend) GenerateKeyPair(sh p11.SessionHandle, m []*p11.Mechanism, pub, priv []*p11.Attribute) (p11.ObjectHandle, p11.ObjectHandle, error) {
	defer t.timed(time.Now())
	return t.Backend.GenerateKeyPair(sh, m, pub, priv)
}

func (t *timingBackend) SignInit(sh p11.SessionHandle, m []*p11.Mechanism, o p11.ObjectHandle) error {
	defer t.timed(time.Now())
	return t.Backend.SignInit(sh, m, o)
}

func (t *timingBackend) Sign(sh p11.SessionHandle, msg []byte) ([]byte, error) {
	defer t.timed(time.Now())
	return t.Backend.Sign(sh, msg)
}

func (t *timingBackend) CreateObject(sh p11.SessionHandle, a []*p11.Attribute) (p11.ObjectHandle, error) {
	defer t.timed(time.Now())
	return t.Backend.CreateObject(sh, a)
}

func (t *timingBackend) DestroyObject(sh p11.SessionHandle, o p11.ObjectHandle) error {
	defer t.timed(time.Now())
	return t.Backend.DestroyObject(sh, o)
}

func (t *timingBackend) GetAttributeValue(sh p11.SessionHandle, o p11.ObjectHandle, a []*p11.Attribute) ([]*p11.Attribute, error) {
	defer t.timed(time.Now())
	return t.Backend.GetAttributeValue(sh, o, a)
}

func (t *timingBackend) FindObjectsInit(sh p11.SessionHandle, a []*p11.Attribute) error {
	defer t.timed(time.Now())
	return t.Backend.FindObjectsInit(sh, a)
}

func (t *timingBackend) FindObjects(sh p11.SessionHandle, max int) ([]p11.ObjectHandle, bool, error) {
	defer t.timed(time.Now())
	return t.Backend.FindObjects(sh, max)
}

func (t *timingBackend) FindObjectsFinal(sh p11.SessionHandle) error {
	defer t.timed(time.Now())
	return t.Backend.FindObjectsFinal(sh)
}

// BenchmarkVsPKCS11ToolRSA2048 runs, in each iteration and on the same module, OpenSC's
// `pkcs11-tool --keypairgen` (the reference nobody here wrote) and this package's whole
// issuance path: key generation, a CSR signed on the token, the certificate written back.
// Metrics:
//   - x-pkcs11-tool: this package's keygen+CSR+write time over pkcs11-tool's keygen time;
//   - driver-%: the share of this package's time spent outside the module's calls;
//   - driver-ms/op: that time per issuance.
func BenchmarkVsPKCS11ToolRSA2048(b *testing.B) { benchmarkVsTool(b, "rsa-2048", "rsa:2048") }

// BenchmarkVsPKCS11ToolP256 is BenchmarkVsPKCS11ToolRSA2048 with P-256 keys.
func BenchmarkVsPKCS11ToolP256(b *testing.B) { benchmarkVsTool(b, "ec-p256", "EC:prime256v1") }

func benchmarkVsTool(b *testing.B, specText, toolKeyType string) {
	ctx := b.Context()
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		b.Fatalf("pkcs11-tool not found (apt-get install opensc): %v", err)
	}
	// pkcs11-tool gets a token of its own, so each of its runs loads only its own objects;
	// it is made before the module is opened (SoftHSM2 sees other processes' new tokens
	// only at C_Initialize).
	toolLabel, _ := newToken(b)
	timer := &timingBackend{}
	_, tok, _ := loggedIn(b, pkcs11.Options{Wrap: func(be pkcs11.Backend) pkcs11.Backend {
		timer.Backend = be
		return timer
	}})
	spec, err := pkcs11.ParseKeySpec(specText)
	if err != nil {
		b.Fatal(err)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := newCA(b, caKey)

	var toolTime, ours, module time.Duration
	n := uint64(0)
	for b.Loop() {
		n++
		id := binary.BigEndian.AppendUint64([]byte("vs-"), n)

		t0 := time.Now()
		cmd := exec.Command("pkcs11-tool", "--module", testenv.SoftHSMModule, "--token-label", toolLabel,
			"--login", "--pin", userPIN, "--keypairgen", "--key-type", toolKeyType,
			"--id", hex.EncodeToString(id), "--label", "bench")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pkcs11-tool --keypairgen: %v\n%s", err, out)
		}
		toolTime += time.Since(t0)

		// The CA's signature is not part of the token path: take it out of the timing.
		inModule0 := timer.inModule.Load()
		t1 := time.Now()
		key, created, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: id, Label: "bench", Spec: spec})
		if err != nil || !created {
			b.Fatalf("generate: %v, created %v", err, created)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "bench"}}, key)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		req, err := x509.ParseCertificateRequest(der)
		if err != nil {
			b.Fatal(err)
		}
		cert := ca.issue(b, "bench", req.PublicKey)
		t3 := time.Now()
		if _, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Label: "bench", Cert: cert}); err != nil {
			b.Fatal(err)
		}
		ours += t2.Sub(t1) + time.Since(t3)
		module += time.Duration(timer.inModule.Load() - inModule0)
	}
	driver := ours - module
	b.ReportMetric(float64(ours)/float64(toolTime), "x-pkcs11-tool")
	b.ReportMetric(100*float64(driver)/float64(ours), "driver-%")
	b.ReportMetric(float64(driver)/float64(b.N)/1e6, "driver-ms/op")
}
