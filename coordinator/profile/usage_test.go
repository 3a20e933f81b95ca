package profile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"testing"
)

func TestUsages(t *testing.T) {
	tests := []struct {
		name    string
		ku, eku string
		wantKU  x509.KeyUsage
		wantEKU []x509.ExtKeyUsage
		wantOID []asn1.ObjectIdentifier
	}{
		{"smart card", "[digitalSignature, keyEncipherment]", "[smartcardLogon, clientAuth]",
			x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, []asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 311, 20, 2, 2}}},
		{"signing, alias", "[digitalSignature, contentCommitment]", "[emailProtection]",
			x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment, []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, nil},
		{"every standard EKU", "[dataEncipherment]", "[serverAuth, clientAuth, codeSigning, emailProtection, timeStamping, OCSPSigning]",
			x509.KeyUsageDataEncipherment,
			[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageCodeSigning, x509.ExtKeyUsageEmailProtection, x509.ExtKeyUsageTimeStamping, x509.ExtKeyUsageOCSPSigning}, nil},
		{"dotted OIDs", "[digitalSignature]", `["1.3.6.1.5.5.7.3.2", "1.3.6.1.4.1.311.10.3.12"]`,
			x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, []asn1.ObjectIdentifier{{1, 3, 6, 1, 4, 1, 311, 10, 3, 12}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(base, "key_usage: [digitalSignature]", "key_usage: "+tt.ku, 1)
			src = strings.Replace(src, "extended_key_usage: [clientAuth]", "extended_key_usage: "+tt.eku, 1)
			p := loadOne(t, src)
			u, err := p.Usages()
			if err != nil {
				t.Fatal(err)
			}
			// Normal form sorts usages, so compare as sets.
			if u.KeyUsage != tt.wantKU || !sameSet(u.ExtKeyUsage, tt.wantEKU) || len(u.UnknownExtKeyUsage) != len(tt.wantOID) {
				t.Fatalf("got %+v", u)
			}
			for _, want := range tt.wantOID {
				found := false
				for _, got := range u.UnknownExtKeyUsage {
					found = found || got.Equal(want)
				}
				if !found {
					t.Errorf("OID %v missing from %v", want, u.UnknownExtKeyUsage)
				}
			}
		})
	}
}

func sameSet(a, b []x509.ExtKeyUsage) bool {
	m := map[x509.ExtKeyUsage]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return len(a) == len(b)
}

func TestUsagesOfInvalidProfile(t *testing.T) {
	p := Profile{Name: "x", KeyUsage: []string{"digitalSignature", "keyCertSign"}, ExtKeyUsage: []string{"nope"}}
	_, err := p.Usages()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "key_usage[1]") || !strings.Contains(err.Error(), "extended_key_usage[0]") {
		t.Fatalf("got %v", err)
	}
}

func TestOIDConstants(t *testing.T) {
	if OIDUPN.String() != "1.3.6.1.4.1.311.20.2.3" || OIDSmartcardLogon.String() != "1.3.6.1.4.1.311.20.2.2" {
		t.Fatal(OIDUPN, OIDSmartcardLogon)
	}
}

// Our EKU OID table agrees with what the standard library writes into a certificate.
func TestExtKeyUsageOIDsMatchStandardLibrary(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	oidEKU := asn1.ObjectIdentifier{2, 5, 29, 37}
	for name, k := range extKeyUsages {
		if k.std == 0 {
			continue
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), ExtKeyUsage: []x509.ExtKeyUsage{k.std}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		var oids []asn1.ObjectIdentifier
		for _, ext := range cert.Extensions {
			if ext.Id.Equal(oidEKU) {
				if _, err := asn1.Unmarshal(ext.Value, &oids); err != nil {
					t.Fatal(err)
				}
			}
		}
		if len(oids) != 1 || !oids[0].Equal(k.oid) {
			t.Errorf("%s: certificate carries %v, our table says %v", name, oids, k.oid)
		}
	}
}
