package builtin_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// upnsOf reads the UPN otherNames of a certificate's SAN extension.
func upnsOf(t *testing.T, c *x509.Certificate) (upns []string, critical bool) {
	t.Helper()
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			continue
		}
		var names []asn1.RawValue
		if _, err := asn1.Unmarshal(ext.Value, &names); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if n.Tag != 0 {
				continue
			}
			var on struct {
				TypeID asn1.ObjectIdentifier
				Value  asn1.RawValue // [0] EXPLICIT around the UTF8String
			}
			if _, err := asn1.UnmarshalWithParams(n.FullBytes, &on, "tag:0"); err != nil {
				t.Fatalf("otherName: %v", err)
			}
			var str asn1.RawValue
			if _, err := asn1.Unmarshal(on.Value.Bytes, &str); err != nil || on.Value.Tag != 0 || !on.Value.IsCompound {
				t.Fatalf("otherName value is not [0] EXPLICIT: %v", err)
			}
			if !on.TypeID.Equal(profile.OIDUPN) || str.Tag != asn1.TagUTF8String {
				t.Fatalf("otherName %s with value tag %d", on.TypeID, str.Tag)
			}
			upns = append(upns, string(str.Bytes))
		}
		return upns, ext.Critical
	}
	return nil, false
}

func TestIssueExampleProfiles(t *testing.T) {
	profiles := loadProfiles(t)
	for _, caKey := range []protocol.KeyType{protocol.KeyP384, protocol.KeyRSA3072} {
		t.Run("CA "+string(caKey), func(t *testing.T) {
			opts := testOptions(t)
			opts.Builtin.KeyType = caKey
			authority := newCA(t, opts)
			dir := t.TempDir()
			caFile := writeCAFile(t, authority, dir)
			caCert := authority.CACertificates()[0]
			roots := x509.NewCertPool()
			roots.AddCert(caCert)

			for _, p := range profiles {
				allowed := p.AllowedKeys
				if len(allowed) == 0 {
					allowed = []profile.KeySpec{p.Key}
				}
				for _, spec := range allowed {
					t.Run(p.Name+" "+spec.String(), func(t *testing.T) {
						key := testKey(t, keyTypeOf(spec))
						req := signRequest(t, p, key.Public())
						before := time.Now()
						cert, err := authority.Sign(context.Background(), req)
						if err != nil {
							t.Fatal(err)
						}
						certFile := writePEM(t, dir, p.Name+"-"+spec.String()+".pem", "CERTIFICATE", cert.Raw)
						if out := mustOpenSSL(t, "verify", "-CAfile", caFile, certFile); !strings.Contains(out, ": OK") {
							t.Fatalf("openssl verify: %s", out)
						}
						checkIssued(t, cert, caCert, req, before)
						if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
							t.Errorf("Go verify: %v", err)
						}
						checkWithOpenSSL(t, certFile, req)
					})
				}
			}
		})
	}
}

