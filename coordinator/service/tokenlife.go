package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

// CertificateHoldReleaser is an optional capability of the Issuer: lifting a
// certificateHold inside the transaction that audits it, with the CA's CRL updated.
type CertificateHoldReleaser interface {
	ReleaseCertificateHold(ctx context.Context, tx store.Tx, c store.Certificate) error
}

// TokenLife is a token's life-cycle record with its holder's username and its history.
type TokenLife struct {
	store.TokenLife
	Holder        string // username; "" when unknown
	ChangedByName string // username, or the actor as recorded when it is not a user
	History       []TokenLifeEvent
	// Temporary lists the temporary tokens standing in for this one, by serial.
	Temporary []store.TokenLife
}

// TokenLifeEvent is one change of a token's state with its actor's username.
type TokenLifeEvent struct {
	store.TokenLifeEvent
	ActorName string
}

// GetTokenLife returns where a token is in its life cycle (active when the help desk
// never moved it), with its history.
func (s *Service) GetTokenLife(ctx context.Context, by Actor, serial string) (TokenLife, error) {
	if _, err := s.canRead(ctx, by.user, resFleet); err != nil {
		return TokenLife{}, err
	}
	serial = strings.TrimSpace(serial)
	if err := checkTokenSerial("serial", serial); err != nil {
		return TokenLife{}, err
	}
	return s.tokenLifeView(ctx, serial)
}

// tokenLifeView is a token's record with its names, history and temporary tokens.
func (s *Service) tokenLifeView(ctx context.Context, serial string) (TokenLife, error) {
	l, err := tokenLifeOf(ctx, s.st, serial)
	if err != nil {
		return TokenLife{}, AsError(err)
	}
	names := newNames(s.st)
	out := TokenLife{TokenLife: l, Holder: names.user(ctx, l.HolderID), ChangedByName: names.user(ctx, l.ChangedBy)}
	es, err := s.st.ListTokenLifeEvents(ctx, serial)
	if err != nil {
		return TokenLife{}, AsError(err)
	}
	out.History = make([]TokenLifeEvent, len(es))
	for i, e := range es {
		out.History[i] = TokenLifeEvent{TokenLifeEvent: e, ActorName: names.user(ctx, e.Actor)}
	}
	if out.Temporary, err = s.st.ListTemporaryTokens(ctx, serial); err != nil {
		return TokenLife{}, AsError(err)
	}
	return out, nil
}

// tokenLifeOf reads a token's record; a token never moved is active at version 0.
func tokenLifeOf(ctx context.Context, r store.Reader, serial string) (store.TokenLife, error) {
	l, err := r.GetTokenLife(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		return store.TokenLife{Serial: serial, State: tokenlife.Active}, nil
	}
	return l, err
}

// TokenIssuable refuses, with CodeTokenNotActive, a job that would put a certificate on a
// token that is not active. It is the one check: at request time (CreateJob) and when the
// certificate is about to be signed (the dispatcher, for a token the agent picked).
func TokenIssuable(ctx context.Context, r store.Reader, serial string) error {
	if serial == "" {
		return nil
	}
	l, err := tokenLifeOf(ctx, r, serial)
	if err != nil {
		return err
	}
	return lifeErr("token_serial", tokenlife.Issuable(serial, l.State))
}

// tokenTakes refuses, with CodeTokenNotActive, a job of kind k on a token whose state
// does not take it (tokenlife.JobAllowed): the rule that also ends such jobs when the
// token leaves active (endTokenJobs).
func tokenTakes(ctx context.Context, r store.Reader, serial string, k jobs.Kind) error {
	if serial == "" {
		return nil
	}
	l, err := tokenLifeOf(ctx, r, serial)
	if err != nil {
		return err
	}
	return lifeErr("token_serial", tokenlife.JobAllowed(serial, l.State, k))
}

