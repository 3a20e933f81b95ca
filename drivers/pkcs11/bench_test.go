//go:build cgo

package pkcs11_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// BenchmarkSignOverhead measures what the driver adds to a P-256 signature (the fastest
// token operation, so the overhead shows most) against bare miekg/pkcs11 calls on the same
// key in the same run: x-raw is driver time over raw time.
func BenchmarkSignOverhead(b *testing.B) {
	_, tok, _ := loggedIn(b, pkcs11.Options{})
	id := []byte{0xbe}
	key := generate(b, tok, id, "ec-p256", 0)

	// The raw reference: its own session on the same, already initialized and logged-in
	// library.
	raw := p11.New(testenv.SoftHSMModule)
	if raw == nil {
		b.Fatal("load module for the reference")
	}
	b.Cleanup(raw.Destroy) // no Finalize: the driver's Module owns the initialization
	info, err := tok.Info(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	sh, err := raw.OpenSession(info.SlotID, p11.CKF_SERIAL_SESSION)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = raw.CloseSession(sh) }()
	if err := raw.FindObjectsInit(sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY), p11.NewAttribute(p11.CKA_ID, id)}); err != nil {
		b.Fatal(err)
	}
	hs, _, err := raw.FindObjects(sh, 1)
	_ = raw.FindObjectsFinal(sh)
	if err != nil || len(hs) != 1 {
		b.Fatalf("reference key: %v, %d found", err, len(hs))
	}
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDSA, nil)}
	digest := sha256.Sum256([]byte("bench"))

	var rawTime, drvTime time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := raw.SignInit(sh, mech, hs[0]); err != nil {
			b.Fatal(err)
		}
		if _, err := raw.Sign(sh, digest[:]); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
		rawTime += t1.Sub(t0)
		drvTime += time.Since(t1)
	}
	b.ReportMetric(float64(drvTime)/float64(rawTime), "x-raw")
	b.ReportMetric(float64(drvTime-rawTime)/float64(b.N)/1e3, "µs-added/op")
}

// The issue path of a job, phase by phase, through this package: GenerateKey, a CSR signed
// on the token (x509.CreateCertificateRequest with the Key), WriteCertificate. Each
// iteration uses a fresh CKA_ID; the CA signing in between is not timed.
func BenchmarkIssueRSA2048(b *testing.B) { benchmarkIssue(b, "rsa-2048") }

// BenchmarkIssueP256 is BenchmarkIssueRSA2048 with P-256 keys.
func BenchmarkIssueP256(b *testing.B) { benchmarkIssue(b, "ec-p256") }

func benchmarkIssue(b *testing.B, specText string) {
	ctx := b.Context()
	_, tok, _ := loggedIn(b, pkcs11.Options{})
	spec, err := pkcs11.ParseKeySpec(specText)
	if err != nil {
		b.Fatal(err)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := newCA(b, caKey)
	var keygen, csr, write time.Duration
	n := uint64(0)
	for b.Loop() {
		n++
		id := binary.BigEndian.AppendUint64([]byte("job-"), n)

		t0 := time.Now()
		key, created, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: id, Label: "bench", Spec: spec})
		if err != nil || !created {
			b.Fatalf("generate: %v, created %v", err, created)
		}
		t1 := time.Now()
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
		t4 := time.Now()
		keygen += t1.Sub(t0)
		csr += t2.Sub(t1)
		write += t4.Sub(t3)
	}
	perOp := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
	b.ReportMetric(perOp(keygen), "keygen-ms/op")
	b.ReportMetric(perOp(csr), "csr-ms/op")
	b.ReportMetric(perOp(write), "write-ms/op")
}
