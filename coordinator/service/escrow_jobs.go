package service

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/escrow"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// DefaultRecoveryApprovals is how many key-recovery officers approve a recovery when the
// configuration says nothing; at least 1 may be configured.
const DefaultRecoveryApprovals = 2

// DefaultRecoveryExpiry is the life of a recovery request and of each approval when the
// key's profile gives no approval expiry.
const DefaultRecoveryExpiry = 7 * 24 * time.Hour

// recoveryApproval is the gate of a recover_key job: N approvals by key-recovery officers
// of any organisation (never the requester or the holder, jobs.Decide), expiring as the
// key's profile says. It replaces the profile's own gate, which governs issuing.
func (s *Service) recoveryApproval(a profile.Approval) profile.Approval {
	exp := a.ExpiresAfter
	if exp <= 0 {
		exp = profile.Duration(DefaultRecoveryExpiry)
	}
	return profile.Approval{Required: s.recoveryN, Roles: []jobs.Role{jobs.RoleKeyRecoveryOfficer}, Scope: jobs.ScopeAny, ExpiresAfter: exp}
}

// escrowKind gives the kind a request becomes under its profile: an issue under a profile
// whose key the coordinator makes (key.origin: server) is a server_keygen job; the kinds
// that would make a key on the token, or that need one made there, are refused under it,
// and server_keygen under a profile that makes keys on the token.
func escrowKind(k jobs.Kind, p profile.Profile) (jobs.Kind, error) {
	server := p.Key.Origin == profile.OriginServer
	switch {
	case server && (k == jobs.KindIssue || k == jobs.KindServerKeygen):
		return jobs.KindServerKeygen, nil
	case server && (k == jobs.KindCSR || k == jobs.KindRenew || k == jobs.KindInstallCertificate):
		return "", badRequest("kind", "profile %s makes escrowed keys on the coordinator (key.origin: server): a %s job would make an unescrowed key on the token; queue an issue (server_keygen) job instead", p.Name, k)
	case !server && k == jobs.KindServerKeygen:
		return "", badRequest("kind", "profile %s makes keys on the token: a server_keygen job needs a profile with key.origin: server and key.escrow: true", p.Name)
	case k == jobs.KindRecoverKey:
		return "", badRequest("kind", "a recover_key job is queued for an escrowed key: POST /api/v1/escrowed-keys/{id}/recover (tokenfleetctl escrow recover)")
	}
	return k, nil
}

// ---- what jobs of the escrowed kinds do when they end ----

// escrowJobEnded applies a server_keygen, recover_key or register_certificate job's end to
// the escrowed keys and the holder's encryption keys, in the transition's transaction.
func (t *txn) escrowJobEnded(ctx context.Context, j store.Job) error {
	switch {
	case j.Kind == jobs.KindServerKeygen && j.State == jobs.StateSucceeded:
		k, err := t.GetEscrowedKeyOfAttempt(ctx, j.ID, j.Attempt)
		if err != nil {
			return fmt.Errorf("escrowed key of job %s attempt %d: %w", j.ID, j.Attempt, err)
		}
		if k.TokenSerial == "" && j.TokenSerial != "" {
			if err := t.SetEscrowedKeyToken(ctx, k.ID, j.TokenSerial); err != nil {
				return err
			}
		}
		if _, err := t.SetEscrowedKeyState(ctx, k.ID, store.EscrowPending, store.EscrowActive, "job "+j.ID+" succeeded", t.now); err != nil {
			return err
		}
		a, err := escrow.Unmarshal(k.Archive)
		if err != nil {
			return err
		}
		return t.recordEncryptionKey(ctx, j, store.HolderEncryptionKey{HolderID: j.HolderID, KeyID: k.KeyID, PublicKey: a.PublicKey,
			Certificate: a.Certificate, CertificateSerial: k.CertificateSerial, TokenSerial: j.TokenSerial, Source: store.SourceEscrowed,
			JobID: j.ID, EscrowedKeyID: k.ID})
	case j.Kind == jobs.KindServerKeygen && jobs.Terminal(j.State) && j.State != jobs.StateFailed:
		// Ended without the key reaching the token for good (cancelled, expired,
		// superseded, rejected): its archive is not the holder's key.
		k, err := t.GetEscrowedKeyOfAttempt(ctx, j.ID, j.Attempt)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		if k.State != store.EscrowPending {
			return nil
		}
		_, err = t.SetEscrowedKeyState(ctx, k.ID, store.EscrowPending, store.EscrowSuperseded, "job "+j.ID+" "+string(j.State), t.now)
		return err
	case j.Kind == jobs.KindRecoverKey && j.State == jobs.StateSucceeded:
		kr, err := t.GetKeyRequest(ctx, j.ID)
		if err != nil {
			return err
		}
		to := store.RecoveredToOfficer
		if kr.Target == store.RecoveryToToken {
			to = j.TokenSerial
		}
		k, err := t.RecordEscrowedKeyRecovery(ctx, kr.EscrowedKeyID, j.ID, to, t.now)
		if err != nil {
			return err
		}
		if kr.Target != store.RecoveryToToken {
			return nil
		}
		a, err := escrow.Unmarshal(k.Archive)
		if err != nil {
			return err
		}
		return t.recordEncryptionKey(ctx, j, store.HolderEncryptionKey{HolderID: k.HolderID, KeyID: k.KeyID, PublicKey: a.PublicKey,
			Certificate: a.Certificate, CertificateSerial: k.CertificateSerial, TokenSerial: j.TokenSerial, Source: store.SourceEscrowed,
			JobID: j.ID, EscrowedKeyID: k.ID})
	}
	return nil
}

