package service_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/escrow"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
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

// A compromised workstation answers a register_certificate job with a certificate of a
// key it holds (self-made, or a real certificate of someone else's): envelopes for the
// holder would then be encrypted to the attacker. The certificate must come from an
// issuer the coordinator trusts and name the holder's e-mail address.
func TestRegisterCertificateRefusesAnAttackersCertificate(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	j := e.registerJob("alice")
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
	reg := e.registerJob("alice")
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
	j := e.registerJob("bob")
	err = e.registerRead(j.ID, withUPN("mallory@corp.test"))
	var pe *protocol.Error
	if !errors.As(err, &pe) || !strings.Contains(pe.Message, "mallory@corp.test, not the holder's UPN bob@corp.test") {
		t.Fatalf("another person's UPN: %v", err)
	}
	if err := e.registerRead(j.ID, withUPN("BOB@corp.test")); err != nil {
		t.Fatalf("the holder's UPN: %v", err)
	}
}

// approveAll has each actor approve job id.
func (e *escrowEnv) approveAll(id string, by ...service.Actor) {
	e.t.Helper()
	for _, a := range by {
		if _, err := e.s.Approve(e.ctx, a, id, service.DecisionRequest{}); err != nil {
			e.t.Fatalf("%s approving %s: %v", a.Username(), id, err)
		}
	}
}

// A key-recovery officer who is also the holder never takes their own escrowed key out:
// they may not approve (jobs.Decide), and they may not open the archive or deliver it
// once others approved, whoever requested it and to whatever target.
func TestRecoveryHolderOfficerCannotTakeTheirOwnKey(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	if _, err := e.s.CreateUser(e.ctx, e.admin, service.UserRequest{Username: "otto", DisplayName: "Otto", Email: "otto@acme.test",
		Organization: "acme", Roles: []jobs.Role{jobs.RoleKeyRecoveryOfficer}}); err != nil {
		t.Fatal(err)
	}
	otto := actorNamed(t, e.st, "otto")
	_, k := e.issueEscrowedFor("otto", "T2")
	for _, target := range []service.RecoveryRequest{
		{Target: store.RecoveryToOfficer, Reason: "otto's mailbox"},
		{Target: store.RecoveryToToken, Agent: "ws-01", TokenSerial: "T2", Reason: "otto's token reset"},
	} {
		rj, err := e.s.RequestRecovery(e.ctx, e.desk, k.ID, target)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.s.Approve(e.ctx, otto, rj.ID, service.DecisionRequest{})
		wantRefusal(t, "the holder approving", err, service.CodeSelfApproval, "holder")
		e.approveAll(rj.ID, e.officers[0], e.officers[1])
		_, err = e.s.RecoveryArchive(e.ctx, otto, rj.ID)
		wantRefusal(t, target.Target+": the holder opening their own key's archive", err, service.CodeSelfApproval, "holder")
		_, err = e.s.DeliverRecovery(e.ctx, otto, rj.ID, service.RecoveryDelivery{PKCS12: target.Target == store.RecoveryToOfficer})
		wantRefusal(t, target.Target+": the holder delivering their own key", err, service.CodeSelfApproval, "holder")
		if _, err := e.s.RecoveryArchive(e.ctx, e.officers[2], rj.ID); err != nil {
			t.Fatalf("%s: another officer opening: %v", target.Target, err)
		}
		if _, err := e.s.Cancel(e.ctx, e.desk, rj.ID, "probe done"); err != nil {
			t.Fatal(err)
		}
	}
}

// A careless or malicious help desk asks for alice's key to be installed on a token that
// carries another holder's certificates (on that holder's workstation): refused.
func TestRecoveryOntoAnotherHoldersTokenRefused(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	_, k := e.issueEscrowed()
	if _, err := e.s.CreateUser(e.ctx, e.admin, service.UserRequest{Username: "mallory", DisplayName: "Mallory", Email: "mallory@acme.test", Organization: "acme"}); err != nil {
		t.Fatal(err)
	}
	e.issueEscrowedFor("mallory", "T2")
	_, err := e.s.RequestRecovery(e.ctx, e.desk, k.ID, service.RecoveryRequest{Target: store.RecoveryToToken, Agent: "ws-01", TokenSerial: "T2", Reason: "T1 lost"})
	wantRefusal(t, "onto mallory's token", err, service.CodeNotHoldersToken, "another holder")
	if _, err := e.s.RequestRecovery(e.ctx, e.desk, k.ID, service.RecoveryRequest{Target: store.RecoveryToToken, Agent: "ws-01", TokenSerial: "T3", Reason: "T1 lost"}); err != nil {
		t.Fatalf("onto a token of nobody's: %v", err)
	}
}

