package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
)

// UPNs reads back what SubjectAltName wrote, in a certificate crypto/x509 parsed, and
// nothing from a certificate without them.
func TestUPNsReadsBackSubjectAltName(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := func(id *profile.Identity) *x509.Certificate {
		tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Alice"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), EmailAddresses: []string{"plain@example.org"}}
		if id != nil {
			ext, ok, err := ca.SubjectAltName(*id)
			if err != nil || !ok {
				t.Fatal(ok, err)
			}
			tpl.EmailAddresses, tpl.ExtraExtensions = nil, []pkix.Extension{ext}
		}
		der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := cert(&profile.Identity{Subject: pkix.Name{CommonName: "Alice"}, UPNs: []string{"alice@corp.example", "a2@corp.example"},
		Emails: []string{"alice@example.org"}})
	if got := ca.UPNs(c); !slices.Equal(got, []string{"alice@corp.example", "a2@corp.example"}) {
		t.Fatalf("UPNs %q", got)
	}
	if !slices.Equal(c.EmailAddresses, []string{"alice@example.org"}) {
		t.Fatalf("e-mail addresses %q", c.EmailAddresses)
	}
	if got := ca.UPNs(cert(nil)); len(got) != 0 {
		t.Fatalf("UPNs of a certificate with none: %q", got)
	}
}