func (t *txn) recordEncryptionKey(ctx context.Context, j store.Job, k store.HolderEncryptionKey) error {
	k.Created = t.now
	rec, err := t.AddHolderEncryptionKey(ctx, k)
	if err != nil {
		return err
	}
	return t.audit(ctx, audit.Entry{Actor: systemActor("escrow"), Action: audit.ActionEncryptionKeyRecorded, JobID: j.ID, Target: "user:" + k.HolderID,
		Details: audit.Details("source", string(k.Source), "key_id", k.KeyID, "certificate", k.CertificateSerial, "token_serial", k.TokenSerial, "id", rec.ID)})
}

// ---- registering an existing certificate ----

// RegisterCertificate is the success of a register_certificate job, in the dispatcher's
// transaction: the certificate the agent read (DER) must parse, be valid now, be for
// an encryption key (keyEncipherment or dataEncipherment for RSA, keyAgreement for EC; not
// an Ed25519 key, which only signs), be issued by a trusted issuer and name the holder's
// e-mail address or UPN, and is then recorded as the holder's encryption key. The agent is not
// trusted for what it read: a compromised workstation could answer with a certificate of
// a key it holds, and everyone encrypting to the holder would encrypt to it. A refusal is a *protocol.Error (policy_violation) for the caller to fail the job
// with; it is audited here.
func (jt *JobTx) RegisterCertificate(ctx context.Context, j store.Job, der []byte, tokenSerial string) error {
	t := jt.t
	holder, err := t.GetUser(ctx, j.HolderID)
	if err != nil {
		return err
	}
	c, why := checkEncryptionCertificate(der, t.now)
	if why == "" {
		why = t.s.checkCertificateNamesHolder(c, holder, t.now)
	}
	if why != "" {
		if err := t.audit(ctx, audit.Entry{Actor: systemActor("escrow"), Action: audit.ActionEncryptionKeyRefused, JobID: j.ID,
			Target: "user:" + j.HolderID, Reason: why, Details: audit.Details("token_serial", tokenSerial)}); err != nil {
			return err
		}
		return protocol.NewError(protocol.CodePolicyViolation, "the certificate read cannot be registered as an encryption key: %s", why)
	}
	pub, err := x509.MarshalPKIXPublicKey(c.PublicKey)
	if err != nil {
		return err
	}
	return t.recordEncryptionKey(ctx, j, store.HolderEncryptionKey{HolderID: j.HolderID, KeyID: protocol.KeyFingerprint(pub), PublicKey: pub,
		Certificate: c.Raw, CertificateSerial: fmt.Sprintf("%x", c.SerialNumber), TokenSerial: tokenSerial, Source: store.SourceRegistered, JobID: j.ID})
}

