package dispatch

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/escrow"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/ra"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// CodeNoRecoveryCertificate fails a server_keygen job when no recovery certificate is in
// use: its key would be archived for nobody. The fix is `tokenfleetctl recovery-cert add`.
const CodeNoRecoveryCertificate protocol.ErrorCode = "no_recovery_certificate"

// ActorEscrow is the key escrow in timelines and the audit log.
const ActorEscrow = "system:escrow"

// serverKeygen builds a server_keygen dispatch: the coordinator makes the key pair the
// profile asks for, has its certificate issued under the same rules as an issue job's,
// archives the private key to every recovery certificate in use, and seals it to the
// agent for this attempt. Archive and certificate are written in the dispatch's
// transaction, so that a key the agent is sent is always one the officers can recover.
// The plaintext key exists only in memory, while this runs.
func (b *builder) serverKeygen(ctx context.Context) error {
	kt, err := keyType(b.p.Key)
	if err != nil {
		return failf(protocol.CodePolicyViolation, "%v", err)
	}
	if b.p.Key.Origin != profile.OriginServer || !b.p.Key.Escrow {
		return failf(protocol.CodePolicyViolation, "profile %s does not make an escrowed server key (key.origin: server, key.escrow: true)", b.p.Name)
	}
	if err := b.chooseToken(ctx, false); err != nil {
		return err
	}
	if err := b.needSerial("import the key onto it"); err != nil {
		return err
	}
	// Everything that may make the job wait comes before the key is made.
	if err := b.pins(ctx, store.PINPurposeUser); err != nil {
		return err
	}
	if b.p.Approval.CAOperatorRequired {
		if err := b.caOperatorApproved(ctx); err != nil {
			return err
		}
	}
	recipients, kids, err := b.recoveryKeys(ctx)
	if err != nil {
		return err
	}
	if b.jt == nil {
		return errors.New("dispatch: a server_keygen dispatch is built in a job transaction")
	}
	to, err := seal.ParsePublicKey(b.agent.PublicKey)
	if err != nil {
		return failf(protocol.CodeUnsealFailed, "agent %s's recorded seal key is unusable (tokenfleetctl agent reset-key %s): %v", b.agent.ID, b.agent.ID, err)
	}
	if err := b.d.supersedeEscrow(ctx, b.jt, b.job); err != nil {
		return err
	}
	priv, err := generateKey(b.p.Key)
	if err != nil {
		return failf(protocol.CodePolicyViolation, "%v", err)
	}
	j := b.job
	j.TokenSerial = b.serial // the certificate's record names the token
	cert, err := b.d.sign(ctx, b.jt, j, b.p, &ra.CheckedCSR{JobID: j.ID, Attempt: j.Attempt, Profile: b.p.Name,
		PublicKey: priv.Public(), KeyType: kt})
	var r *refusedError
	if errors.As(err, &r) {
		code, msg := refusalOf(r.err)
		return failf(code, "the certificate cannot be issued: %s", msg)
	}
	if err != nil {
		return err
	}
	archive, err := escrow.Seal(priv, cert, recipients)
	if err != nil {
		return failf(protocol.CodeInternal, "the key cannot be archived: %v", err)
	}
	data, err := archive.Marshal()
	if err != nil {
		return err
	}
	serial := ca.FormatSerial(cert.SerialNumber)
	k, err := b.jt.AddEscrowedKey(ctx, store.EscrowedKey{JobID: j.ID, Attempt: j.Attempt, HolderID: j.HolderID, TokenSerial: b.serial,
		KeyID: archive.KeyID(), CertificateSerial: serial, Archive: data, State: store.EscrowPending, Created: b.d.clock()})
	if err != nil {
		return err
	}
	if err := b.jt.Audit(ctx, audit.Entry{Actor: ActorEscrow, Action: audit.ActionKeyEscrowed, JobID: j.ID, Target: "escrowed-key:" + k.ID,
		Details: audit.Details("attempt", j.Attempt, "key_id", k.KeyID, "certificate", serial, "key_type", string(kt),
			"recovery_keys", strings.Join(kids, ","), "token_serial", b.serial)}); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	defer clear(der)
	sealed, err := seal.Seal(to, der, seal.Binding{JobID: j.ID, Attempt: uint32(j.Attempt), Purpose: protocol.PurposePrivateKey})
	if err != nil {
		return failf(protocol.CodeUnsealFailed, "the key cannot be sealed to agent %s: %v", b.agent.ID, err)
	}
	b.out.Key = &protocol.KeyParams{Type: kt, ID: protocol.DeriveKeyID(j.ID)}
	b.out.Certificates = &protocol.CertificateChain{Certificate: cert.Raw, Chain: b.d.chain()}
	b.out.PrivateKey = sealed
	b.d.log.Info().Str("job", j.ID).Int("attempt", j.Attempt).Str("key_id", k.KeyID).Str("certificate", serial).
		Int("recovery_keys", len(kids)).Msg("server key made, archived and sealed to the agent")
	return nil
}