// The officers approve a recovery to an agent as it is: if its seal key changes
// afterwards (reset and enrolled again, perhaps by someone else's machine), the approvals
// do not carry over to the new key: opening and delivering are refused.
func TestRecoveryApprovalBoundToTheAgentsSealKey(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	_, k := e.issueEscrowed()
	rj, err := e.s.RequestRecovery(e.ctx, e.desk, k.ID, service.RecoveryRequest{Target: store.RecoveryToToken, Agent: "ws-01", TokenSerial: "T2", Reason: "T1 lost"})
	if err != nil {
		t.Fatal(err)
	}
	e.approveAll(rj.ID, e.officers[0], e.officers[1])
	if _, err := e.s.RecoveryArchive(e.ctx, e.officers[2], rj.ID); err != nil {
		t.Fatal(err)
	}
	// ws-01 now has another seal key.
	other := newSealKey(t)
	pub, err := seal.MarshalPublicKey(other.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.InTx(e.ctx, func(tx store.Tx) error {
		a, err := tx.GetAgent(e.ctx, "ws-01")
		if err != nil {
			return err
		}
		a.PublicKey = pub
		_, err = tx.UpdateAgent(e.ctx, a)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.RecoveryArchive(e.ctx, e.officers[2], rj.ID)
	wantRefusal(t, "opening for a changed agent key", err, service.CodeBindingMismatch, "seal key")
	sealed := e.sealedKey(other.PublicKey(), rj.ID, []byte("not a key"))
	_, err = e.s.DeliverRecovery(e.ctx, e.officers[2], rj.ID, service.RecoveryDelivery{PrivateKey: sealed})
	wantRefusal(t, "delivering to a changed agent key", err, service.CodeBindingMismatch, "seal key")
}

// One officer cannot make N of M alone, and the archive and the delivery follow the gate:
// a second approval by the same officer is refused, a delivery before the gate passed or
// by someone without recover_keys is refused, and a delivery sealed to another key than
// the target agent's is refused.
func TestRecoveryOneOfficerAlone(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	_, k := e.issueEscrowed()
	kro1, kro2 := e.officers[0], e.officers[1]
	rj, err := e.s.RequestRecovery(e.ctx, kro1, k.ID, service.RecoveryRequest{Target: store.RecoveryToToken, Agent: "ws-01", TokenSerial: "T2", Reason: "T1 lost"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.s.Approve(e.ctx, kro1, rj.ID, service.DecisionRequest{})
	wantRefusal(t, "the requesting officer approving", err, service.CodeSelfApproval, "requested")
	e.approveAll(rj.ID, kro2)
	_, err = e.s.Approve(e.ctx, kro2, rj.ID, service.DecisionRequest{})
	wantRefusal(t, "a second approval by the same officer", err, service.CodeAlreadyDecided, "already decided")
	agentPub, err := seal.ParsePublicKey(func() []byte {
		a, err := e.st.GetAgent(e.ctx, "ws-01")
		if err != nil {
			t.Fatal(err)
		}
		return a.PublicKey
	}())
	if err != nil {
		t.Fatal(err)
	}
	sealed := e.sealedKey(agentPub, rj.ID, []byte("key"))
	_, err = e.s.DeliverRecovery(e.ctx, kro1, rj.ID, service.RecoveryDelivery{PrivateKey: sealed})
	wantRefusal(t, "a delivery with one approval", err, service.CodeApprovalRequired, "1 of 2")
	e.approveAll(rj.ID, e.officers[2])
	_, err = e.s.DeliverRecovery(e.ctx, e.desk, rj.ID, service.RecoveryDelivery{PrivateKey: sealed})
	wantRefusal(t, "a delivery by the help desk", err, service.CodeForbidden, "recover_keys")
	elsewhere := e.sealedKey(newSealKey(t).PublicKey(), rj.ID, []byte("key"))
	_, err = e.s.DeliverRecovery(e.ctx, kro1, rj.ID, service.RecoveryDelivery{PrivateKey: elsewhere})
	wantRefusal(t, "a key sealed to another key than the agent's", err, service.CodeBadRequest, "seal key is")
	// A second delivery, by another officer, is refused: one per job and attempt.
	e.deliverOnce(kro1, kro2, rj.ID, sealed)
}

// The server-made key never reaches the outbox, the audit log or the stored archive in
// clear: in none of them shows its PKCS#8 form, raw, in hex or in base64.
func TestServerKeygenKeyNeverStoredInClear(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	j, k := e.issueEscrowed()
	a, err := escrow.Unmarshal(k.Archive)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := escrow.Open(a, e.recovery)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	scalar, err := priv.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	needles := map[string][]byte{"PKCS#8": der, "PKCS#8 hex": []byte(hex.EncodeToString(der)),
		"PKCS#8 base64": []byte(base64.StdEncoding.EncodeToString(der)), "scalar": scalar,
		"scalar hex": []byte(hex.EncodeToString(scalar)), "scalar base64url": []byte(base64.RawURLEncoding.EncodeToString(scalar))}
	var hay [][]byte
	ms, err := e.st.ListUnsentOutbox(e.ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		hay = append(hay, m.Body)
	}
	for ae, err := range e.st.AuditEntries(e.ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		hay = append(hay, []byte(ae.Details), []byte(ae.Reason))
	}
	hay = append(hay, k.Archive)
	if len(ms) == 0 {
		t.Fatal("no outbox message to look in")
	}
	for _, h := range hay {
		for what, n := range needles {
			if bytes.Contains(h, n) {
				t.Errorf("job %s's private key (%s) shows in clear in %.80q", j.ID, what, h)
			}
		}
	}
}