// checkCertificateNamesHolder says why c, read from a token by an agent, is not the
// holder's: it must be issued by one of the encryption issuers (the coordinator's CA or a
// configured escrow.trusted_issuers certificate) and carry the holder's e-mail address or
// UPN as a subject alternative name (compared without regard to case); "" when it is. The approver approved a CKA_ID, not a
// certificate: these checks are what ties what was read to the person.
func (s *Service) checkCertificateNamesHolder(c *x509.Certificate, holder store.User, now time.Time) string {
	roots := x509.NewCertPool()
	if s.encIssuers != nil {
		for _, ic := range s.encIssuers() {
			roots.AddCert(ic)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Sprintf("it is not issued by a trusted issuer (the coordinator's CA or escrow.trusted_issuers; issuer %q): %v", c.Issuer.String(), err)
	}
	if holder.Email == "" && holder.UPN == "" {
		return fmt.Sprintf("holder %s has neither an e-mail address nor a UPN to match the certificate's names: set one (tokenfleetctl user update %s --email ...) and register again", holder.Username, holder.Username)
	}
	upns := ca.UPNs(c)
	for _, m := range c.EmailAddresses {
		if holder.Email != "" && strings.EqualFold(m, holder.Email) {
			return ""
		}
	}
	for _, u := range upns {
		if holder.UPN != "" && strings.EqualFold(u, holder.UPN) {
			return ""
		}
	}
	var want []string
	if holder.Email != "" {
		want = append(want, "e-mail address "+holder.Email)
	}
	if holder.UPN != "" {
		want = append(want, "UPN "+holder.UPN)
	}
	return fmt.Sprintf("it names %s, not the holder's %s: a certificate of another person is not the holder's encryption key",
		orNone(append(slices.Clone(c.EmailAddresses), upns...)), strings.Join(want, " or "))
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "no e-mail address or UPN"
	}
	return strings.Join(names, ", ")
}