// checkIssued checks a certificate field by field against its request.
func checkIssued(t *testing.T, cert, caCert *x509.Certificate, req ca.SignRequest, before time.Time) {
	t.Helper()
	id := req.Identity
	if got, want := cert.Subject.ToRDNSequence().String(), id.Subject.ToRDNSequence().String(); got != want {
		t.Errorf("subject %q, want %q", got, want)
	}
	if !slices.Equal(cert.EmailAddresses, id.Emails) || !slices.Equal(cert.DNSNames, id.DNSNames) ||
		len(cert.IPAddresses)+len(cert.URIs) != 0 {
		t.Errorf("SANs e-mail %v DNS %v IP %v URI %v; want %v %v", cert.EmailAddresses, cert.DNSNames, cert.IPAddresses, cert.URIs, id.Emails, id.DNSNames)
	}
	upns, critical := upnsOf(t, cert)
	if !slices.Equal(upns, id.UPNs) {
		t.Errorf("UPNs %v, want %v", upns, id.UPNs)
	}
	if critical {
		t.Error("SAN extension critical although the subject is not empty")
	}
	if cert.KeyUsage != req.Usages.KeyUsage {
		t.Errorf("key usage %b, want %b", cert.KeyUsage, req.Usages.KeyUsage)
	}
	if !slices.Equal(cert.ExtKeyUsage, req.Usages.ExtKeyUsage) {
		t.Errorf("EKU %v, want %v", cert.ExtKeyUsage, req.Usages.ExtKeyUsage)
	}
	if !slices.EqualFunc(cert.UnknownExtKeyUsage, req.Usages.UnknownExtKeyUsage, asn1.ObjectIdentifier.Equal) {
		t.Errorf("unknown EKU %v, want %v", cert.UnknownExtKeyUsage, req.Usages.UnknownExtKeyUsage)
	}
	if cert.IsCA || !cert.BasicConstraintsValid {
		t.Error("not marked as an end-entity certificate")
	}
	if !slices.Equal(cert.CRLDistributionPoints, []string{testCRLURL}) {
		t.Errorf("CRL distribution points %v", cert.CRLDistributionPoints)
	}
	if !bytes.Equal(cert.AuthorityKeyId, caCert.SubjectKeyId) || len(cert.AuthorityKeyId) == 0 {
		t.Errorf("authority key id %x, CA's %x", cert.AuthorityKeyId, caCert.SubjectKeyId)
	}
	if skid, _ := ca.KeyID(req.PublicKey); !bytes.Equal(cert.SubjectKeyId, skid) {
		t.Errorf("subject key id %x, want %x", cert.SubjectKeyId, skid)
	}
	if s := cert.SerialNumber; s.Sign() <= 0 || s.BitLen() > ca.SerialBits {
		t.Errorf("serial %x", s)
	}
	if eq, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(req.PublicKey) {
		t.Error("certified key is not the requested key")
	}
	// NotBefore is backdated a few minutes for clock skew; NotAfter is the profile's
	// validity from now (to the second: certificates carry whole seconds).
	if nb := cert.NotBefore; nb.After(before.Add(-time.Minute)) || nb.Before(before.Add(-time.Hour)) {
		t.Errorf("NotBefore %s is not backdated a little from %s", nb, before)
	}
	want := before.Add(req.Validity).Truncate(time.Second)
	if na := cert.NotAfter; na.Before(want) || na.After(want.Add(time.Minute)) {
		t.Errorf("NotAfter %s, want about %s", na, want)
	}
}

// checkWithOpenSSL reads the certificate with openssl: names, UPN and usages as asked.
func checkWithOpenSSL(t *testing.T, certFile string, req ca.SignRequest) {
	t.Helper()
	subject := mustOpenSSL(t, "x509", "-in", certFile, "-noout", "-subject", "-nameopt", "RFC2253")
	if want := "subject=" + req.Identity.Subject.String(); strings.TrimSpace(subject) != want {
		t.Errorf("openssl subject %q, want %q", strings.TrimSpace(subject), want)
	}
	san := mustOpenSSL(t, "x509", "-in", certFile, "-noout", "-ext", "subjectAltName")
	var want []string
	for _, u := range req.Identity.UPNs {
		want = append(want, "othername: UPN::"+u)
	}
	for _, e := range req.Identity.Emails {
		want = append(want, "email:"+e)
	}
	for _, d := range req.Identity.DNSNames {
		want = append(want, "DNS:"+d)
	}
	lines := strings.Split(strings.TrimSpace(san), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "Subject Alternative Name") {
		t.Fatalf("openssl SAN output:\n%s", san)
	}
	if got := strings.Split(strings.TrimSpace(lines[1]), ", "); !slices.Equal(got, want) {
		t.Errorf("openssl SANs %q, want %q", got, want)
	}
	text := mustOpenSSL(t, "x509", "-in", certFile, "-noout", "-ext", "extendedKeyUsage,crlDistributionPoints,basicConstraints")
	for _, w := range []string{"URI:" + testCRLURL, "CA:FALSE"} {
		if !strings.Contains(text, w) {
			t.Errorf("openssl extensions lack %q:\n%s", w, text)
		}
	}
	names := map[string]string{
		profile.OIDSmartcardLogon.String(): "Microsoft Smartcard Login",
	}
	for _, oid := range req.Usages.UnknownExtKeyUsage {
		if !strings.Contains(text, names[oid.String()]) {
			t.Errorf("openssl EKU lacks %s:\n%s", oid, text)
		}
	}
	stdNames := map[x509.ExtKeyUsage]string{
		x509.ExtKeyUsageClientAuth:      "TLS Web Client Authentication",
		x509.ExtKeyUsageServerAuth:      "TLS Web Server Authentication",
		x509.ExtKeyUsageEmailProtection: "E-mail Protection",
	}
	for _, u := range req.Usages.ExtKeyUsage {
		if !strings.Contains(text, stdNames[u]) {
			t.Errorf("openssl EKU lacks %q:\n%s", stdNames[u], text)
		}
	}
}

