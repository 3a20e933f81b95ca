package coordinatortest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// RecoveryKey is an organisation's backup key for tests: an RSA-2048 key pair with a
// self-signed certificate allowing keyEncipherment, as key-recovery officers would hold it.
type RecoveryKey struct {
	Key      *rsa.PrivateKey
	CertPEM  string // give it to tokenfleetctl recovery-cert add, or client.AddRecoveryCertificate
	KeyFile  string // the private key as PKCS#8 PEM (0600), for tokenfleetctl recovery open --recovery-key
	CertFile string // the certificate as PEM
}

// NewRecoveryKey makes a recovery key named cn and writes its files under t.TempDir().
func NewRecoveryKey(t testing.TB, cn string) RecoveryKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(5 * 365 * 24 * time.Hour), KeyUsage: x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := RecoveryKey{Key: k, CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		KeyFile: filepath.Join(dir, "recovery-key.pem"), CertFile: filepath.Join(dir, "recovery-cert.pem")}
	if err := os.WriteFile(r.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.CertFile, []byte(r.CertPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}