// checkEncryptionCertificate says why der is not a certificate others can encrypt to now;
// "" when it is.
func checkEncryptionCertificate(der []byte, now time.Time) (*x509.Certificate, string) {
	if len(der) == 0 {
		return nil, "the agent sent no certificate"
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Sprintf("it does not parse: %v", err)
	}
	switch {
	case now.Before(c.NotBefore):
		return nil, fmt.Sprintf("it is not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
	case !now.Before(c.NotAfter):
		return nil, fmt.Sprintf("it expired on %s", c.NotAfter.UTC().Format(time.RFC3339))
	}
	ku := c.KeyUsage
	switch c.PublicKey.(type) {
	case *rsa.PublicKey:
		if ku != 0 && ku&(x509.KeyUsageKeyEncipherment|x509.KeyUsageDataEncipherment) == 0 {
			return nil, "its RSA key may not be used for encryption: its key usage has neither keyEncipherment nor dataEncipherment"
		}
	case *ecdsa.PublicKey:
		if ku != 0 && ku&x509.KeyUsageKeyAgreement == 0 {
			return nil, "its EC key may not be used for encryption: its key usage has no keyAgreement"
		}
	case ed25519.PublicKey:
		return nil, "its key is Ed25519, which only signs"
	default:
		return nil, fmt.Sprintf("its key (%T) cannot be encrypted to", c.PublicKey)
	}
	if ku == 0 {
		return nil, "it has no key usage extension: an encryption certificate must say keyEncipherment, dataEncipherment (RSA) or keyAgreement (EC)"
	}
	return c, ""
}

// ---- recovery ----

// RecoveryRequest asks for an escrowed key to be recovered.
type RecoveryRequest struct {
	// Target is store.RecoveryToToken (Agent and TokenSerial name the token to install
	// the key on, normally a replacement of the lost one) or store.RecoveryToOfficer (a
	// password-protected PKCS#12 an officer writes on their own machine).
	Target      string
	Agent       string
	TokenSerial string
	Reason      string // required: said to the officers and kept in the audit log
}

// EscrowedKey is an escrowed key as people see it (never the archive's contents).
type EscrowedKey struct {
	store.EscrowedKey
	Holder string // username
}

// ListEscrowedKeys lists the escrowed keys of a holder or a token (read permission on the
// holder's organisation).
func (s *Service) ListEscrowedKeys(ctx context.Context, by Actor, holder, tokenSerial string) ([]EscrowedKey, error) {
	sc, err := s.canRead(ctx, by.user, resJobs)
	if err != nil {
		return nil, err
	}
	f := store.EscrowedKeyFilter{TokenSerial: strings.TrimSpace(tokenSerial)}
	if holder = strings.TrimSpace(holder); holder != "" {
		if f.HolderID, err = s.userID(ctx, "holder", holder); err != nil {
			return nil, err
		}
	}
	if f.HolderID == "" && f.TokenSerial == "" {
		return nil, badRequest("holder", "name a holder or a token serial")
	}
	ks, err := s.st.ListEscrowedKeys(ctx, f)
	if err != nil {
		return nil, AsError(err)
	}
	names := newNames(s.st)
	out := make([]EscrowedKey, 0, len(ks))
	for _, k := range ks {
		u, err := s.st.GetUser(ctx, k.HolderID)
		if err != nil || !sc.covers(u.OrganizationID) {
			continue
		}
		k.Archive = nil
		out = append(out, EscrowedKey{EscrowedKey: k, Holder: names.user(ctx, k.HolderID)})
	}
	return out, nil
}

// RequestRecovery queues a recover_key job for an active escrowed key (the request
// permission for its holder's organisation, or recover_keys). The job waits for the
// recovery gate's approvals by key-recovery officers, then for an officer to open the
// archive (RecoveryArchive) and deliver the key (DeliverRecovery).
func (s *Service) RequestRecovery(ctx context.Context, by Actor, keyID string, r RecoveryRequest) (Job, error) {
	actor := by.user
	const op = "request key recovery"
	acc, err := accessOf(ctx, s.st, actor)
	if err != nil {
		return Job{}, AsError(err)
	}
	if !acc.canAnywhere(jobs.PermRequest) && !acc.canAnywhere(jobs.PermRecoverKeys) {
		return Job{}, s.deny(ctx, actor, op, "", "escrowed-key:"+keyID, acc.refusal(op, jobs.PermRequest, ""))
	}
	reason, err := requiredReason("reason", r.Reason)
	if err != nil {
		return Job{}, err
	}
	r.Agent, r.TokenSerial = strings.TrimSpace(r.Agent), strings.TrimSpace(r.TokenSerial)
	switch r.Target {
	case store.RecoveryToToken:
		if r.Agent == "" || r.TokenSerial == "" {
			return Job{}, badRequest("token_serial", "a recovery to a token names the agent and the token serial to install the key on")
		}
		if err := protocol.ValidateAgentID(r.Agent); err != nil {
			return Job{}, badRequest("agent", "%v", err)
		}
		if err := checkTokenSerial("token_serial", r.TokenSerial); err != nil {
			return Job{}, err
		}
	case store.RecoveryToOfficer:
		if r.Agent != "" || r.TokenSerial != "" {
			return Job{}, badRequest("target", "a recovery to an officer's PKCS#12 names no agent or token")
		}
	default:
		return Job{}, badRequest("target", "%q: want %q (install on a token) or %q (a PKCS#12 for an officer)", r.Target, store.RecoveryToToken, store.RecoveryToOfficer)
	}
	var out store.Job
	err = s.update(ctx, func(t *txn) error {
		k, err := t.GetEscrowedKey(ctx, keyID)
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeNotFound, "", "no escrowed key %q", keyID)
		} else if err != nil {
			return err
		}
		holder, err := t.GetUser(ctx, k.HolderID)
		if err != nil {
			return err
		}
		if !acc.can(jobs.PermRequest, holder.OrganizationID) && !acc.can(jobs.PermRecoverKeys, holder.OrganizationID) {
			return t.refuse(ctx, actor, op, "", "escrowed-key:"+k.ID, acc.refusal(op, jobs.PermRequest, holder.OrganizationID))
		}
		out, err = t.queueRecovery(ctx, actor.ID, k, holder, r.Target, r.Agent, r.TokenSerial, reason)
		return err
	})
	if err != nil {
		return Job{}, err
	}
	return s.jobView(ctx, s.st, newNames(s.st), out)
}

