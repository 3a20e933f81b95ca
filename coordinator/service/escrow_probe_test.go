package service_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// The escrow seen from an attacker's seat: a compromised workstation, a careless or
// malicious help desk, one rogue key-recovery officer. Each test names the attack.

// caCert makes a self-signed CA certificate for key.
func caCert(t *testing.T, key *ecdsa.PrivateKey, cn string) []byte {
	t.Helper()
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// issued is a certificate for pub from the outside CA the coordinator trusts, naming
// email (none when "").
func (e *escrowEnv) issued(pub crypto.PublicKey, email string, ku x509.KeyUsage) []byte {
	e.t.Helper()
	return issuedBy(e.t, e.issuerKey, e.issuerCert, pub, email, ku)
}

func issuedBy(t *testing.T, key *ecdsa.PrivateKey, issuer *x509.Certificate, pub crypto.PublicKey, email string, ku x509.KeyUsage) []byte {
	t.Helper()
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "someone"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour), KeyUsage: ku,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
	if email != "" {
		tpl.EmailAddresses = []string{email}
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, issuer, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// registerRead runs the success of register_certificate job id with the certificate a
// (possibly compromised) agent says it read, and returns the refusal, if any.
func (e *escrowEnv) registerRead(id string, der []byte) error {
	e.t.Helper()
	var err error
	if txErr := e.s.UpdateJobs(e.ctx, func(jt *service.JobTx) error {
		cur, gerr := jt.GetJob(e.ctx, id)
		if gerr != nil {
			return gerr
		}
		err = jt.RegisterCertificate(e.ctx, cur, der, "T1")
		return nil
	}); txErr != nil {
		e.t.Fatal(txErr)
	}
	return err
}

// A compromised workstation answers a register_certificate job with a certificate of a
// key it holds (self-made, or a real certificate of someone else's): envelopes for the
// holder would then be encrypted to the attacker. The certificate must come from an
// issuer the coordinator trusts and name the holder's e-mail address.
func TestRegisterCertificateRefusesAnAttackersCertificate(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	j, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindRegisterCertificate, Holder: "alice", Agent: "ws-01", Profile: "plain",
		TokenSerial: "T1", CertificateID: "A1B2"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rogueKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := x509.ParseCertificate(caCert(t, rogueKey, "Outside Mail CA")) // same name, other key
	if err != nil {
		t.Fatal(err)
	}
	year := time.Now().Add(365 * 24 * time.Hour)
	for _, tc := range []struct {
		name string
		der  []byte
		want string
	}{
		{"self-signed, naming the holder", func() []byte {
			tpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Alice Holder"}, EmailAddresses: []string{"alice@acme.test"},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: year, KeyUsage: x509.KeyUsageKeyAgreement}
			der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
			if err != nil {
				t.Fatal(err)
			}
			return der
		}(), "trusted issuer"},
		{"a look-alike issuer", issuedBy(t, rogueKey, rogue, &k.PublicKey, "alice@acme.test", x509.KeyUsageKeyAgreement), "trusted issuer"},
		{"another person's certificate", e.issued(&k.PublicKey, "mallory@acme.test", x509.KeyUsageKeyAgreement), "alice@acme.test"},
		{"no e-mail address", e.issued(&k.PublicKey, "", x509.KeyUsageKeyAgreement), "alice@acme.test"},
	} {
		err := e.registerRead(j.ID, tc.der)
		var pe *protocol.Error
		if !errors.As(err, &pe) || pe.Code != protocol.CodePolicyViolation || !strings.Contains(pe.Message, tc.want) {
			t.Errorf("%s: %v, want policy_violation naming %q", tc.name, err, tc.want)
		}
	}
	if eks, err := e.st.ListHolderEncryptionKeys(e.ctx, e.alice.ID); err != nil || len(eks) != 0 {
		t.Fatalf("an attacker's key became the holder's encryption key: %+v, %v", eks, err)
	}
	// The holder's own certificate, from the trusted issuer, in another letter case.
	if err := e.registerRead(j.ID, e.issued(&k.PublicKey, "Alice@ACME.test", x509.KeyUsageKeyAgreement)); err != nil {
		t.Fatalf("the holder's certificate: %v", err)
	}
}

// A certificate the coordinator's own CA issued (the usual case: an encryption key made
// by an earlier issue) is trusted without configuring an issuer.
func TestRegisterCertificateTrustsTheCoordinatorsCA(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	_, k := e.issueEscrowed()
	c, err := e.st.GetCertificate(e.ctx, k.CertificateSerial)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindRegisterCertificate, Holder: "alice", Agent: "ws-01", Profile: "plain",
		TokenSerial: "T1", CertificateID: "A1B2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.registerRead(reg.ID, c.DER); err != nil {
		t.Fatalf("the coordinator's own certificate of alice: %v", err)
	}
	eks, err := e.st.ListHolderEncryptionKeys(e.ctx, e.alice.ID)
	if err != nil || len(eks) != 2 || eks[1].Source != store.SourceRegistered && eks[0].Source != store.SourceRegistered {
		t.Fatalf("holder's keys %+v, %v", eks, err)
	}
}

// A smart-card holder known by UPN only: the certificate's UPN must be theirs.
func TestRegisterCertificateMatchesTheHoldersUPN(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	if _, err := e.s.CreateUser(e.ctx, e.admin, service.UserRequest{Username: "bob", DisplayName: "Bob", Organization: "acme", UPN: "bob@corp.test"}); err != nil {
		t.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	withUPN := func(upn string) []byte {
		ext, _, err := ca.SubjectAltName(profile.Identity{Subject: pkix.Name{CommonName: "Bob"}, UPNs: []string{upn}})
		if err != nil {
			t.Fatal(err)
		}
		tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "Bob"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageKeyAgreement,
			ExtraExtensions: []pkix.Extension{ext}}
		der, err := x509.CreateCertificate(rand.Reader, tpl, e.issuerCert, &k.PublicKey, e.issuerKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	j, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindRegisterCertificate, Holder: "bob", Agent: "ws-01", Profile: "plain",
		TokenSerial: "T1", CertificateID: "A1B2"})
	if err != nil {
		t.Fatal(err)
	}
	err = e.registerRead(j.ID, withUPN("mallory@corp.test"))
	var pe *protocol.Error
	if !errors.As(err, &pe) || !strings.Contains(pe.Message, "mallory@corp.test, not the holder's UPN bob@corp.test") {
		t.Fatalf("another person's UPN: %v", err)
	}
	if err := e.registerRead(j.ID, withUPN("BOB@corp.test")); err != nil {
		t.Fatalf("the holder's UPN: %v", err)
	}
}
