package service_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/escrow"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/notify"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

const escrowProfiles = `name: enc
description: An escrowed encryption key made by the coordinator, no approval.
key: {type: ec, curve: P-256, origin: server, escrow: true}
subject:
  common_name: "{{.Name}}"
sans: {email: true}
key_usage: [keyAgreement]
extended_key_usage: [emailProtection]
validity: 30d
pin_policy: {min_length: 6, max_length: 16}
---
name: enc-gated
description: An escrowed encryption key, one approval, then the CA operator before signing.
key: {type: ec, curve: P-256, origin: server, escrow: true}
subject:
  common_name: "{{.Name}}"
key_usage: [keyAgreement]
extended_key_usage: [emailProtection]
validity: 30d
pin_policy: {min_length: 6, max_length: 16}
approval: {required: 1, roles: [approver], expires_after: 7d, ca_operator_required: true}
---
name: plain
description: A signing key made on the token.
key: {type: ec, curve: P-256}
subject:
  common_name: "{{.Name}}"
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 30d
pin_policy: {min_length: 6, max_length: 16}
`

// escrowEnv is a service with the real dispatcher as its dispatcher and issuer (no broker:
// dispatches stay in the outbox, where the tests read them), a built-in CA, an agent whose
// seal key the test holds, and tokens whose user PINs the coordinator keeps.
type escrowEnv struct {
	t         *testing.T
	ctx       context.Context
	s         *service.Service
	st        store.Store
	resultKey *ecdh.PrivateKey
	agentKey  *ecdh.PrivateKey
	recovery  crypto.PrivateKey // the recovery certificate's private half, held by the officers
	admin     service.Actor
	desk      service.Actor
	boss      service.Actor
	officers  []service.Actor
	alice     store.User
	// issuer is an outside CA the coordinator is configured to trust for registered
	// encryption certificates (escrow.trusted_issuers).
	issuerKey  *ecdsa.PrivateKey
	issuerCert *x509.Certificate
}