// queueRecovery creates a recover_key job for k, pending the recovery gate.
func (t *txn) queueRecovery(ctx context.Context, actorID string, k store.EscrowedKey, holder store.User, target, agentID, serial, reason string) (store.Job, error) {
	if k.State != store.EscrowActive {
		return store.Job{}, newErr(CodeConflict, "", "escrowed key %s is %s: only a key that reached its holder's token (active) is recovered", k.ID, k.State)
	}
	src, err := t.GetJob(ctx, k.JobID)
	if err != nil {
		return store.Job{}, err
	}
	sp, err := t.GetProfile(ctx, src.ProfileName)
	if errors.Is(err, store.ErrNotFound) {
		return store.Job{}, newErr(CodeConflict, "", "profile %s of escrowed key %s is gone: apply it again to recover the key", src.ProfileName, k.ID)
	} else if err != nil {
		return store.Job{}, err
	}
	p, err := t.s.profiles.parse(sp)
	if err != nil {
		return store.Job{}, internal(err)
	}
	if holder.Disabled {
		return store.Job{}, badRequest("holder", "user %q is disabled", holder.Username)
	}
	var agentKey []byte
	if target == store.RecoveryToToken {
		a, err := t.GetAgent(ctx, agentID)
		if errors.Is(err, store.ErrNotFound) {
			return store.Job{}, badRequest("agent", "agent %q is not enrolled", agentID)
		} else if err != nil {
			return store.Job{}, err
		}
		if len(a.PublicKey) == 0 {
			return store.Job{}, newErr(CodeConflict, "agent", "agent %s has not said hello yet: its seal key, which the officers approve the key being sealed to, is unknown; request the recovery once it is online", a.ID)
		}
		agentKey = a.PublicKey
		if err := t.tokenReady(ctx, JobRequest{Kind: jobs.KindRecoverKey, TokenSerial: serial}, p, holder); err != nil {
			return store.Job{}, err
		}
	}
	p.Approval = t.s.recoveryApproval(p.Approval)
	policy := p.Approval.Policy()
	binding := recoveryBinding(holder.ID, sp.Name, sp.ContentHash, k, target, agentID, serial, agentKey)
	j, err := t.CreateJob(ctx, store.Job{Kind: jobs.KindRecoverKey, State: jobs.StatePendingApproval, HolderID: holder.ID,
		ProfileName: sp.Name, ProfileHash: sp.ContentHash, AgentID: agentID, TokenSerial: serial, RequesterID: actorID,
		OrganizationID: holder.OrganizationID, BindingHash: binding, Deadline: t.now.Add(policy.ExpiresAfter), Created: t.now})
	if err != nil {
		return store.Job{}, err
	}
	if err := t.AddKeyRequest(ctx, store.KeyRequest{JobID: j.ID, EscrowedKeyID: k.ID, Target: target}); err != nil {
		return store.Job{}, err
	}
	if err := t.audit(ctx, audit.Entry{Actor: actorID, Action: audit.ActionJobCreated, JobID: j.ID, Target: "user:" + holder.ID,
		Details: audit.Details("kind", string(j.Kind), "holder", holder.Username, "profile", sp.Name, "profile_hash", sp.ContentHash,
			"agent", agentID, "token_serial", serial, "binding_hash", binding, "deadline", j.Deadline.Format(time.RFC3339))}); err != nil {
		return store.Job{}, err
	}
	if err := t.audit(ctx, audit.Entry{Actor: actorID, Action: audit.ActionKeyRecoveryRequested, JobID: j.ID, Target: "escrowed-key:" + k.ID,
		Reason: reason, Details: audit.Details("target", target, "agent", agentID, "token_serial", serial, "key_id", k.KeyID,
			"approvals_required", policy.Required, "from_token", k.TokenSerial)}); err != nil {
		return store.Job{}, err
	}
	return j, t.notifyApprovalRequested(ctx, j, p)
}

// recoveryBinding is the hash the officers approve for a recovery: the escrowed key, the
// target and, for a token target, the agent, the token and the agent's seal key as it was
// when the recovery was requested, so that an agent whose key changed since (reset and
// enrolled again, perhaps by another machine) does not inherit the approvals.
func recoveryBinding(holderID, profileName, profileHash string, k store.EscrowedKey, target, agentID, serial string, agentKey []byte) string {
	params := map[string]string{"target": target, "escrowed_key": k.ID}
	if target == store.RecoveryToToken {
		params["agent_seal_key"] = protocol.KeyFingerprint(agentKey)
	}
	return jobs.BindingHash(jobs.Binding{Kind: jobs.KindRecoverKey, HolderID: holderID, ProfileName: profileName, ProfileHash: profileHash,
		Subject: "escrowed-key:" + k.ID + ":" + k.KeyID, TargetAgentID: agentID, TokenSerial: serial, Params: params})
}

// RecoveryArchive is what an officer needs to open an approved recovery on their own
// machine: the archive, and for a token target the agent's seal key and the binding the
// key must be sealed with. The coordinator never sees the opened key.
type RecoveryArchive struct {
	JobID   string
	Attempt int
	Target  string
	Holder  string // username
	// EscrowedKey is the key's record (Archive holds the archive's JSON form).
	EscrowedKey store.EscrowedKey
	// AgentID, TokenSerial and AgentSealKey (PKIX DER X25519) are the target's, for a
	// token target; Purpose is the sealing purpose (protocol.PurposePrivateKey).
	AgentID      string
	TokenSerial  string
	AgentSealKey []byte
	Purpose      protocol.SealPurpose
	Approvals    int
	Required     int
}

