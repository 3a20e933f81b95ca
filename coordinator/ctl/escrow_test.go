package ctl_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/coordinator/coordinatortest"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/escrow"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

const encProfile = `name: enc
description: An escrowed encryption key made by the coordinator.
key: {type: ec, curve: P-256, origin: server, escrow: true}
subject:
  common_name: "{{.Name}}"
key_usage: [keyAgreement]
extended_key_usage: [emailProtection]
validity: 30d
pin_policy: {min_length: 6, max_length: 16}
`

// recoveryOrg is a real coordinator with organisation Acme: alice, a holder with no API
// token; desk, its help desk; kro1 and kro2, key-recovery officers; the enc profile; and
// the organisation's backup key as a recovery certificate, whose private half the test
// keeps as the officers would.
type recoveryOrg struct {
	inst  *coordinatortest.Instance
	ctx   context.Context
	envOf map[string]map[string]string // username → tokenfleetctl's environment, for all but alice
	rec   coordinatortest.RecoveryKey
}

// newRecoveryOrg starts a recoveryOrg. officersInOrg makes kro1 and kro2 members of Acme;
// otherwise they belong to no organisation, and the recovery gate must still count them.
func newRecoveryOrg(t *testing.T, officersInOrg bool) recoveryOrg {
	t.Helper()
	inst := coordinatortest.Start(t, coordinatortest.Options{})
	ctx := testenv.Context(t)
	admin, err := client.New(inst.URL, inst.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateOrg(ctx, "Acme"); err != nil {
		t.Fatal(err)
	}
	officerOrg := ""
	if officersInOrg {
		officerOrg = "Acme"
	}
	envOf := map[string]map[string]string{}
	for _, u := range []client.UserCreate{
		{Username: "alice", DisplayName: "Alice Martin", Organization: "Acme"},
		{Username: "desk", Organization: "Acme", Roles: []jobs.Role{jobs.RoleHelpdesk}},
		{Username: "kro1", Organization: officerOrg, Roles: []jobs.Role{jobs.RoleKeyRecoveryOfficer}},
		{Username: "kro2", Organization: officerOrg, Roles: []jobs.Role{jobs.RoleKeyRecoveryOfficer}},
	} {
		if _, err := admin.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if u.Username == "alice" {
			continue
		}
		tok, err := admin.CreateAPIToken(ctx, u.Username, client.APITokenCreate{Name: "test"})
		if err != nil {
			t.Fatal(err)
		}
		envOf[u.Username] = map[string]string{"TOKENFLEET_URL": inst.URL, "TOKENFLEET_TOKEN": tok.Token}
	}
	if _, err := admin.ApplyProfiles(ctx, []byte(encProfile)); err != nil {
		t.Fatal(err)
	}
	rec := coordinatortest.NewRecoveryKey(t, "Backup key 1")
	if _, err := admin.AddRecoveryCertificate(ctx, rec.CertPEM); err != nil {
		t.Fatal(err)
	}
	return recoveryOrg{inst: inst, ctx: ctx, envOf: envOf, rec: rec}
}

// TestEscrowRecoveryToOfficer runs a recovery to an officer's PKCS#12 through the real
// coordinator (responses held to the API description): the request, the refusal with one
// approval, the second approval, and recovery open, whose PKCS#12 openssl reads back with
// the key of the archived certificate.
func TestEscrowRecoveryToOfficer(t *testing.T) {
	t.Parallel()
	org := newRecoveryOrg(t, true)
	inst, envOf, rec := org.inst, org.envOf, org.rec
	dir := t.TempDir()
	keyFile := rec.KeyFile

	// alice's escrowed key, as a server_keygen job that succeeded leaves it.
	keyID, _, _ := seedAliceKey(t, inst.Store, rec)

	r := runCtl(t, envOf["desk"], "", "escrow", "list", "--holder", "alice")
	if r.code != 0 || !strings.Contains(r.stdout, keyID) || !strings.Contains(r.stdout, "active") {
		t.Fatalf("escrow list: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r = runCtl(t, envOf["desk"], "", "escrow", "recover", keyID, "--officer"); r.code == 0 || !strings.Contains(r.stderr, "--reason is required") {
		t.Fatalf("recover without a reason: exit %d, %q", r.code, r.stderr)
	}
	r = runCtl(t, envOf["desk"], "", "escrow", "recover", keyID, "--officer", "--reason", "tender envelopes of 2026 to open")
	m := regexp.MustCompile(`recovery job (\S+) queued: pending_approval`).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("recover: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	job := m[1]
	if r = runCtl(t, envOf["kro1"], "", "approve", job, "--yes"); r.code != 0 {
		t.Fatalf("first approval: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	p12 := filepath.Join(dir, "alice.p12")
	pwFile := filepath.Join(dir, "password")
	writeSecret(t, pwFile, []byte("correct horse battery\n"))
	open := []string{"recovery", "open", job, "--recovery-key", keyFile, "--pkcs12", p12, "--password-file", pwFile}
	if r = runCtl(t, envOf["kro2"], "", open...); r.code == 0 || !strings.Contains(r.stderr, "1 of 2 approvals") {
		t.Fatalf("open with one approval: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(p12); !os.IsNotExist(err) {
		t.Fatalf("a PKCS#12 was written before the approvals: %v", err)
	}
	if r = runCtl(t, envOf["desk"], "", "approve", job, "--yes"); r.code == 0 || !strings.Contains(r.stderr, "self_approval") && !strings.Contains(r.stderr, "may not decide") {
		t.Fatalf("the requester approving: exit %d, %q", r.code, r.stderr)
	}
	if r = runCtl(t, envOf["kro2"], "", "approve", job, "--yes"); r.code != 0 {
		t.Fatalf("second approval: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r = runCtl(t, envOf["kro2"], "", open...); r.code != 0 || !strings.Contains(r.stdout, "written to "+p12) || !strings.Contains(r.stdout, "succeeded") {
		t.Fatalf("open: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}

	// openssl, which nobody here wrote, reads the file with the password, and its key is
	// the certificate's.
	out, err := exec.Command("openssl", "pkcs12", "-info", "-in", p12, "-passin", "file:"+pwFile, "-nodes").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkcs12 -info: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("BEGIN PRIVATE KEY")) || !bytes.Contains(out, []byte("BEGIN CERTIFICATE")) || !bytes.Contains(out, []byte("Alice Martin")) {
		t.Fatalf("openssl pkcs12 -info shows no key and certificate:\n%s", out)
	}
	keyPub := opensslPub(t, out, "pkey")
	certPub := opensslPub(t, out, "x509")
	if keyPub == "" || keyPub != certPub {
		t.Fatalf("the PKCS#12's key is not its certificate's:\n%s\n%s", keyPub, certPub)
	}
	if bad, err := exec.Command("openssl", "pkcs12", "-info", "-in", p12, "-passin", "pass:wrong", "-nodes").CombinedOutput(); err == nil {
		t.Fatalf("openssl read the PKCS#12 with a wrong password:\n%s", bad)
	}
	if r = runCtl(t, envOf["kro2"], "", open...); r.code == 0 {
		t.Fatalf("open after delivery: exit 0, %q", r.stdout)
	}
}

// opensslPub gives the public key (PEM) of the key or certificate in openssl's output.
func opensslPub(t *testing.T, pemText []byte, tool string) string {
	t.Helper()
	args := []string{tool, "-pubout"}
	if tool == "x509" {
		args = []string{"x509", "-noout", "-pubkey"}
	}
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = bytes.NewReader(pemText)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", tool, err, out)
	}
	return string(out)
}

func writeSecret(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func certFor(t *testing.T, issuer *ecdsa.PrivateKey, pub any, cn string, ku x509.KeyUsage) []byte {
	t.Helper()
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour), KeyUsage: ku}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, pub, issuer)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// seedAliceKey makes an encryption key and certificate for alice, archives the key to the
// recovery key and records it as her escrowed key (seedEscrowedKey).
func seedAliceKey(t *testing.T, st store.Store, rec coordinatortest.RecoveryKey) (string, *ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	hk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := x509.ParseCertificate(certFor(t, hk, &hk.PublicKey, "Alice Martin", x509.KeyUsageKeyAgreement))
	if err != nil {
		t.Fatal(err)
	}
	a, err := escrow.Seal(hk, hc, []crypto.PublicKey{&rec.Key.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	return seedEscrowedKey(t, st, a), hk, hc
}

// seedEscrowedKey records archive a as alice's active escrowed key on token T1, made by a
// server_keygen job that succeeded.
func seedEscrowedKey(t *testing.T, st store.Store, a *escrow.Archive) string {
	t.Helper()
	ctx := t.Context()
	data, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var id string
	err = st.InTx(ctx, func(tx store.Tx) error {
		u, err := tx.GetUserByUsername(ctx, "alice")
		if err != nil {
			return err
		}
		sp, err := tx.GetProfile(ctx, "enc")
		if err != nil {
			return err
		}
		j, err := tx.CreateJob(ctx, store.Job{Kind: jobs.KindServerKeygen, State: jobs.StatePendingApproval, HolderID: u.ID, ProfileName: "enc",
			ProfileHash: sp.ContentHash, TokenSerial: "T1", RequesterID: u.ID, OrganizationID: u.OrganizationID, BindingHash: strings.Repeat("0", 64)})
		if err != nil {
			return err
		}
		k, err := tx.AddEscrowedKey(ctx, store.EscrowedKey{JobID: j.ID, Attempt: 1, HolderID: u.ID, TokenSerial: "T1", KeyID: a.KeyID(),
			Archive: data, State: store.EscrowActive})
		id = k.ID
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestEscrowRecoveryToToken: recovery open seals the archived key to the target agent,
// and the coordinator's recover_key dispatch carries it, the archived certificate and the
// token's PIN; the agent's key opens it to the escrowed key.
func TestEscrowRecoveryToToken(t *testing.T) {
	t.Parallel()
	org := newRecoveryOrg(t, false)
	inst, ctx, envOf, rec := org.inst, org.ctx, org.envOf, org.rec
	keyID, hk, hc := seedAliceKey(t, inst.Store, rec)
	agentKey := replacementToken(t, inst, "ws-01", "T2")

	r := runCtl(t, envOf["desk"], "", "escrow", "recover", keyID, "--token", "T2", "--agent", "ws-01", "--reason", "T1 lost")
	m := regexp.MustCompile(`recovery job (\S+) queued`).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("recover: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	job := m[1]
	for _, o := range []string{"kro1", "kro2"} {
		if r = runCtl(t, envOf[o], "", "approve", job, "--yes"); r.code != 0 {
			t.Fatalf("approval by %s: exit %d, %q %q", o, r.code, r.stdout, r.stderr)
		}
	}
	if r = runCtl(t, envOf["kro1"], "", "recovery", "open", job, "--recovery-key", rec.KeyFile, "--pkcs12", filepath.Join(t.TempDir(), "x.p12")); r.code == 0 {
		t.Fatalf("a PKCS#12 for a token target: exit 0, %q", r.stdout)
	}
	if r = runCtl(t, envOf["kro1"], "", "recovery", "open", job, "--recovery-key", rec.KeyFile); r.code != 0 || !strings.Contains(r.stdout, "sealed to agent ws-01 for token T2") {
		t.Fatalf("open: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}

	// The dispatch waits in the outbox (no broker here); the agent's key opens its key.
	ms, err := inst.Store.ListUnsentOutbox(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var d protocol.JobDispatch
	var env *protocol.Envelope
	for _, msg := range ms {
		if msg.CorrelationID == job && msg.Type == string(protocol.TypeDispatch) {
			if env, err = protocol.Decode(msg.Body); err != nil {
				t.Fatal(err)
			}
			if d, err = protocol.DecodeBody[protocol.JobDispatch](env); err != nil {
				t.Fatal(err)
			}
		}
	}
	if env == nil || d.Kind != jobs.KindRecoverKey || d.Token.Serial != "T2" || d.PINs == nil || !bytes.Equal(d.Certificates.Certificate, hc.Raw) {
		t.Fatalf("recover_key dispatch %+v", d)
	}
	der, err := seal.Open(agentKey, d.PrivateKey, seal.Binding{JobID: job, Attempt: env.Attempt, Purpose: protocol.PurposePrivateKey})
	if err != nil {
		t.Fatal(err)
	}
	got, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	if !got.(*ecdsa.PrivateKey).Equal(hk) {
		t.Fatal("the agent received another key than the escrowed one")
	}
}

// replacementToken records agent id with a seal key the test keeps, and token serial on it
// with a user PIN the coordinator holds (sealed to its result key, as an agent's result
// would have left it).
func replacementToken(t *testing.T, inst *coordinatortest.Instance, id, serial string) *ecdh.PrivateKey {
	t.Helper()
	ctx := t.Context()
	agentKey, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := seal.MarshalPublicKey(agentKey.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	resultKey, _, err := dispatch.LoadOrCreateResultKey(filepath.Join(inst.DataDir, dispatch.ResultKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	err = inst.Store.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.CreateAgent(ctx, store.Agent{ID: id, Hostname: id + ".acme.test", PublicKey: pub}); err != nil {
			return err
		}
		if _, err := tx.UpsertToken(ctx, store.Token{Serial: serial, AgentID: id, Flags: json.RawMessage(`{"initialized":true}`), LastSeen: time.Now()}); err != nil {
			return err
		}
		u, err := tx.GetUserByUsername(ctx, "alice")
		if err != nil {
			return err
		}
		j, err := tx.CreateJob(ctx, store.Job{Kind: jobs.KindIssue, State: jobs.StatePendingApproval, HolderID: u.ID, ProfileName: "enc",
			TokenSerial: serial, RequesterID: u.ID, BindingHash: strings.Repeat("0", 64)})
		if err != nil {
			return err
		}
		s, err := seal.Seal(resultKey.PublicKey(), []byte("123456"), seal.Binding{JobID: j.ID, Attempt: 1, Purpose: protocol.PurposeUserPIN})
		if err != nil {
			return err
		}
		raw, err := json.Marshal(s)
		if err != nil {
			return err
		}
		_, err = tx.AddTokenPIN(ctx, store.TokenPIN{TokenSerial: serial, Purpose: store.PINPurposeUser, JobID: j.ID, Attempt: 1, Sealed: raw})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return agentKey
}