// chain is the issuing CA's certificate and its issuers, as a dispatch carries them.
func (d *Dispatcher) chain() [][]byte {
	out := make([][]byte, 0, 2)
	for _, c := range d.ca.CACertificates() {
		out = append(out, c.Raw)
	}
	return out
}

// recoveryKeys returns the public keys of the recovery certificates in use and not
// expired, with their key ids; none fails the job, naming the fix.
func (b *builder) recoveryKeys(ctx context.Context) ([]crypto.PublicKey, []string, error) {
	rcs, err := b.r.ListRecoveryCertificates(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	now := b.d.clock()
	var (
		pubs []crypto.PublicKey
		kids []string
	)
	for _, rc := range rcs {
		if !now.Before(rc.NotAfter) {
			continue
		}
		c, err := x509.ParseCertificate(rc.DER)
		if err != nil {
			return nil, nil, fmt.Errorf("dispatch: recovery certificate %s: %w", rc.ID, err)
		}
		pubs, kids = append(pubs, c.PublicKey), append(kids, rc.KeyID)
	}
	if len(pubs) == 0 {
		return nil, nil, failf(CodeNoRecoveryCertificate,
			"no recovery certificate is in use (or all have expired), so the key would be archived for nobody: add one with tokenfleetctl recovery-cert add, then retry the job")
	}
	return pubs, kids, nil
}

// caOperatorApproved makes a server_keygen job of a profile with the CA-operator gate wait
// until a CA operator approved this attempt: its certificate is signed when its dispatch
// is built.
func (b *builder) caOperatorApproved(ctx context.Context) error {
	as, err := b.r.ListApprovals(ctx, b.job.ID)
	if err != nil {
		return err
	}
	for _, a := range as {
		if a.Gate == jobs.GateCAOperator && a.Attempt == b.job.Attempt && a.BoundHash == b.job.BindingHash {
			if a.Verdict == jobs.VerdictApprove {
				return nil
			}
		}
	}
	return waitf("the CA operator has not approved attempt %d yet: its certificate is signed, and its key made, once one does", b.job.Attempt)
}

// supersedeEscrow ends the archives of the job's earlier attempts that never reached the
// token: the coordinator cannot open them to send the same key again, so each attempt
// makes a new key, and the old one's certificate is revoked (superseded).
func (d *Dispatcher) supersedeEscrow(ctx context.Context, jt *service.JobTx, j store.Job) error {
	ks, err := jt.ListEscrowedKeys(ctx, store.EscrowedKeyFilter{HolderID: j.HolderID, States: []store.EscrowedKeyState{store.EscrowPending}})
	if err != nil {
		return err
	}
	for _, k := range ks {
		if k.JobID != j.ID || k.Attempt >= j.Attempt {
			continue
		}
		reason := fmt.Sprintf("attempt %d of job %s makes a new key", j.Attempt, j.ID)
		if _, err := jt.SetEscrowedKeyState(ctx, k.ID, store.EscrowPending, store.EscrowSuperseded, reason, d.clock()); err != nil {
			return err
		}
		if k.CertificateSerial != "" {
			c, err := jt.GetCertificate(ctx, k.CertificateSerial)
			if err != nil {
				return err
			}
			if c.RevokedAt.IsZero() {
				if err := d.RevokeCertificate(ctx, jt, c, ca.ReasonSuperseded, d.clock()); err != nil {
					return err
				}
				if err := jt.Audit(ctx, audit.Entry{Actor: ActorEscrow, Action: audit.ActionCertificateRevoked, JobID: j.ID,
					Target: "certificate:" + c.Serial, Reason: reason, Details: audit.Details("reason", "superseded")}); err != nil {
					return err
				}
			}
		}
		if err := jt.Audit(ctx, audit.Entry{Actor: ActorEscrow, Action: audit.ActionKeySuperseded, JobID: j.ID, Target: "escrowed-key:" + k.ID,
			Reason: reason, Details: audit.Details("attempt", k.Attempt, "key_id", k.KeyID, "certificate", k.CertificateSerial)}); err != nil {
			return err
		}
	}
	return nil
}

// generateKey makes the key pair a profile's key spec names, with crypto/rand.
func generateKey(k profile.KeySpec) (crypto.Signer, error) {
	switch {
	case k.Type == profile.KeyRSA && k.Size >= 2048:
		return rsa.GenerateKey(rand.Reader, k.Size)
	case k.Type == profile.KeyEC && k.Curve == "P-256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case k.Type == profile.KeyEC && k.Curve == "P-384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	return nil, fmt.Errorf("the profile's key %s cannot be made by the coordinator (RSA of 2048 bits or more, EC P-256 or P-384)", k)
}

// recoverKey builds a recover_key dispatch once a key-recovery officer delivered the
// archived key, opened on their machine and sealed to this agent for this attempt: the
// coordinator passes on what it cannot read, with the archived certificate and the
// token's user PIN.
func (b *builder) recoverKey(ctx context.Context) error {
	kr, err := b.r.GetKeyRequest(ctx, b.job.ID)
	if err != nil {
		return err
	}
	if kr.Target != store.RecoveryToToken {
		return waitf("a key-recovery officer delivers this key as a PKCS#12 file (tokenfleetctl recovery open %s --pkcs12 FILE)", b.job.ID)
	}
	if kr.DeliveredAttempt != b.job.Attempt || len(kr.DeliveredKey) == 0 {
		return waitf("waits for a key-recovery officer to open the archive and seal the key to agent %s (tokenfleetctl recovery open %s --recovery-key KEY.pem)", b.job.AgentID, b.job.ID)
	}
	ek, err := b.r.GetEscrowedKey(ctx, kr.EscrowedKeyID)
	if err != nil {
		return err
	}
	archive, err := escrow.Unmarshal(ek.Archive)
	if err != nil {
		return failf(protocol.CodeInternal, "escrowed key %s: %v", ek.ID, err)
	}
	cert, err := x509.ParseCertificate(archive.Certificate)
	if err != nil {
		return failf(protocol.CodeInternal, "escrowed key %s has no usable certificate: %v", ek.ID, err)
	}
	kt, err := protocol.KeyTypeOf(cert.PublicKey)
	if err != nil {
		return failf(protocol.CodePolicyViolation, "escrowed key %s: %v", ek.ID, err)
	}
	if err := b.chooseToken(ctx, false); err != nil {
		return err
	}
	if err := b.needSerial("import the key onto it"); err != nil {
		return err
	}
	if err := b.pins(ctx, store.PINPurposeUser); err != nil {
		return err
	}
	var sealed protocol.Sealed
	if err := json.Unmarshal(kr.DeliveredKey, &sealed); err != nil {
		return failf(protocol.CodeInternal, "the delivered key of job %s: %v", b.job.ID, err)
	}
	if want := protocol.KeyFingerprint(b.agent.PublicKey); sealed.KeyID != want {
		return failf(protocol.CodeUnsealFailed, "the officer sealed the key to agent key %s, and agent %s's key is %s now: retry the job and open the archive again",
			sealed.KeyID, b.agent.ID, want)
	}
	b.out.Key = &protocol.KeyParams{Type: kt, ID: protocol.DeriveKeyID(b.job.ID)}
	b.out.Certificates = &protocol.CertificateChain{Certificate: cert.Raw, Chain: b.d.chain()}
	b.out.PrivateKey = &sealed
	return nil
}

// registerCertificate builds a register_certificate dispatch: read the certificate with
// the requested CKA_ID from the named token. Reading needs no PIN.
func (b *builder) registerCertificate(ctx context.Context) error {
	kr, err := b.r.GetKeyRequest(ctx, b.job.ID)
	if err != nil {
		return err
	}
	if err := b.chooseToken(ctx, false); err != nil {
		return err
	}
	if err := b.needSerial("read the certificate from it"); err != nil {
		return err
	}
	b.out.Key = &protocol.KeyParams{ID: kr.CKAID}
	return nil
}