// recoveryJob reads a recover_key job for an officer (recover_keys), refusing it until its
// gate has passed (conflict, saying how many approvals it has of how many).
func (t *txn) recoveryJob(ctx context.Context, actor store.User, op, jobID string) (store.Job, store.KeyRequest, jobs.Outcome, error) {
	acc, err := accessOf(ctx, t, actor)
	if err != nil {
		return store.Job{}, store.KeyRequest{}, jobs.Outcome{}, err
	}
	j, err := t.GetJob(ctx, jobID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && j.Kind != jobs.KindRecoverKey) {
		return store.Job{}, store.KeyRequest{}, jobs.Outcome{}, newErr(CodeNotFound, "", "no recovery job %q", jobID)
	} else if err != nil {
		return store.Job{}, store.KeyRequest{}, jobs.Outcome{}, err
	}
	if !acc.can(jobs.PermRecoverKeys, j.OrganizationID) {
		return store.Job{}, store.KeyRequest{}, jobs.Outcome{}, t.refuse(ctx, actor, op, j.ID, "", acc.refusal(op, jobs.PermRecoverKeys, j.OrganizationID))
	}
	if actor.ID == j.HolderID {
		// The holder never approves their key's recovery (jobs.Decide), nor takes it out:
		// an officer holding a recovery key would otherwise hold their own key in clear.
		return store.Job{}, store.KeyRequest{}, jobs.Outcome{}, t.refuse(ctx, actor, op, j.ID, "", newErr(CodeSelfApproval, "",
			"%s is the holder of the key recovery job %s recovers: another key-recovery officer opens it", actor.Username, j.ID))
	}
	p, _, err := t.s.profileOfJob(ctx, t, j)
	if err != nil {
		return store.Job{}, store.KeyRequest{}, jobs.Outcome{}, internal(err)
	}
	approvals, err := t.ListApprovals(ctx, j.ID)
	if err != nil {
		return store.Job{}, store.KeyRequest{}, jobs.Outcome{}, err
	}
	o, err := jobs.Evaluate(p.Approval.Policy(), j.Rules(j.OrganizationID, approvals), t.now)
	if err != nil {
		return store.Job{}, store.KeyRequest{}, jobs.Outcome{}, err
	}
	switch {
	case j.State == jobs.StatePendingApproval:
		return store.Job{}, store.KeyRequest{}, o, t.refuse(ctx, actor, op, j.ID, "", newErr(CodeApprovalRequired, "",
			"recovery job %s is not approved: %d of %d approvals by key-recovery officers", j.ID, o.Approvals, o.Required))
	case j.State != jobs.StateApproved:
		return store.Job{}, store.KeyRequest{}, o, t.refuse(ctx, actor, op, j.ID, "", newErr(CodeConflict, "",
			"recovery job %s is %s: only an approved recovery is opened", j.ID, j.State))
	case o.Status != jobs.StatusApproved:
		return store.Job{}, store.KeyRequest{}, o, t.refuse(ctx, actor, op, j.ID, "", newErr(CodeApprovalRequired, "",
			"recovery job %s: its approvals lapsed (%d of %d valid)", j.ID, o.Approvals, o.Required))
	}
	kr, err := t.GetKeyRequest(ctx, j.ID)
	if err != nil {
		return store.Job{}, store.KeyRequest{}, o, err
	}
	if kr.Target == store.RecoveryToToken {
		if err := t.recoveryTargetUnchanged(ctx, actor, op, j, kr); err != nil || t.refusal != nil {
			return store.Job{}, store.KeyRequest{}, o, err
		}
	}
	return j, kr, o, nil
}

// recoveryTargetUnchanged refuses an approved recovery to a token whose agent's seal key
// is not the one the officers approved (recoveryBinding).
func (t *txn) recoveryTargetUnchanged(ctx context.Context, actor store.User, op string, j store.Job, kr store.KeyRequest) error {
	a, err := t.GetAgent(ctx, j.AgentID)
	if err != nil {
		return err
	}
	k, err := t.GetEscrowedKey(ctx, kr.EscrowedKeyID)
	if err != nil {
		return err
	}
	if recoveryBinding(j.HolderID, j.ProfileName, j.ProfileHash, k, kr.Target, j.AgentID, j.TokenSerial, a.PublicKey) == j.BindingHash {
		return nil
	}
	return t.refuse(ctx, actor, op, j.ID, "", newErr(CodeBindingMismatch, "",
		"agent %s's seal key (%s) is not the one the officers approved sealing the key to: the agent was reset or enrolled again since; cancel recovery job %s and request it again",
		a.ID, protocol.KeyFingerprint(a.PublicKey), j.ID))
}

