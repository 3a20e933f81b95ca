package coordinator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// escrow.trusted_issuers: PEM files of CA certificates; a leaf, a missing file or a file
// without a certificate is refused naming the entry.
func TestLoadTrustedIssuers(t *testing.T) {
	dir := t.TempDir()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, isCA bool, n int) string {
		var out []byte
		for i := range n {
			tpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: name},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true, IsCA: isCA}
			der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		}
		p := filepath.Join(dir, name+".pem")
		if err := os.WriteFile(p, out, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	two, one := write("mail-cas", true, 2), write("mail-ca", true, 1)
	got, err := loadTrustedIssuers([]string{two, one})
	if err != nil || len(got) != 3 {
		t.Fatalf("%d issuers, %v", len(got), err)
	}
	for _, tc := range []struct {
		files []string
		want  string
	}{
		{[]string{one, write("leaf", false, 1)}, "escrow.trusted_issuers[1]: " + filepath.Join(dir, "leaf.pem") + `: "leaf" is not a CA certificate`},
		{[]string{filepath.Join(dir, "missing.pem")}, "escrow.trusted_issuers[0]"},
		{[]string{write("empty", true, 0)}, "holds no PEM certificate"},
	} {
		if _, err := loadTrustedIssuers(tc.files); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.files, err, tc.want)
		}
	}
}