func newEscrowEnv(t *testing.T, cfg store.Config, withRecoveryCert bool) *escrowEnv {
	t.Helper()
	ctx := t.Context()
	r := newDispatchRig(t, cfg)
	st, authority, d, key, log := r.st, r.ca, r.d, r.resultKey, r.log
	tm, err := notify.LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	o, err := notify.NewOutbox(notify.OutboxConfig{Email: true}, tm, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issuerCert, err := x509.ParseCertificate(caCert(t, issuerKey, "Outside Mail CA"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := service.New(service.Options{Store: d.Store(st), Logger: log, Issuer: d, Dispatcher: d, Notifier: o,
		EncryptionIssuers: func() []*x509.Certificate { return append(authority.CACertificates(), issuerCert) }})
	if err != nil {
		t.Fatal(err)
	}
	d.Bind(s)
	e := &escrowEnv{t: t, ctx: ctx, s: s, st: st, resultKey: key, admin: bootstrapAdmin(t, s, st), issuerKey: issuerKey, issuerCert: issuerCert}
	if _, err := s.CreateOrganization(ctx, e.admin, "acme"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []service.UserRequest{
		{Username: "olga", Organization: "acme", Roles: []jobs.Role{jobs.RoleHelpdesk}},
		{Username: "arne", Organization: "acme", Roles: []jobs.Role{jobs.RoleApprover}},
		{Username: "cao", Roles: []jobs.Role{jobs.RoleCAOperator}},
		{Username: "kro1", Organization: "acme", Roles: []jobs.Role{jobs.RoleKeyRecoveryOfficer}},
		{Username: "kro2", Organization: "acme", Roles: []jobs.Role{jobs.RoleKeyRecoveryOfficer}},
		{Username: "kro3", Roles: []jobs.Role{jobs.RoleKeyRecoveryOfficer, jobs.RoleHelpdesk}},
		{Username: "alice", DisplayName: "Alice Holder", Organization: "acme"},
	} {
		u.Email = u.Username + "@acme.test"
		if _, err := s.CreateUser(ctx, e.admin, u); err != nil {
			t.Fatal(err)
		}
	}
	e.desk, e.boss = actorNamed(t, st, "olga"), actorNamed(t, st, "arne")
	e.officers = []service.Actor{actorNamed(t, st, "kro1"), actorNamed(t, st, "kro2"), actorNamed(t, st, "kro3")}
	if e.alice, err = st.GetUserByUsername(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyProfiles(ctx, e.admin, []byte(escrowProfiles)); err != nil {
		t.Fatal(err)
	}
	e.agentKey = newSealKey(t)
	pub, err := seal.MarshalPublicKey(e.agentKey.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.CreateAgent(ctx, store.Agent{ID: "ws-01", Hostname: "ws-01.acme.test", PublicKey: pub})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, serial := range []string{"T1", "T2", "T3"} {
		e.token(serial)
	}
	if withRecoveryCert {
		e.addRecoveryCert()
	}
	return e
}

// token records a token on ws-01 with a user PIN a tokenfleet job set, sealed to the
// coordinator's result key as an agent's result would have.
func (e *escrowEnv) token(serial string) {
	e.t.Helper()
	err := e.st.InTx(e.ctx, func(tx store.Tx) error {
		if _, err := tx.UpsertToken(e.ctx, store.Token{Serial: serial, AgentID: "ws-01", Model: "SoftHSM v2",
			Flags: json.RawMessage(`{"initialized":true,"user_pin_initialized":true}`), LastSeen: time.Now()}); err != nil {
			return err
		}
		sp, err := tx.GetProfile(e.ctx, "plain")
		if err != nil {
			return err
		}
		j, err := tx.CreateJob(e.ctx, store.Job{Kind: jobs.KindIssue, State: jobs.StatePendingApproval, HolderID: e.alice.ID,
			ProfileName: "plain", ProfileHash: sp.ContentHash, AgentID: "ws-01", TokenSerial: serial, RequesterID: e.alice.ID,
			BindingHash: strings.Repeat("0", 64)})
		if err != nil {
			return err
		}
		sealed, err := seal.Seal(e.resultKey.PublicKey(), []byte("123456"), seal.Binding{JobID: j.ID, Attempt: 1, Purpose: protocol.PurposeUserPIN})
		if err != nil {
			return err
		}
		raw, err := json.Marshal(sealed)
		if err != nil {
			return err
		}
		_, err = tx.AddTokenPIN(e.ctx, store.TokenPIN{TokenSerial: serial, Purpose: store.PINPurposeUser, JobID: j.ID, Attempt: 1, Sealed: raw})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// addRecoveryCert adds the organisation's backup key: a P-256 key allowing keyAgreement,
// whose private half the test keeps as the officers would.
func (e *escrowEnv) addRecoveryCert() {
	e.t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	der := selfSigned(e.t, k, &k.PublicKey, "Backup key 1", x509.KeyUsageKeyAgreement, time.Now().Add(365*24*time.Hour))
	if _, err := e.s.AddRecoveryCertificate(e.ctx, e.admin, string(pemOf("CERTIFICATE", der))); err != nil {
		e.t.Fatal(err)
	}
	e.recovery = k
}

func selfSigned(t *testing.T, signer crypto.Signer, pub crypto.PublicKey, cn string, ku x509.KeyUsage, notAfter time.Time) []byte {
	t.Helper()
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, KeyUsage: ku}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// dispatchOf returns the newest unsent dispatch for job id, decoded.
func (e *escrowEnv) dispatchOf(id string) (*protocol.Envelope, protocol.JobDispatch) {
	e.t.Helper()
	ms, err := e.st.ListUnsentOutbox(e.ctx, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].CorrelationID != id || ms[i].Type != string(protocol.TypeDispatch) {
			continue
		}
		env, err := protocol.Decode(ms[i].Body)
		if err != nil {
			e.t.Fatal(err)
		}
		d, err := protocol.DecodeBody[protocol.JobDispatch](env)
		if err != nil {
			e.t.Fatal(err)
		}
		return env, d
	}
	e.t.Fatalf("no dispatch for job %s in the outbox", id)
	return nil, protocol.JobDispatch{}
}

// openDispatchedKey opens a dispatch's private key as the agent does and checks it is the
// key of the dispatched certificate.
func (e *escrowEnv) openDispatchedKey(env *protocol.Envelope, d protocol.JobDispatch) crypto.Signer {
	e.t.Helper()
	if d.PrivateKey == nil || d.Certificates == nil || d.Key == nil || d.PINs == nil || d.PINs.UserPIN == nil {
		e.t.Fatalf("dispatch lacks a section: %+v", d)
	}
	der, err := seal.Open(e.agentKey, d.PrivateKey, seal.Binding{JobID: env.JobID, Attempt: env.Attempt, Purpose: protocol.PurposePrivateKey})
	if err != nil {
		e.t.Fatalf("the agent cannot open its key: %v", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		e.t.Fatal(err)
	}
	priv := k.(crypto.Signer)
	cert, err := x509.ParseCertificate(d.Certificates.Certificate)
	if err != nil {
		e.t.Fatal(err)
	}
	if !publicEqual(e.t, priv.Public(), cert.PublicKey) {
		e.t.Fatal("the dispatched key is not the certificate's")
	}
	if pin, err := seal.Open(e.agentKey, d.PINs.UserPIN, seal.Binding{JobID: env.JobID, Attempt: env.Attempt, Purpose: protocol.PurposeUserPIN}); err != nil || string(pin) != "123456" {
		e.t.Fatalf("user PIN %q, %v", pin, err)
	}
	return priv
}

func publicEqual(t *testing.T, a, b crypto.PublicKey) bool {
	t.Helper()
	da, err := x509.MarshalPKIXPublicKey(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := x509.MarshalPKIXPublicKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(da, db)
}

// succeed moves a dispatched job through running to succeeded, as the agent's reports do.
func (e *escrowEnv) succeed(id string) store.Job {
	e.t.Helper()
	return e.moveThrough(id, jobs.StateDispatched, jobs.StateRunning, jobs.StateSucceeded)
}

// moveThrough moves job id through states, in one transaction, as ws-01's agent.
func (e *escrowEnv) moveThrough(id string, states ...jobs.State) store.Job {
	e.t.Helper()
	var out store.Job
	err := e.s.UpdateJobs(e.ctx, func(jt *service.JobTx) error {
		j, err := jt.GetJob(e.ctx, id)
		if err != nil {
			return err
		}
		for _, to := range states {
			if j, err = jt.Transition(e.ctx, j, to, store.JobChange{Actor: "agent:ws-01", Reason: "test"}); err != nil {
				return err
			}
		}
		out = j
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// issueEscrowed runs a server_keygen job for alice on T1 to success and returns it with its
// escrowed key.
func (e *escrowEnv) issueEscrowed() (service.Job, store.EscrowedKey) {
	e.t.Helper()
	return e.issueEscrowedFor("alice", "T1")
}

// issueEscrowedFor runs a server_keygen job for holder on token serial to success and
// returns it with its escrowed key.
func (e *escrowEnv) issueEscrowedFor(holder, serial string) (service.Job, store.EscrowedKey) {
	e.t.Helper()
	j, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindIssue, Holder: holder, Agent: "ws-01", Profile: "enc", TokenSerial: serial})
	if err != nil {
		e.t.Fatal(err)
	}
	e.succeed(j.ID)
	k, err := e.st.GetEscrowedKeyOfAttempt(e.ctx, j.ID, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	return j, k
}

// registerJob queues a register_certificate job for holder: certificate A1B2 of token T1,
// on ws-01.
func (e *escrowEnv) registerJob(holder string) service.Job {
	e.t.Helper()
	j, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindRegisterCertificate, Holder: holder, Agent: "ws-01", Profile: "plain",
		TokenSerial: "T1", CertificateID: "A1B2"})
	if err != nil {
		e.t.Fatal(err)
	}
	return j
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

// newSealKey makes an X25519 seal key, as an agent makes its own.
func newSealKey(t *testing.T) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sealedKey seals key to an agent's seal key pub for the first attempt of recovery job id,
// as an officer does before delivering it.
func (e *escrowEnv) sealedKey(pub *ecdh.PublicKey, id string, key []byte) *protocol.Sealed {
	e.t.Helper()
	s, err := seal.Seal(pub, key, seal.Binding{JobID: id, Attempt: 1, Purpose: protocol.PurposePrivateKey})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// deliverOnce delivers sealed for recovery job id as by, and checks that a second delivery,
// by again, is refused: one delivery per job and attempt.
func (e *escrowEnv) deliverOnce(by, again service.Actor, id string, sealed *protocol.Sealed) {
	e.t.Helper()
	if _, err := e.s.DeliverRecovery(e.ctx, by, id, service.RecoveryDelivery{PrivateKey: sealed}); err != nil {
		e.t.Fatal(err)
	}
	_, err := e.s.DeliverRecovery(e.ctx, again, id, service.RecoveryDelivery{PrivateKey: sealed})
	wantRefusal(e.t, "a second delivery", err, service.CodeConflict, "delivered already")
}

func TestServerKeygenDispatch(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		e := newEscrowEnv(t, cfg, true)
		j, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "enc", TokenSerial: "T1"})
		if err != nil {
			t.Fatalf("%v: %v", err, service.AsError(err).Err)
		}
		if j.Kind != jobs.KindServerKeygen || j.State != jobs.StateApproved {
			t.Fatalf("job %s is a %s job, %s; want server_keygen, approved", j.ID, j.Kind, j.State)
		}
		env, d := e.dispatchOf(j.ID)
		if d.Kind != jobs.KindServerKeygen || d.Token.Serial != "T1" || d.Key.ID != protocol.DeriveKeyID(j.ID) || d.Key.Type != protocol.KeyP256 {
			t.Fatalf("dispatch %+v", d)
		}
		priv := e.openDispatchedKey(env, d)

		// The archive opens with the recovery private key, to the same key, and names the
		// certificate the agent was sent, which the coordinator recorded.
		k, err := e.st.GetEscrowedKeyOfAttempt(e.ctx, j.ID, 1)
		if err != nil {
			t.Fatal(err)
		}
		if k.State != store.EscrowPending || k.TokenSerial != "T1" || k.HolderID != e.alice.ID {
			t.Fatalf("escrowed key %+v", k)
		}
		a, err := escrow.Unmarshal(k.Archive)
		if err != nil {
			t.Fatal(err)
		}
		opened, err := escrow.Open(a, e.recovery)
		if err != nil {
			t.Fatal(err)
		}
		if !publicEqual(t, opened.Public(), priv.Public()) || !bytes.Equal(a.Certificate, d.Certificates.Certificate) {
			t.Fatal("the archive holds another key or certificate than the dispatch")
		}
		c, err := e.st.GetCertificate(e.ctx, k.CertificateSerial)
		if err != nil || c.JobID != j.ID || c.TokenSerial != "T1" || !bytes.Equal(c.DER, a.Certificate) {
			t.Fatalf("certificate record %+v, %v", c, err)
		}
		// The agent's key does not open another attempt's or purpose's binding.
		if _, err := seal.Open(e.agentKey, d.PrivateKey, seal.Binding{JobID: j.ID, Attempt: 2, Purpose: protocol.PurposePrivateKey}); err == nil {
			t.Fatal("the sealed key opened for another attempt")
		}

		// Success makes the key active and the holder's encryption key.
		e.succeed(j.ID)
		if k, err = e.st.GetEscrowedKey(e.ctx, k.ID); err != nil || k.State != store.EscrowActive {
			t.Fatalf("after success %+v, %v", k, err)
		}
		eks, err := e.st.ListHolderEncryptionKeys(e.ctx, e.alice.ID)
		if err != nil || len(eks) != 1 || eks[0].Source != store.SourceEscrowed || eks[0].EscrowedKeyID != k.ID || eks[0].KeyID != k.KeyID {
			t.Fatalf("holder's keys %+v, %v", eks, err)
		}
	})
}

func TestServerKeygenRetryMakesNewKey(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	j, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindServerKeygen, Holder: "alice", Agent: "ws-01", Profile: "enc", TokenSerial: "T1"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := e.st.GetEscrowedKeyOfAttempt(e.ctx, j.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.UpdateJobs(e.ctx, func(jt *service.JobTx) error {
		cur, err := jt.GetJob(e.ctx, j.ID)
		if err != nil {
			return err
		}
		_, err = jt.Transition(e.ctx, cur, jobs.StateFailed, store.JobChange{Actor: "agent:ws-01", Reason: "token removed",
			Error: &store.JobError{Code: "token.not_present", Message: "gone"}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.RetryJob(e.ctx, e.desk, j.ID, service.RetryRequest{}); err != nil {
		t.Fatal(err)
	}
	second, err := e.st.GetEscrowedKeyOfAttempt(e.ctx, j.ID, 2)
	if err != nil {
		t.Fatal(err)
	}
	if second.KeyID == first.KeyID || second.CertificateSerial == first.CertificateSerial {
		t.Fatal("the retry reused the first attempt's key")
	}
	if first, err = e.st.GetEscrowedKey(e.ctx, first.ID); err != nil || first.State != store.EscrowSuperseded {
		t.Fatalf("first attempt's archive %+v, %v", first, err)
	}
	if c, err := e.st.GetCertificate(e.ctx, first.CertificateSerial); err != nil || c.RevokedAt.IsZero() || c.RevocationReason != ca.ReasonSuperseded {
		t.Fatalf("first attempt's certificate %+v, %v", c, err)
	}
	env, d := e.dispatchOf(j.ID)
	if env.Attempt != 2 {
		t.Fatalf("newest dispatch is for attempt %d", env.Attempt)
	}
	e.openDispatchedKey(env, d)
}

func TestServerKeygenWithoutRecoveryCertificate(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), false)
	j, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "enc", TokenSerial: "T1"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.st.GetJob(e.ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != jobs.StateFailed || got.ErrorCode != string(dispatch.CodeNoRecoveryCertificate) ||
		!strings.Contains(got.ErrorMessage, "tokenfleetctl recovery-cert add") {
		t.Fatalf("job %s: %s, %s: %s", got.ID, got.State, got.ErrorCode, got.ErrorMessage)
	}
	if ks, err := e.st.ListEscrowedKeys(e.ctx, store.EscrowedKeyFilter{HolderID: e.alice.ID}); err != nil || len(ks) != 0 {
		t.Fatalf("escrowed keys %+v, %v", ks, err)
	}
	if cs, _, err := e.st.ListCertificates(e.ctx, store.CertificateFilter{HolderID: e.alice.ID}, store.Page{}); err != nil || len(cs) != 0 {
		t.Fatalf("a certificate was issued for a key archived for nobody: %+v, %v", cs, err)
	}
}

func TestServerKeygenKinds(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	for _, tc := range []struct {
		kind    jobs.Kind
		profile string
		want    string
	}{
		{jobs.KindRenew, "enc", "unescrowed key"},
		{jobs.KindCSR, "enc", "unescrowed key"},
		{jobs.KindServerKeygen, "plain", "key.origin: server"},
		{jobs.KindRecoverKey, "enc", "escrowed-keys"},
	} {
		_, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: tc.kind, Holder: "alice", Agent: "ws-01", Profile: tc.profile, TokenSerial: "T1"})
		if se := service.AsError(err); se == nil || se.Code != service.CodeBadRequest || !strings.Contains(se.Msg, tc.want) {
			t.Errorf("%s under %s: %v, want bad_request naming %q", tc.kind, tc.profile, err, tc.want)
		}
	}
}

// wantRefusal fails unless err is a service error with code (and, when given, a message
// containing msg).
func wantRefusal(t *testing.T, what string, err error, code service.Code, msg string) {
	t.Helper()
	se := service.AsError(err)
	if se == nil || se.Code != code || !strings.Contains(se.Error(), msg) {
		t.Fatalf("%s: %v, want %s with %q", what, err, code, msg)
	}
}

func TestRecoveryToToken(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		e := newEscrowEnv(t, cfg, true)
		_, k := e.issueEscrowed()
		kro1, kro2, kro3 := e.officers[0], e.officers[1], e.officers[2]

		// Only an active key, a named target, and a reason.
		_, err := e.s.RequestRecovery(e.ctx, e.desk, k.ID, service.RecoveryRequest{Target: store.RecoveryToToken, Agent: "ws-01", TokenSerial: "T2"})
		wantRefusal(t, "no reason", err, service.CodeBadRequest, "reason")
		_, err = e.s.RequestRecovery(e.ctx, e.alice2(), k.ID, service.RecoveryRequest{Target: store.RecoveryToToken, Agent: "ws-01", TokenSerial: "T2", Reason: "lost"})
		wantRefusal(t, "holder without a role", err, service.CodeForbidden, "request")

		rj, err := e.s.RequestRecovery(e.ctx, e.desk, k.ID, service.RecoveryRequest{Target: store.RecoveryToToken, Agent: "ws-01", TokenSerial: "T2",
			Reason: "token T1 lost on a train"})
		if err != nil {
			t.Fatal(err)
		}
		if rj.Kind != jobs.KindRecoverKey || rj.State != jobs.StatePendingApproval || rj.Required != 2 || rj.Approvals != 0 {
			t.Fatalf("recovery job %+v", rj)
		}
		// The officers are asked, not the organisation's approvers.
		e.wantNotified(notify.EventApprovalRequested, "kro1@acme.test", "kro2@acme.test", "kro3@acme.test")

		// Before the gate passed, the archive is not given out.
		_, err = e.s.RecoveryArchive(e.ctx, kro1, rj.ID)
		wantRefusal(t, "archive unapproved", err, service.CodeApprovalRequired, "0 of 2 approvals")
		_, err = e.s.Approve(e.ctx, e.desk, rj.ID, service.DecisionRequest{})
		wantRefusal(t, "requester approving", err, service.CodeSelfApproval, "requested")
		_, err = e.s.Approve(e.ctx, e.boss, rj.ID, service.DecisionRequest{})
		wantRefusal(t, "approver without the officer role", err, service.CodeRoleNotPermitted, "key_recovery_officer")
		if _, err := e.s.Approve(e.ctx, kro1, rj.ID, service.DecisionRequest{}); err != nil {
			t.Fatal(err)
		}
		_, err = e.s.RecoveryArchive(e.ctx, kro1, rj.ID)
		wantRefusal(t, "archive with one approval", err, service.CodeApprovalRequired, "1 of 2 approvals")
		_, err = e.s.RecoveryArchive(e.ctx, e.boss, rj.ID)
		wantRefusal(t, "archive to a non-officer", err, service.CodeForbidden, "recover_keys")
		if d, err := e.s.Approve(e.ctx, kro3, rj.ID, service.DecisionRequest{}); err != nil || d.State != jobs.StateApproved {
			t.Fatalf("second approval (an officer of no organisation: the gate is not scoped): %+v, %v", d.Job, err)
		}
		if d, err := e.s.GetJob(e.ctx, e.desk, rj.ID); err != nil || !strings.Contains(d.WaitingReason, "officer") {
			t.Fatalf("waiting reason %q, %v", d.WaitingReason, err)
		}

		// An officer opens the archive on their machine and seals the key to the agent.
		ra, err := e.s.RecoveryArchive(e.ctx, kro2, rj.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ra.Target != store.RecoveryToToken || ra.AgentID != "ws-01" || ra.TokenSerial != "T2" || ra.Attempt != 1 || ra.Purpose != protocol.PurposePrivateKey {
			t.Fatalf("archive view %+v", ra)
		}
		a, err := escrow.Unmarshal(ra.EscrowedKey.Archive)
		if err != nil {
			t.Fatal(err)
		}
		priv, err := escrow.Open(a, e.recovery)
		if err != nil {
			t.Fatal(err)
		}
		agentPub, err := seal.ParsePublicKey(ra.AgentSealKey)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		// The binding is the archive view's: job, attempt 1 and purpose private_key (above).
		sealed := e.sealedKey(agentPub, ra.JobID, der)
		_, err = e.s.DeliverRecovery(e.ctx, kro2, rj.ID, service.RecoveryDelivery{PKCS12: true})
		wantRefusal(t, "PKCS#12 for a token target", err, service.CodeBadRequest, "sealed")
		e.deliverOnce(kro2, kro2, rj.ID, sealed)

		// The recover_key dispatch carries the archived certificate, the sealed key and T2's PIN.
		env, d := e.dispatchOf(rj.ID)
		if d.Kind != jobs.KindRecoverKey || d.Token.Serial != "T2" || !bytes.Equal(d.Certificates.Certificate, a.Certificate) {
			t.Fatalf("dispatch %+v", d)
		}
		got := e.openDispatchedKey(env, d)
		if !publicEqual(t, got.Public(), priv.Public()) {
			t.Fatal("the dispatched key is not the archived one")
		}
		e.succeed(rj.ID)
		if k, err = e.st.GetEscrowedKey(e.ctx, k.ID); err != nil || k.RecoveredTo != "T2" || k.RecoveredJobID != rj.ID || k.TokenSerial != "T2" {
			t.Fatalf("after recovery %+v, %v", k, err)
		}
		e.wantAudit(audit.ActionKeyRecoveryRequested, audit.ActionKeyRecoveryOpened, audit.ActionKeyRecoveryDelivered)
	})
}

// alice2 is alice as an actor: a holder with no role.
func (e *escrowEnv) alice2() service.Actor { return service.ActorFor(e.alice) }

func (e *escrowEnv) wantAudit(actions ...string) {
	e.t.Helper()
	seen := map[string]bool{}
	page := store.Page{Limit: store.MaxPageLimit}
	for {
		es, next, err := e.st.ListAudit(e.ctx, store.AuditFilter{}, page)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, a := range es {
			seen[a.Action] = true
		}
		if next == "" {
			break
		}
		page.Cursor = next
	}
	for _, a := range actions {
		if !seen[a] {
			e.t.Errorf("no %s entry in the audit log", a)
		}
	}
}

func TestRecoveryToOfficer(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	_, k := e.issueEscrowed()
	rj, err := e.s.RequestRecovery(e.ctx, e.officers[0], k.ID, service.RecoveryRequest{Target: store.RecoveryToOfficer, Reason: "decrypt archived tenders"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.s.Approve(e.ctx, e.officers[0], rj.ID, service.DecisionRequest{})
	wantRefusal(t, "officer approving their own request", err, service.CodeSelfApproval, "requested")
	for _, o := range e.officers[1:] {
		if _, err := e.s.Approve(e.ctx, o, rj.ID, service.DecisionRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	ra, err := e.s.RecoveryArchive(e.ctx, e.officers[1], rj.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ra.Target != store.RecoveryToOfficer || ra.AgentSealKey != nil {
		t.Fatalf("archive view %+v", ra)
	}
	d, err := e.s.DeliverRecovery(e.ctx, e.officers[1], rj.ID, service.RecoveryDelivery{PKCS12: true})
	if err != nil {
		t.Fatal(err)
	}
	if d.State != jobs.StateSucceeded {
		t.Fatalf("job %s", d.State)
	}
	if k, err = e.st.GetEscrowedKey(e.ctx, k.ID); err != nil || k.RecoveredTo != store.RecoveredToOfficer || k.TokenSerial != "T1" {
		t.Fatalf("after recovery %+v, %v", k, err)
	}
}

func TestReplacementQueuesRecoveries(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	_, k := e.issueEscrowed()
	rep, err := e.s.RequestReplacement(e.ctx, e.desk, "T1", service.JobRequest{Holder: "alice", Agent: "ws-01", Profile: "plain", TokenSerial: "T3"})
	if err != nil {
		t.Fatal(err)
	}
	// The replacement's issue job succeeds, as the agent's reports and the CA would move it.
	e.moveThrough(rep.ID, jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate, jobs.StateInstalling, jobs.StateSucceeded)
	js, _, err := e.s.ListJobs(e.ctx, e.desk, service.JobQuery{Kind: jobs.KindRecoverKey}, service.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 1 || js[0].TokenSerial != "T3" || js[0].AgentID != "ws-01" || js[0].State != jobs.StatePendingApproval || js[0].Required != 2 {
		t.Fatalf("recovery jobs %+v", js)
	}
	kr, err := e.st.GetKeyRequest(e.ctx, js[0].ID)
	if err != nil || kr.EscrowedKeyID != k.ID || kr.Target != store.RecoveryToToken {
		t.Fatalf("key request %+v, %v", kr, err)
	}
	// Officers see it among what awaits them.
	if mine, _, err := e.s.ListJobs(e.ctx, e.officers[0], service.JobQuery{AwaitingMe: true}, service.Page{}); err != nil || len(mine) != 1 || mine[0].ID != js[0].ID {
		t.Fatalf("awaiting officer: %+v, %v", mine, err)
	}
}

func TestRegisterCertificate(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	_, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindRegisterCertificate, Holder: "alice", Agent: "ws-01", Profile: "plain", TokenSerial: "T1"})
	wantRefusal(t, "no CKA_ID", err, service.CodeBadRequest, "certificate_id")
	_, err = e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "plain", TokenSerial: "T1", CertificateID: "01"})
	wantRefusal(t, "CKA_ID on an issue", err, service.CodeBadRequest, "certificate_id")
	j := e.registerJob("alice")
	_, d := e.dispatchOf(j.ID)
	if d.Kind != jobs.KindRegisterCertificate || d.Key.ID != "a1b2" || d.Token.Serial != "T1" || d.PINs != nil || d.PrivateKey != nil {
		t.Fatalf("dispatch %+v", d)
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	year := time.Now().Add(365 * 24 * time.Hour)
	for _, tc := range []struct {
		name string
		der  []byte
		want string // "" for accepted
	}{
		{"garbage", []byte{0x30, 0x03, 0x02, 0x01, 0x01}, "does not parse"},
		{"nothing", nil, "no certificate"},
		{"expired", selfSigned(t, rsaKey, &rsaKey.PublicKey, "old", x509.KeyUsageKeyEncipherment, time.Now().Add(-time.Minute)), "expired"},
		{"RSA signing only", selfSigned(t, rsaKey, &rsaKey.PublicKey, "sig", x509.KeyUsageDigitalSignature, year), "keyEncipherment"},
		{"EC without keyAgreement", selfSigned(t, ecKey, &ecKey.PublicKey, "ec", x509.KeyUsageDigitalSignature, year), "keyAgreement"},
		{"Ed25519", selfSigned(t, edKey, edPub, "ed", x509.KeyUsageKeyAgreement, year), "only signs"},
		{"RSA encryption", e.issued(&rsaKey.PublicKey, "alice@acme.test", x509.KeyUsageKeyEncipherment|x509.KeyUsageDigitalSignature), ""},
		{"EC key agreement", e.issued(&ecKey.PublicKey, "alice@acme.test", x509.KeyUsageKeyAgreement), ""},
	} {
		// A refusal is returned for the dispatcher to fail the job with, in the same
		// transaction, which commits the refusal's audit entry.
		err := e.registerRead(j.ID, tc.der)
		var pe *protocol.Error
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (!errors.As(err, &pe) || pe.Code != protocol.CodePolicyViolation || !strings.Contains(pe.Message, tc.want)):
			t.Errorf("%s: %v, want policy_violation naming %q", tc.name, err, tc.want)
		}
		if tc.want == "" {
			break // one registration per job
		}
	}
	eks, err := e.st.ListHolderEncryptionKeys(e.ctx, e.alice.ID)
	if err != nil || len(eks) != 1 || eks[0].Source != store.SourceRegistered || eks[0].JobID != j.ID || eks[0].TokenSerial != "T1" {
		t.Fatalf("holder's keys %+v, %v", eks, err)
	}
	e.wantAudit(audit.ActionEncryptionKeyRefused, audit.ActionEncryptionKeyRecorded)
}

func TestServerKeygenCAOperatorGate(t *testing.T) {
	t.Parallel()
	e := newEscrowEnv(t, sqlite(t), true)
	j, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "enc-gated", TokenSerial: "T1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Approve(e.ctx, e.boss, j.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	// Approved, but no key or certificate is made before the CA operator says so.
	d, err := e.s.GetJob(e.ctx, e.desk, j.ID)
	if err != nil || d.State != jobs.StateApproved || !strings.Contains(d.WaitingReason, "CA operator") {
		t.Fatalf("job %s, waiting %q, %v", d.State, d.WaitingReason, err)
	}
	if ks, err := e.st.ListEscrowedKeys(e.ctx, store.EscrowedKeyFilter{HolderID: e.alice.ID}); err != nil || len(ks) != 0 {
		t.Fatalf("keys made before the CA operator approved: %+v, %v", ks, err)
	}
	e.wantNotified(notify.EventCAApprovalRequested, "cao@acme.test")
	cao := actorNamed(t, e.st, "cao")
	if mine, _, err := e.s.ListJobs(e.ctx, cao, service.JobQuery{AwaitingMe: true}, service.Page{}); err != nil || len(mine) != 1 || mine[0].ID != j.ID {
		t.Fatalf("awaiting the CA operator: %+v, %v", mine, err)
	}
	_, err = e.s.Approve(e.ctx, e.officers[0], j.ID, service.DecisionRequest{})
	wantRefusal(t, "an officer at the CA gate", err, service.CodeRoleNotPermitted, "ca_operator")
	if _, err := e.s.Approve(e.ctx, cao, j.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	env, disp := e.dispatchOf(j.ID)
	e.openDispatchedKey(env, disp)
}

// wantNotified checks who was sent e-mails of event.
func (e *escrowEnv) wantNotified(event notify.Event, to ...string) {
	e.t.Helper()
	ns, _, err := e.st.ListNotifications(e.ctx, store.NotificationFilter{Event: string(event), Channel: store.ChannelEmail}, store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		e.t.Fatal(err)
	}
	var got []string
	for _, n := range ns {
		if !slices.Contains(got, n.Recipient) {
			got = append(got, n.Recipient)
		}
	}
	slices.Sort(got)
	slices.Sort(to)
	if !slices.Equal(got, to) {
		e.t.Fatalf("%s: e-mails to %v, want %v", event, got, to)
	}
}