// RecoveryArchive gives an officer (recover_keys) the archive of an approved recovery job,
// audited; before the gate passed it is refused (approval_required: "1 of 2 approvals").
func (s *Service) RecoveryArchive(ctx context.Context, by Actor, jobID string) (RecoveryArchive, error) {
	actor := by.user
	var out RecoveryArchive
	err := s.update(ctx, func(t *txn) error {
		j, kr, o, err := t.recoveryJob(ctx, actor, "open key recovery", jobID)
		if err != nil || t.refusal != nil {
			return err
		}
		k, err := t.GetEscrowedKey(ctx, kr.EscrowedKeyID)
		if err != nil {
			return err
		}
		out = RecoveryArchive{JobID: j.ID, Attempt: j.Attempt, Target: kr.Target, EscrowedKey: k, Purpose: protocol.PurposePrivateKey,
			Approvals: o.Approvals, Required: o.Required, Holder: newNames(t).user(ctx, k.HolderID)}
		if kr.Target == store.RecoveryToToken {
			a, err := t.GetAgent(ctx, j.AgentID)
			if err != nil {
				return err
			}
			if len(a.PublicKey) == 0 {
				return newErr(CodeConflict, "", "agent %s has not said hello yet: its seal key, which the key is sealed to, is unknown; open the recovery once it is online", a.ID)
			}
			out.AgentID, out.TokenSerial, out.AgentSealKey = a.ID, j.TokenSerial, a.PublicKey
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionKeyRecoveryOpened, JobID: j.ID, Target: "escrowed-key:" + k.ID,
			Details: audit.Details("attempt", j.Attempt, "target", kr.Target, "approvals", o.Approvals, "required", o.Required, "approvers", t.approverNames(ctx, j))})
	})
	return out, err
}

// approverNames lists who approved j (valid or not), for the audit entries of a recovery.
func (t *txn) approverNames(ctx context.Context, j store.Job) string {
	as, err := t.ListApprovals(ctx, j.ID)
	if err != nil {
		return ""
	}
	names := newNames(t)
	var out []string
	for _, a := range as {
		if a.Verdict == jobs.VerdictApprove && a.BoundHash == j.BindingHash {
			out = append(out, names.user(ctx, a.ApproverID))
		}
	}
	return strings.Join(out, ",")
}

// RecoveryDelivery is what an officer's tool sends after opening the archive: the key
// sealed to the target agent (a token target), or word that the officer wrote the PKCS#12
// (an officer target).
type RecoveryDelivery struct {
	PrivateKey *protocol.Sealed
	PKCS12     bool
}