// CertificateValidityTemporary reports whether job's certificate is a temporary token's,
// which lives the profile's temporary validity.
func CertificateValidityTemporary(ctx context.Context, r store.Reader, jobID string) (bool, error) {
	req, err := r.GetTokenRequest(ctx, jobID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil && req.Purpose == store.PurposeTemporary, err
}

// CheckTokenRequest refuses to sign the certificate of a temporary token whose original
// is no longer suspended (it was reinstated or replaced meanwhile).
func CheckTokenRequest(ctx context.Context, r store.Reader, jobID string) error {
	req, err := r.GetTokenRequest(ctx, jobID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if req.Purpose != store.PurposeTemporary {
		return nil
	}
	l, err := tokenLifeOf(ctx, r, req.TokenSerial)
	if err != nil {
		return err
	}
	return lifeErr("token_serial", tokenlife.TemporaryAllowed(req.TokenSerial, l.State))
}

// lifeErr gives a tokenlife error its service code.
func lifeErr(field string, err error) error {
	var le *tokenlife.Error
	if !errors.As(err, &le) {
		return err
	}
	code := CodeBadRequest
	switch le.Code {
	case tokenlife.CodeIllegalTransition:
		code = CodeIllegalTransition
	case tokenlife.CodeNotActive:
		code = CodeTokenNotActive
	case tokenlife.CodeNotSuspended:
		code = CodeTokenNotSuspended
	}
	return &Error{Code: code, Field: field, Msg: le.Msg, Err: err}
}

// SetTokenState moves a token in its life cycle (manage_tokens, in the holder's
// organisation; or the token's own holder, to suspended or lost only) with a reason,
// audited: suspend, reinstate, lost, stolen, damaged,
// retire. What the move does to the token's certificates is tokenlife's table: a hold, a
// release, or a revocation, each in the CRL before this returns. replaced is reached
// through RequestReplacement only.
func (s *Service) SetTokenState(ctx context.Context, by Actor, serial string, to tokenlife.State, reason string) (TokenLife, error) {
	actor := by.user
	const op = "change token state"
	acc, err := accessOf(ctx, s.st, actor)
	if err != nil {
		return TokenLife{}, AsError(err)
	}
	// The holder of the token may report it suspended or lost themselves: judged in the
	// transaction, once the token's holder is known.
	selfReport := (to == tokenlife.Suspended || to == tokenlife.Lost) && !actor.Disabled
	if !acc.canAnywhere(jobs.PermManageTokens) && !selfReport {
		return TokenLife{}, s.deny(ctx, actor, op, "", "", acc.refusal(op, jobs.PermManageTokens, ""))
	}
	serial = strings.TrimSpace(serial)
	if err := checkTokenSerial("serial", serial); err != nil {
		return TokenLife{}, err
	}
	if !to.Valid() {
		return TokenLife{}, badRequest("state", "unknown token state %q (known: %v)", to, tokenlife.States())
	}
	if to == tokenlife.Replaced {
		return TokenLife{}, badRequest("state", "a token becomes replaced when its replacement is issued: request one (tokenfleetctl token replace)")
	}
	if strings.TrimSpace(reason) == "" {
		return TokenLife{}, newErr(CodeReasonRequired, "reason", "say why the token is %s (it goes into the audit log)", to)
	}
	if err := checkReason("reason", reason); err != nil {
		return TokenLife{}, err
	}
	err = s.update(ctx, func(t *txn) error {
		cur, holder, err := t.tokenOwner(ctx, serial)
		if err != nil {
			return err
		}
		if !acc.can(jobs.PermManageTokens, holder.OrganizationID) {
			refusal := acc.refusal(op, jobs.PermManageTokens, holder.OrganizationID)
			if selfReport && (holder.ID == actor.ID || !acc.canAnywhere(jobs.PermManageTokens)) {
				refusal = nil
				if mine, err := t.ownToken(ctx, serial, "", actor); err != nil {
					return err
				} else if mine != nil {
					mine.Msg += "; moving someone else's token needs the " + string(jobs.PermManageTokens) + " permission (help desk)"
					refusal = mine
				}
			}
			if refusal != nil {
				return t.refuse(ctx, actor, op, "", "token:"+serial, refusal)
			}
		}
		_, err = t.moveToken(ctx, cur, holder.ID, to, actor.ID, strings.TrimSpace(reason), "")
		return err
	})
	if err != nil {
		return TokenLife{}, err
	}
	return s.tokenLifeView(ctx, serial) // the mover sees the result, whether or not they read tokens
}

// tokenOwner reads a token's record and its holder (see tokenHolderID; zero when the
// token carries no certificate).
func (t *txn) tokenOwner(ctx context.Context, serial string) (store.TokenLife, store.User, error) {
	l, id, err := tokenHolderID(ctx, t, serial)
	if err != nil || id == "" {
		return l, store.User{}, err
	}
	u, err := t.GetUser(ctx, id)
	return l, u, err
}

// tokenHolderID reads a token's record and its holder's ID: the one recorded, else the
// holder of its newest certificate ("" when the token carries none).
func tokenHolderID(ctx context.Context, r store.Reader, serial string) (store.TokenLife, string, error) {
	l, err := tokenLifeOf(ctx, r, serial)
	if err != nil {
		return store.TokenLife{}, "", err
	}
	if l.HolderID != "" {
		return l, l.HolderID, nil
	}
	cs, _, err := r.ListCertificates(ctx, store.CertificateFilter{TokenSerial: serial}, store.Page{Limit: 1})
	if err != nil {
		return store.TokenLife{}, "", err
	}
	if len(cs) == 0 {
		return l, "", nil
	}
	return l, cs[0].HolderID, nil
}

// moveToken applies one transition of tokenlife's table: the effect on the token's
// certificates, the record with its history event, the end of the open jobs the new state
// does not take, the audit entry, and the end of the temporary tokens standing in for it
// when it is reinstated or replaced.
func (t *txn) moveToken(ctx context.Context, cur store.TokenLife, holderID string, to tokenlife.State, actor, reason, jobID string) (store.TokenLife, error) {
	tr, err := tokenlife.Check(cur.State, to)
	if err != nil {
		return store.TokenLife{}, lifeErr("state", err)
	}
	return t.applyTransition(ctx, cur, holderID, tr, actor, reason, jobID)
}

// applyTransition is moveToken for a transition already checked.
func (t *txn) applyTransition(ctx context.Context, cur store.TokenLife, holderID string, tr tokenlife.Transition, actor, reason, jobID string) (store.TokenLife, error) {
	to := tr.To
	changed, err := t.applyCertEffect(ctx, cur.Serial, tr, actor, reason, jobID)
	if err != nil {
		return store.TokenLife{}, err
	}
	next := cur
	next.State, next.Reason, next.ChangedBy, next.ChangedAt = to, reason, actor, t.now
	if next.HolderID == "" {
		next.HolderID = holderID
	}
	out, err := t.SetTokenLife(ctx, next, cur.Version, store.TokenLifeEvent{From: cur.State, JobID: jobID})
	if errors.Is(err, store.ErrConflict) {
		return store.TokenLife{}, retryable{err}
	}
	if err != nil {
		return store.TokenLife{}, err
	}
	ended, err := t.endTokenJobs(ctx, cur.Serial, to, actor, reason, jobID)
	if err != nil {
		return store.TokenLife{}, err
	}
	kv := []any{"from", string(cur.State), "to", string(to), "certificates", tr.Effect.String(), "crl_reason", tr.Reason, "changed", changed}
	if ended > 0 {
		kv = append(kv, "jobs_ended", ended)
	}
	if err := t.audit(ctx, audit.Entry{Actor: actor, Action: audit.ActionTokenStateChanged, JobID: jobID, Target: "token:" + cur.Serial,
		Reason: reason, Details: audit.Details(kv...)}); err != nil {
		return store.TokenLife{}, err
	}
	if (cur.State == tokenlife.Suspended && to == tokenlife.Active) || to == tokenlife.Replaced {
		if err := t.endTemporaries(ctx, cur.Serial, to, actor, jobID); err != nil {
			return store.TokenLife{}, err
		}
	}
	return out, nil
}

// endTokenJobs ends, in the transaction that moves the token, the open jobs naming it that
// a token in state to no longer takes (tokenlife.JobAllowed): cancelled through the normal
// transition, audited and their agents told, with a reason naming the new state. A job
// writing its certificate to the token (installing) can no longer be cancelled and fails
// instead, with the error code token_<state>. Jobs that pick their token themselves name
// none yet: they fail when their certificate would be signed (TokenIssuable).
func (t *txn) endTokenJobs(ctx context.Context, serial string, to tokenlife.State, actor, reason, jobID string) (int, error) {
	if to == tokenlife.Active {
		return 0, nil
	}
	var open []jobs.State
	for _, st := range jobs.States() {
		if !jobs.Terminal(st) {
			open = append(open, st)
		}
	}
	var end []store.Job
	page := store.Page{Limit: store.MaxPageLimit}
	for {
		js, next, err := t.ListJobs(ctx, store.JobFilter{TokenSerial: serial, States: open}, page)
		if err != nil {
			return 0, err
		}
		for _, j := range js {
			if j.ID != jobID && tokenlife.JobAllowed(serial, to, j.Kind) != nil {
				end = append(end, j)
			}
		}
		if next == "" {
			break
		}
		page.Cursor = next
	}
	why := fmt.Sprintf("token %s became %s", serial, to)
	if reason != "" {
		why += ": " + reason
	}
	for _, j := range end {
		c := store.JobChange{Actor: actor, Reason: why}
		target, action := jobs.StateCancelled, audit.ActionJobCancelled
		if jobs.CanTransitionKind(j.Kind, j.State, jobs.StateCancelled) != nil {
			target, action = jobs.StateFailed, audit.ActionJobTransition
			c.Error = &store.JobError{Code: "token_" + string(to), Message: why}
		}
		if _, err := t.transition(ctx, j, target, c, action); err != nil {
			return 0, fmt.Errorf("ending job %s on token %s: %w", j.ID, serial, err)
		}
	}
	return len(end), nil
}

// tokenWiped makes a found token, wiped by job j, a blank active token: its certificates
// stay revoked, its holder is forgotten (the next issue names one), and the crypto-device
// register shows its next issue as a new device. A wipe of a token in any other state
// moves nothing.
func (t *txn) tokenWiped(ctx context.Context, j store.Job) error {
	cur, err := tokenLifeOf(ctx, t, j.TokenSerial)
	if err != nil {
		return err
	}
	tr, ok := tokenlife.Wiped(cur.State)
	if !ok {
		return nil
	}
	cur.HolderID, cur.TemporaryFor = "", ""
	_, err = t.applyTransition(ctx, cur, "", tr, systemActor("tokenlife"), "wiped by job "+j.ID+" after it was found: a blank token again", j.ID)
	return err
}

// endTemporaries retires the temporary tokens standing in for original, whose holder has
// their own token back (reinstated) or a new one (replaced).
func (t *txn) endTemporaries(ctx context.Context, original string, to tokenlife.State, actor, jobID string) error {
	temps, err := t.ListTemporaryTokens(ctx, original)
	if err != nil {
		return err
	}
	why := "original token " + original + " reinstated"
	if to == tokenlife.Replaced {
		why = "original token " + original + " replaced"
	}
	for _, tmp := range temps {
		if !slices.Contains(tokenlife.Next(tmp.State), tokenlife.Retired) {
			continue // lost or stolen meanwhile: its certificates are revoked already
		}
		if _, err := t.moveToken(ctx, tmp, tmp.HolderID, tokenlife.Retired, actor, why, jobID); err != nil {
			return err
		}
	}
	return nil
}

// applyCertEffect holds, releases or revokes the token's certificates as tr says, each
// through the CA (its CRL updated) and audited; it returns how many changed.
func (t *txn) applyCertEffect(ctx context.Context, serial string, tr tokenlife.Transition, actor, reason, jobID string) (int, error) {
	if tr.Effect == tokenlife.Keep {
		return 0, nil
	}
	var certs []store.Certificate
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		cs, next, err := t.ListCertificates(ctx, store.CertificateFilter{TokenSerial: serial}, p)
		if err != nil {
			return 0, err
		}
		certs = append(certs, cs...)
		if next == "" {
			break
		}
		p.Cursor = next
	}
	n := 0
	for _, c := range certs {
		held := !c.RevokedAt.IsZero() && c.RevocationReason == ca.ReasonCertificateHold
		valid := c.RevokedAt.IsZero()
		var err error
		switch {
		case tr.Effect == tokenlife.Hold && valid, tr.Effect == tokenlife.Revoke && (valid || held):
			err = t.revokeForToken(ctx, c, tr.Reason, actor, reason, jobID)
		case tr.Effect == tokenlife.Release && held:
			err = t.releaseForToken(ctx, c, actor, reason, jobID)
		default:
			continue
		}
		if err != nil {
			return 0, err
		}
		n++
	}
	return n, nil
}

func (t *txn) revokeForToken(ctx context.Context, c store.Certificate, code int, actor, reason, jobID string) error {
	revoker, ok := t.s.issuer.(CertificateRevoker)
	if !ok {
		return newErr(CodeUnavailable, "", "this coordinator has no CA that revokes certificates: token %s's certificate %s cannot be revoked", c.TokenSerial, c.Serial)
	}
	if err := revoker.RevokeCertificate(ctx, t.Tx, c, code, t.now); err != nil {
		return fmt.Errorf("revoking %s: %w", c.Serial, err)
	}
	return t.audit(ctx, audit.Entry{Actor: actor, Action: audit.ActionCertificateRevoked, JobID: jobID,
		Target: "certificate:" + c.Serial, Reason: reason,
		Details: audit.Details("reason_code", code, "subject", c.Subject, "holder", c.HolderID, "token_serial", c.TokenSerial)})
}

func (t *txn) releaseForToken(ctx context.Context, c store.Certificate, actor, reason, jobID string) error {
	rel, ok := t.s.issuer.(CertificateHoldReleaser)
	if !ok {
		return newErr(CodeUnavailable, "", "this coordinator has no CA that lifts certificate holds: token %s's certificate %s stays on hold", c.TokenSerial, c.Serial)
	}
	if err := rel.ReleaseCertificateHold(ctx, t.Tx, c); err != nil {
		return fmt.Errorf("releasing the hold of %s: %w", c.Serial, err)
	}
	return t.audit(ctx, audit.Entry{Actor: actor, Action: audit.ActionCertificateHoldReleased, JobID: jobID,
		Target: "certificate:" + c.Serial, Reason: reason,
		Details: audit.Details("subject", c.Subject, "holder", c.HolderID, "token_serial", c.TokenSerial)})
}

// RequestTemporaryToken queues an issue job for a temporary token (the request and
// manage_tokens permissions) standing in for original, which must be suspended; r names the holder,
// agent, profile and the new token as for CreateJob. The profile must allow temporary
// tokens (temporary.validity), which sets the certificate's lifetime. When the job
// succeeds, the new token is recorded as original's temporary token; it is retired, its
// certificates revoked, when original is reinstated or replaced.
func (s *Service) RequestTemporaryToken(ctx context.Context, by Actor, original string, r JobRequest) (Job, error) {
	return s.requestForToken(ctx, by, store.PurposeTemporary, original, r)
}

// RequestReplacement queues an issue job for a token replacing old (the request and
// manage_tokens permissions):
// r names the holder, agent, profile and the new token as for CreateJob. When the job
// succeeds, old becomes replaced and its certificates are revoked (superseded), the
// temporary tokens standing in for it end, and a recover_key job is queued for each of
// the old token's active escrowed keys, targeting the new token (reinstallEscrowedKeys).
func (s *Service) RequestReplacement(ctx context.Context, by Actor, old string, r JobRequest) (Job, error) {
	return s.requestForToken(ctx, by, store.PurposeReplacement, old, r)
}

func (s *Service) requestForToken(ctx context.Context, by Actor, purpose store.TokenPurpose, serial string, r JobRequest) (Job, error) {
	// Besides the request permission the job needs (CreateJob checks it): its success
	// moves tokens (a replacement revokes the old token's certificates).
	op := "request a " + string(purpose) + " token"
	acc, err := s.authorizeAnywhere(ctx, by.user, op, jobs.PermManageTokens)
	if err != nil {
		return Job{}, err
	}
	serial = strings.TrimSpace(serial)
	if err := checkTokenSerial("serial", serial); err != nil {
		return Job{}, err
	}
	if r.Kind == "" {
		r.Kind = jobs.KindIssue
	}
	if r.Kind != jobs.KindIssue {
		return Job{}, badRequest("kind", "a %s token is made by an issue job, not %s", purpose, r.Kind)
	}
	if strings.TrimSpace(r.TokenSerial) == serial {
		return Job{}, badRequest("token_serial", "the new token must be another token than %s", serial)
	}
	if r.IdempotencyKey != "" {
		return Job{}, badRequest("idempotency_key", "not taken for %s requests", purpose)
	}
	check := func(ctx context.Context, t *txn, c jobCore) error {
		if !acc.can(jobs.PermManageTokens, c.Holder.OrganizationID) {
			return acc.refusal(op, jobs.PermManageTokens, c.Holder.OrganizationID)
		}
		l, err := tokenLifeOf(ctx, t, serial)
		if err != nil {
			return err
		}
		switch purpose {
		case store.PurposeTemporary:
			if err := lifeErr("serial", tokenlife.TemporaryAllowed(serial, l.State)); err != nil {
				return err
			}
			if c.Parsed.Temporary == nil {
				return badRequest("profile", "profile %s issues no temporary tokens: give it temporary: {validity: 7d}, or use a profile that has it", c.Profile.Name)
			}
		case store.PurposeReplacement:
			if err := lifeErr("serial", tokenlife.ReplaceAllowed(serial, l.State)); err != nil {
				return err
			}
		}
		_, holder, err := t.tokenOwner(ctx, serial)
		if err != nil {
			return err
		}
		if holder.ID != "" && holder.ID != c.Holder.ID {
			return newErr(CodeNotHoldersToken, "holder", "token %s is %s's, not %s's: a %s goes to the token's holder", serial, holder.Username, c.Holder.Username, purpose)
		}
		return nil
	}
	after := func(ctx context.Context, t *txn, j store.Job) error {
		if err := t.AddTokenRequest(ctx, store.TokenRequest{JobID: j.ID, Purpose: purpose, TokenSerial: serial}); err != nil {
			return err
		}
		kv := []any{"purpose", string(purpose), "new_token", j.TokenSerial}
		if purpose == store.PurposeReplacement {
			// Said now, so that the help desk knows the officers will be asked once the
			// new token is issued (reinstallEscrowedKeys).
			ks, err := t.ListEscrowedKeys(ctx, store.EscrowedKeyFilter{TokenSerial: serial, States: []store.EscrowedKeyState{store.EscrowActive}})
			if err != nil {
				return err
			}
			if len(ks) > 0 {
				kv = append(kv, "escrowed_keys_to_reinstall", len(ks), "recovery_approvals", t.s.recoveryN)
			}
		}
		return t.audit(ctx, audit.Entry{Actor: j.RequesterID, Action: audit.ActionTokenRequested, JobID: j.ID, Target: "token:" + serial,
			Details: audit.Details(kv...)})
	}
	return s.queueJob(ctx, by, r, check, after)
}

// tokenJobSucceeded applies what a temporary or replacement job's success means for the
// tokens involved, and a wipe's for a found token; other jobs are left alone.
func (t *txn) tokenJobSucceeded(ctx context.Context, j store.Job) error {
	if j.Kind == jobs.KindWipe && j.TokenSerial != "" {
		return t.tokenWiped(ctx, j)
	}
	req, err := t.GetTokenRequest(ctx, j.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if j.TokenSerial == "" {
		return fmt.Errorf("job %s succeeded without a token serial", j.ID)
	}
	actor := systemActor("tokenlife")
	switch req.Purpose {
	case store.PurposeTemporary:
		cur, err := tokenLifeOf(ctx, t, j.TokenSerial)
		if err != nil {
			return err
		}
		next := cur
		next.State, next.HolderID, next.TemporaryFor = tokenlife.Active, j.HolderID, req.TokenSerial
		next.Reason, next.ChangedBy, next.ChangedAt = "temporary token for suspended token "+req.TokenSerial, actor, t.now
		temp, err := t.SetTokenLife(ctx, next, cur.Version, store.TokenLifeEvent{From: cur.State, JobID: j.ID})
		if err != nil {
			return err
		}
		if err := t.audit(ctx, audit.Entry{Actor: actor, Action: audit.ActionTokenStateChanged, JobID: j.ID, Target: "token:" + j.TokenSerial,
			Reason: next.Reason, Details: audit.Details("from", string(cur.State), "to", string(tokenlife.Active), "temporary_for", req.TokenSerial)}); err != nil {
			return err
		}
		orig, err := tokenLifeOf(ctx, t, req.TokenSerial)
		if err != nil {
			return err
		}
		if orig.State != tokenlife.Suspended {
			// The original came back (or was replaced) after the certificate was signed:
			// the stand-in is not needed, and ends at once like the others.
			_, err = t.moveToken(ctx, temp, j.HolderID, tokenlife.Retired, actor,
				"original token "+req.TokenSerial+" is "+string(orig.State)+": the temporary token is not needed", j.ID)
		}
		return err
	case store.PurposeReplacement:
		old, err := tokenLifeOf(ctx, t, req.TokenSerial)
		if err != nil {
			return err
		}
		if !slices.Contains(tokenlife.Next(old.State), tokenlife.Replaced) {
			// Another replacement came first, or the token was retired meanwhile: the new
			// token stands; the old one's record says what happened to it.
			t.s.log.Warn().Str("job", j.ID).Str("token", req.TokenSerial).Str("state", string(old.State)).
				Msg("replacement succeeded but the old token can no longer become replaced")
			return nil
		}
		old.ReplacedBy = j.TokenSerial
		if _, err := t.moveToken(ctx, old, j.HolderID, tokenlife.Replaced, actor, "replaced by token "+j.TokenSerial, j.ID); err != nil {
			return err
		}
		return t.reinstallEscrowedKeys(ctx, req.TokenSerial, j)
	}
	return nil
}