func TestEmptySubjectMakesSANCritical(t *testing.T) {
	authority := newCA(t, testOptions(t))
	dir := t.TempDir()
	caFile := writeCAFile(t, authority, dir)
	key := testKey(t, protocol.KeyP256)
	for _, tt := range []struct {
		name     string
		subject  pkix.Name
		critical bool
	}{
		{"empty subject", pkix.Name{}, true},
		{"with subject", pkix.Name{CommonName: "Bob"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := ca.SignRequest{
				PublicKey: key.Public(),
				Identity:  profile.Identity{Subject: tt.subject, UPNs: []string{"bob@corp.example.org"}},
				Usages:    profile.Usages{KeyUsage: x509.KeyUsageDigitalSignature, UnknownExtKeyUsage: []asn1.ObjectIdentifier{profile.OIDSmartcardLogon}},
				Validity:  time.Hour,
			}
			cert, err := authority.Sign(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			upns, critical := upnsOf(t, cert)
			if critical != tt.critical || !slices.Equal(upns, req.Identity.UPNs) {
				t.Errorf("SAN critical %v UPNs %v; want critical %v", critical, upns, tt.critical)
			}
			certFile := writePEM(t, dir, "cert.pem", "CERTIFICATE", cert.Raw)
			if out := mustOpenSSL(t, "verify", "-CAfile", caFile, certFile); !strings.Contains(out, ": OK") {
				t.Fatalf("openssl verify: %s", out)
			}
			text := mustOpenSSL(t, "x509", "-in", certFile, "-noout", "-ext", "subjectAltName")
			if strings.Contains(text, "critical") != tt.critical || !strings.Contains(text, "othername: UPN::bob@corp.example.org") {
				t.Errorf("openssl SAN:\n%s", text)
			}
		})
	}
}

func TestSerialsAreRandom(t *testing.T) {
	authority := newCA(t, testOptions(t))
	key := testKey(t, protocol.KeyP256)
	p := loadProfiles(t)
	var emailProfile profile.Profile
	for _, q := range p {
		if q.Name == "email-signing" {
			emailProfile = q
		}
	}
	req := signRequest(t, emailProfile, key.Public())
	seen := map[string]bool{}
	for range 100 {
		cert, err := authority.Sign(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		s := cert.SerialNumber
		if s.Sign() <= 0 || s.BitLen() > ca.SerialBits {
			t.Fatalf("serial %x", s)
		}
		if seen[s.String()] {
			t.Fatalf("serial %x issued twice", s)
		}
		seen[s.String()] = true
	}
}

func TestValidityBoundedByCA(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Second)}
	opts := testOptions(t)
	opts.Now = clk.Now
	opts.Builtin.Validity = 30 * 24 * time.Hour
	authority := newCA(t, opts)
	caCert := authority.CACertificates()[0]
	req := signRequest(t, loadProfiles(t)[0], testKey(t, protocol.KeyP256).Public())
	req.Validity = 730 * 24 * time.Hour

	cert, err := authority.Sign(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.NotAfter.Equal(caCert.NotAfter) {
		t.Errorf("NotAfter %s, want the CA's %s", cert.NotAfter, caCert.NotAfter)
	}
	if cert.NotBefore.Before(caCert.NotBefore) {
		t.Errorf("NotBefore %s precedes the CA's %s", cert.NotBefore, caCert.NotBefore)
	}

	clk.Add(31 * 24 * time.Hour)
	if _, err := authority.Sign(context.Background(), req); !errors.Is(err, ca.ErrExpired) {
		t.Errorf("signing with an expired CA: %v", err)
	}
}

func TestSignRefusals(t *testing.T) {
	authority := newCA(t, testOptions(t))
	good := signRequest(t, loadProfiles(t)[0], testKey(t, protocol.KeyP256).Public())
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		edit func(r *ca.SignRequest)
		want error
	}{
		{"no names", context.Background(), func(r *ca.SignRequest) { r.Identity = profile.Identity{} }, ca.ErrBadRequest},
		{"no key", context.Background(), func(r *ca.SignRequest) { r.PublicKey = nil }, ca.ErrBadRequest},
		{"cancelled", cancelled, func(*ca.SignRequest) {}, ca.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			tt.edit(&r)
			if _, err := authority.Sign(tt.ctx, r); !errors.Is(err, tt.want) {
				t.Errorf("Sign: %v, want %v", err, tt.want)
			}
		})
	}
}
