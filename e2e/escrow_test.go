//go:build cgo

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// encryptionProfile is an escrowed encryption key made by the coordinator.
const encryptionProfile = `name: e2e-encryption
description: Escrowed encryption key for the end-to-end tests.
key:
  type: rsa
  size: 2048
  origin: server
  escrow: true
subject:
  common_name: "{{.Name}}"
  organization: "{{.Organization}}"
sans:
  email: true
key_usage: [keyEncipherment, dataEncipherment]
extended_key_usage: [emailProtection]
validity: 30d
pin_policy:
  min_length: 12
  max_length: 16
approval:
  required: 1
  roles: [approver]
  scope: organization
  expires_after: 72h
`

// TestEscrowEndToEnd: the organisation's backup key is made with openssl and registered;
// the coordinator makes a holder's encryption key, archives it to that key and the real
// agent imports it onto the holder's SoftHSM2 token, where pkcs11-tool shows it (not made
// on the token) and decrypts what openssl encrypted to its certificate. An officer's
// PKCS#12 of the key, after two officers approved, opens in openssl and decrypts the same.
// The token is lost and replaced; the replacement queues the key's recovery onto the new
// token, which one approval does not open and two do; the new token decrypts the same
// data.
func TestEscrowEndToEnd(t *testing.T) {
	s := newSystem(t)
	id := testenv.UniqueUser("ws-escrow-")
	s.enrol(id)
	s.startAgent(id, agentOptions{})
	dir := t.TempDir()
	write := func(name, data string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// The organisation's backup key, made by openssl as a key ceremony would; only its
	// certificate reaches the coordinator.
	recKey, recCert := filepath.Join(dir, "backup-key.pem"), filepath.Join(dir, "backup-cert.pem")
	tool(t, "openssl", "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-keyout", recKey, "-out", recCert,
		"-days", "3650", "-subj", "/CN=Acme backup key 1/O=Acme", "-addext", "keyUsage=critical,keyEncipherment")
	s.ctl(s.admin, "recovery-cert", "add", recCert)
	if l := s.ctl(s.operator, "recovery-cert", "list"); !strings.Contains(l, "Acme backup key 1") {
		t.Errorf("recovery-cert list lacks the backup key's CN:\n%s", l)
	}

	// Two key-recovery officers.
	officers := make([]string, 2)
	for i, name := range []string{"kro-one", "kro-two"} {
		s.ctl(s.admin, "user", "create", name, "--name", "Officer "+name, "--org", org, "--role", "key_recovery_officer")
		officers[i] = strings.TrimSpace(s.ctl(s.admin, "user", "token", name, "--name", "e2e"))
	}
	s.ctl(s.admin, "profile", "apply", write("encryption.yaml", encryptionProfile))

	// The holder's token, issued as usual; then the escrowed encryption key onto it.
	first := s.waitJob(s.queue(jobs.KindIssue, id, holder), jobs.StateSucceeded)
	serial := first.TokenSerial
	pin := s.revealPIN(first.ID)
	// A certificate already on the token (the logon one) registered as an encryption key:
	// the agent reads it back and the coordinator records its public key.
	regJob := strings.TrimSpace(s.ctl(s.operator, "issue", "--kind", "register_certificate", "--holder", holder, "--agent", id,
		"--profile", profileName, "--token", serial, "--certificate-id", protocol.DeriveKeyID(first.ID)))
	s.ctl(s.approver, "approve", regJob, "--reason", "register the existing certificate")
	if reg := s.waitJob(regJob, jobs.StateSucceeded); reg.Kind != jobs.KindRegisterCertificate {
		t.Errorf("register job is %s", reg.Kind)
	}
	encJob := strings.TrimSpace(s.ctl(s.operator, "issue", "--holder", holder, "--agent", id, "--profile", "e2e-encryption", "--token", serial))
	s.ctl(s.approver, "approve", encJob, "--reason", "encryption key for tenders")
	enc := s.waitJob(encJob, jobs.StateSucceeded)
	if enc.Kind != jobs.KindServerKeygen {
		t.Fatalf("the escrow profile's job is %s, want %s", enc.Kind, jobs.KindServerKeygen)
	}
	wantSteps(t, enc, jobs.StepTokenFound, jobs.StepKeyImported, jobs.StepCertificateWritten, jobs.StepVerified)
	// What an application encrypts to: the holder's current encryption key, the escrowed
	// one (the later of the two), as tokenfleetctl prints it for openssl.
	encPEM := s.ctl(s.operator, "encryption-key", "list", "--holder", holder, "--pem")
	if strings.TrimSpace(encPEM) != strings.TrimSpace(s.certificateOf(encJob).PEM) {
		t.Fatalf("the current encryption key of %s is\n%s\nwant the certificate of job %s", holder, encPEM, encJob)
	}
	encCert := write("enc-cert.pem", encPEM)
	keyID := protocol.DeriveKeyID(encJob)
	wantServerMadeKey(t, serial, pin, keyID)

	// openssl encrypts to the certificate; the token decrypts.
	secret := []byte("tender envelope session key 0123")
	plain := write("plain", string(secret))
	ct := filepath.Join(dir, "ct")
	tool(t, "openssl", "pkeyutl", "-encrypt", "-certin", "-inkey", encCert, "-in", plain, "-out", ct, "-pkeyopt", "rsa_padding_mode:oaep")
	if got := tokenDecrypt(t, serial, pin, keyID, ct, dir); !bytes.Equal(got, secret) {
		t.Fatalf("the token decrypted %q, want %q", got, secret)
	}

	keys := s.escrowedKeys(holder)
	if len(keys.Items) != 1 || keys.Items[0].State != "active" || keys.Items[0].TokenSerial != serial {
		t.Fatalf("escrowed keys of %s: %+v", holder, keys.Items)
	}
	escrowID := keys.Items[0].ID

	// An officer's copy as a PKCS#12: openssl opens it and decrypts the same data.
	var queued struct{ ID string }
	if err := json.Unmarshal([]byte(s.ctl(s.operator, "escrow", "recover", escrowID, "--officer", "--reason", "holder's mailbox archive", "--json")), &queued); err != nil || queued.ID == "" {
		t.Fatalf("escrow recover --json: %+v, %v", queued, err)
	}
	p12Job := queued.ID
	s.ctl(officers[0], "approve", p12Job, "--reason", "ticket 4711")
	s.ctl(officers[1], "approve", p12Job, "--reason", "ticket 4711, checked")
	p12, pw := filepath.Join(dir, "key.p12"), write("p12-password", "correct horse battery staple\n")
	s.ctl(officers[0], "recovery", "open", p12Job, "--recovery-key", recKey, "--pkcs12", p12, "--password-file", pw)
	s.waitJob(p12Job, jobs.StateSucceeded)
	keyPEM := filepath.Join(dir, "recovered-key.pem")
	tool(t, "openssl", "pkcs12", "-in", p12, "-nocerts", "-nodes", "-passin", "file:"+pw, "-out", keyPEM)
	s.rememberPrivateKey("the escrowed key", keyPEM)
	opensslPlain := filepath.Join(dir, "openssl-plain")
	tool(t, "openssl", "pkeyutl", "-decrypt", "-inkey", keyPEM, "-in", ct, "-out", opensslPlain, "-pkeyopt", "rsa_padding_mode:oaep")
	if got, err := os.ReadFile(opensslPlain); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("openssl decrypted %q with the PKCS#12's key (%v), want %q", got, err, secret)
	}

	// The token is lost and replaced; the replacement queues the key's recovery.
	s.ctl(s.operator, "token", "suspend", serial, "--reason", "not found this morning")
	s.ctl(s.operator, "token", "lost", serial, "--reason", "not found after a week")
	replJob := strings.TrimSpace(s.ctl(s.operator, "token", "replace", serial, "--holder", holder, "--agent", id, "--profile", profileName))
	s.ctl(s.approver, "approve", replJob, "--reason", "replacement of a lost token")
	repl := s.waitJob(replJob, jobs.StateSucceeded)
	newSerial := repl.TokenSerial
	newPIN := s.revealPIN(replJob)
	var recJob string
	eventually(t, "the replacement to queue the key's recovery", func() (bool, string) {
		l := s.jobsOf(jobs.KindRecoverKey)
		for _, j := range l {
			if j.ID != p12Job {
				recJob = j.ID
			}
		}
		return recJob != "", ""
	})

	// One approval does not open the archive.
	s.ctl(officers[0], "approve", recJob, "--reason", "replacement token of Alice")
	r := s.ctlRun(officers[0], "recovery", "open", recJob, "--recovery-key", recKey)
	if r.code == ctl.ExitOK || !strings.Contains(r.stderr, "1 of 2") {
		t.Fatalf("recovery open with one approval: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	s.ctl(officers[1], "approve", recJob, "--reason", "replacement token of Alice, confirmed")
	s.ctl(officers[1], "recovery", "open", recJob, "--recovery-key", recKey)
	rec := s.waitJob(recJob, jobs.StateSucceeded)
	if rec.TokenSerial != newSerial {
		t.Errorf("the key was recovered onto token %q, want the replacement %q", rec.TokenSerial, newSerial)
	}
	newKeyID := protocol.DeriveKeyID(recJob)
	wantServerMadeKey(t, newSerial, newPIN, newKeyID)
	if got := tokenDecrypt(t, newSerial, newPIN, newKeyID, ct, dir); !bytes.Equal(got, secret) {
		t.Fatalf("the replacement token decrypted %q, want %q", got, secret)
	}
	s.finalChecks()
}

// wantServerMadeKey checks with pkcs11-tool that the token holds the private key under
// keyID, sensitive and not local (it was made off the token), and its certificate.
func wantServerMadeKey(t *testing.T, serial, pin, keyID string) {
	t.Helper()
	out := p11(t, "--slot", slotOf(t, serial).id, "-O", "--login", "--pin", pin)
	// Each object is a line at the margin followed by indented lines.
	var objs []string
	for _, line := range strings.Split(out, "\n") {
		if line != "" && !strings.HasPrefix(line, " ") {
			objs = append(objs, "")
		}
		if len(objs) > 0 {
			objs[len(objs)-1] += line + "\n"
		}
	}
	var block string
	for _, b := range objs {
		if strings.HasPrefix(b, "Private Key Object") && strings.Contains(b, keyID) {
			block = b
		}
	}
	if block == "" {
		t.Fatalf("no private key with ID %s on token %s:\n%s", keyID, serial, out)
	}
	for _, line := range strings.Split(block, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Access:"); ok && (strings.Contains(v, "local") || !strings.Contains(v, "sensitive")) {
			t.Errorf("private key %s: access %q, want sensitive and not local", keyID, v)
		}
	}
	if !strings.Contains(out, "Certificate Object") {
		t.Errorf("no certificate on token %s:\n%s", serial, out)
	}
}

// tokenDecrypt decrypts an RSA-OAEP (SHA-1, all SoftHSM2 2.6 does) ciphertext with the
// token's key, through pkcs11-tool.
func tokenDecrypt(t *testing.T, serial, pin, keyID, ct, dir string) []byte {
	t.Helper()
	out := filepath.Join(dir, "token-plain-"+serial)
	p11(t, "--slot", slotOf(t, serial).id, "--login", "--pin", pin, "--decrypt", "-m", "RSA-PKCS-OAEP",
		"--hash-algorithm", "SHA-1", "--mgf", "MGF1-SHA1", "--id", keyID, "--input-file", ct, "--output-file", out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// escrowedKeys lists a holder's escrowed keys.
func (s *system) escrowedKeys(holderName string) client.EscrowedKeyList {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := s.api.ListEscrowedKeys(ctx, holderName, "")
	if err != nil {
		s.t.Fatal(err)
	}
	return l
}

// jobsOf lists the jobs of a kind.
func (s *system) jobsOf(kind jobs.Kind) []client.Job {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := s.api.ListJobs(ctx, client.JobFilter{Kind: kind}, client.Page{})
	if err != nil {
		s.t.Fatal(err)
	}
	return l.Items
}
