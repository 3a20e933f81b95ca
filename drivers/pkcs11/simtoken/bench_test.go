//go:build cgo

package simtoken_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// BenchmarkIssuanceCPU is what a simulated issuance costs the simulator's process: the
// token part of an issue job on an instant token through the real driver (key, CSR
// signed on the token, certificate written, key and certificate checked), against the
// same steps on a Go key in memory in the same run. x-go is the first over the second:
// what the driver and the simulated token add around Go's crypto.
func BenchmarkIssuanceCPU(b *testing.B) {
	b.Run("P-256", func(b *testing.B) {
		benchmarkIssuanceCPU(b, pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}, func() (crypto.Signer, error) {
			return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		})
	})
	b.Run("RSA-2048", func(b *testing.B) {
		benchmarkIssuanceCPU(b, pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 2048}, func() (crypto.Signer, error) {
			return rsa.GenerateKey(rand.Reader, 2048)
		})
	})
}

func benchmarkIssuanceCPU(b *testing.B, spec pkcs11.KeySpec, goKey func() (crypto.Signer, error)) {
	ctx := b.Context()
	_, _, tok := ready(b, simtoken.Options{})
	ca, err := testenv.NewCA("bench CA")
	if err != nil {
		b.Fatal(err)
	}
	var simTime, goTime time.Duration
	n := uint64(0)
	for b.Loop() {
		n++
		id := binary.BigEndian.AppendUint64([]byte("job-"), n)
		t0 := time.Now()
		key, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: id, Label: "bench", Spec: spec})
		if err != nil {
			b.Fatal(err)
		}
		cert := csrAndCertificate(b, ca, key)
		if _, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Label: "bench", Cert: cert}); err != nil {
			b.Fatal(err)
		}
		if err := tok.VerifyKeyAndCertificate(ctx, id); err != nil {
			b.Fatal(err)
		}
		// Leave the token as it was, so that memory does not fill up.
		if _, err := tok.DeleteCertificate(ctx, id); err != nil {
			b.Fatal(err)
		}
		if _, err := tok.DeleteKey(ctx, id); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()

		k, err := goKey()
		if err != nil {
			b.Fatal(err)
		}
		goCert := csrAndCertificate(b, ca, k)
		digest := sha256.Sum256(goCert.Raw)
		sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			b.Fatal(err)
		}
		if !verifies(goCert.PublicKey, digest[:], sig) {
			b.Fatal("reference signature does not verify")
		}
		simTime += t1.Sub(t0)
		goTime += time.Since(t1)
	}
	b.ReportMetric(float64(simTime)/float64(goTime), "x-go")
	b.ReportMetric(float64(simTime)/float64(b.N)/1e3, "sim-µs/op")
}

func verifies(pub crypto.PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig) == nil
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	}
	return false
}

func csrAndCertificate(b *testing.B, ca *testenv.CA, key crypto.Signer) *x509.Certificate {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "bench"}}, key)
	if err != nil {
		b.Fatal(err)
	}
	certDER, err := ca.Sign(der, "bench")
	if err != nil {
		b.Fatal(err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		b.Fatal(err)
	}
	return cert
}

// BenchmarkTokenMemory is the heap a simulated token takes in the backend: blank, and
// issued (a P-256 key pair and its certificate on it). x-payload is the issued token's
// bytes over what it holds that a real token would store too (the certificate's DER,
// the public point, the private scalar, the IDs and labels).
func BenchmarkTokenMemory(b *testing.B) {
	const tokens = 500
	ctx := b.Context()
	ca, err := testenv.NewCA("bench CA")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		be := newBackend(b, simtoken.Options{})
		base := heap()
		for i := range tokens {
			addToken(b, be, simtoken.TokenSpec{Serial: fmt.Sprintf("SIM%06d", i), SOPIN: soPIN, Label: "bench", UserPIN: userPIN})
		}
		blank := heap() - base

		mod := open(b, be)
		payload := 0
		for i := range tokens {
			tok := findToken(b, mod, fmt.Sprintf("SIM%06d", i))
			if err := tok.Login(ctx, userPIN); err != nil {
				b.Fatal(err)
			}
			id := []byte("job-0123456789ab")
			key, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: id, Label: "signing", Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
			if err != nil {
				b.Fatal(err)
			}
			cert := csrAndCertificate(b, ca, key)
			if _, err := tok.WriteCertificate(ctx, pkcs11.CertificateWrite{ID: id, Label: "signing", Cert: cert}); err != nil {
				b.Fatal(err)
			}
			payload += len(cert.Raw) + 65 + 32 + 3*(len(id)+len("signing"))
			if err := tok.Close(); err != nil {
				b.Fatal(err)
			}
		}
		if err := mod.Close(); err != nil {
			b.Fatal(err)
		}
		issued := heap() - base
		runtime.KeepAlive(be)
		b.ReportMetric(float64(blank)/tokens, "blank-B/token")
		b.ReportMetric(float64(issued)/tokens, "issued-B/token")
		b.ReportMetric(float64(issued)/float64(payload), "x-payload")
	}
}

// heap is the live heap after a collection.
func heap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