// DeliverRecovery takes an officer's delivery for an approved recovery job (recover_keys).
// A key sealed to the target agent for the job's attempt is kept, sealed, and the job's
// dispatch goes out with it; a PKCS#12 delivered to the officer ends the job. Audited
// with the approvals.
func (s *Service) DeliverRecovery(ctx context.Context, by Actor, jobID string, d RecoveryDelivery) (JobDetail, error) {
	actor := by.user
	const op = "deliver key recovery"
	var out store.Job
	err := s.update(ctx, func(t *txn) error {
		j, kr, o, err := t.recoveryJob(ctx, actor, op, jobID)
		if err != nil || t.refusal != nil {
			return err
		}
		out = j
		var sealed []byte
		switch {
		case kr.Target == store.RecoveryToToken && d.PrivateKey == nil:
			return badRequest("private_key", "a recovery to token %s takes the key sealed to agent %s (tokenfleetctl recovery open %s --recovery-key KEY.pem)", j.TokenSerial, j.AgentID, j.ID)
		case kr.Target == store.RecoveryToToken && d.PKCS12:
			return badRequest("pkcs12", "job %s installs the key on token %s: it is not delivered as a PKCS#12", j.ID, j.TokenSerial)
		case kr.Target == store.RecoveryToOfficer && (!d.PKCS12 || d.PrivateKey != nil):
			return badRequest("pkcs12", "job %s delivers the key to an officer as a PKCS#12: send pkcs12 true, and no sealed key", j.ID)
		case kr.Target == store.RecoveryToToken:
			if err := d.PrivateKey.ValidateFor(protocol.PurposePrivateKey); err != nil {
				return badRequest("private_key", "%v", err)
			}
			a, err := t.GetAgent(ctx, j.AgentID)
			if err != nil {
				return err
			}
			if want := protocol.KeyFingerprint(a.PublicKey); d.PrivateKey.KeyID != want {
				return badRequest("private_key", "sealed to key %s, and agent %s's seal key is %s: open the recovery again", d.PrivateKey.KeyID, a.ID, want)
			}
			if sealed, err = json.Marshal(d.PrivateKey); err != nil {
				return err
			}
		}
		if _, err := t.SetKeyDelivery(ctx, j.ID, j.Attempt, sealed, actor.ID, t.now); errors.Is(err, store.ErrConflict) {
			return newErr(CodeConflict, "", "attempt %d of recovery job %s was delivered already", j.Attempt, j.ID)
		} else if err != nil {
			return err
		}
		if err := t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionKeyRecoveryDelivered, JobID: j.ID, Target: "escrowed-key:" + kr.EscrowedKeyID,
			Details: audit.Details("attempt", j.Attempt, "target", kr.Target, "agent", j.AgentID, "token_serial", j.TokenSerial,
				"approvals", o.Approvals, "required", o.Required, "approvers", t.approverNames(ctx, j))}); err != nil {
			return err
		}
		t.jobsChanged(j.ID)
		if kr.Target == store.RecoveryToToken {
			// The dispatch can be built now: the dispatcher writes it in this transaction.
			return t.s.disp.JobApproved(ctx, &JobTx{Tx: t.Tx, t: t}, j)
		}
		who := "officer " + actor.Username
		j, err = t.transition(ctx, j, jobs.StateRunning, store.JobChange{Actor: actor.ID, Reason: who + " opened the archive on their own machine"}, "")
		if err != nil {
			return err
		}
		out, err = t.transition(ctx, j, jobs.StateSucceeded, store.JobChange{Actor: actor.ID,
			Reason: "the key was delivered to " + who + " as a password-protected PKCS#12", Error: &store.JobError{}}, "")
		return err
	})
	if err != nil {
		return JobDetail{}, err
	}
	if out, err = s.st.GetJob(ctx, jobID); err != nil {
		return JobDetail{}, AsError(err)
	}
	return s.jobDetail(ctx, out)
}

// reinstallEscrowedKeys queues, when a replacement succeeded, a recovery of each active
// escrowed key of the old token onto the new one. Each waits for the officers' approvals
// like any recovery; the replacement's requester is its requester.
func (t *txn) reinstallEscrowedKeys(ctx context.Context, oldSerial string, replacement store.Job) error {
	ks, err := t.ListEscrowedKeys(ctx, store.EscrowedKeyFilter{TokenSerial: oldSerial, States: []store.EscrowedKeyState{store.EscrowActive}})
	if err != nil || len(ks) == 0 {
		return err
	}
	holder, err := t.GetUser(ctx, replacement.HolderID)
	if err != nil {
		return err
	}
	var ids []string
	for _, k := range ks {
		if k.HolderID != holder.ID {
			continue
		}
		j, err := t.queueRecovery(ctx, replacement.RequesterID, k, holder, store.RecoveryToToken, replacement.AgentID, replacement.TokenSerial,
			"token "+oldSerial+" replaced by "+replacement.TokenSerial+" (job "+replacement.ID+"): re-install its escrowed key")
		if err != nil {
			return fmt.Errorf("recovery of escrowed key %s: %w", k.ID, err)
		}
		ids = append(ids, j.ID)
	}
	if len(ids) == 0 {
		return nil
	}
	return t.audit(ctx, audit.Entry{Actor: systemActor("tokenlife"), Action: audit.ActionKeyRecoveryRequested, JobID: replacement.ID, Target: "token:" + replacement.TokenSerial,
		Reason:  fmt.Sprintf("%d escrowed key(s) of token %s queued for re-installation; each waits for %d key-recovery officers' approvals", len(ids), oldSerial, t.s.recoveryN),
		Details: audit.Details("recovery_jobs", strings.Join(ids, ","), "old_token", oldSerial)})
}
