package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// DefaultJobDeadline is the deadline of a job whose profile needs no approval (and so
// has no request expiry) when the request gives none.
const DefaultJobDeadline = 14 * 24 * time.Hour

// MaxJobDeadline bounds how far ahead a request may set its deadline.
const MaxJobDeadline = 366 * 24 * time.Hour

var tokenSerialRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// checkTokenSerial refuses a token serial the fleet could not have reported.
func checkTokenSerial(field, serial string) error {
	if !tokenSerialRE.MatchString(serial) {
		return badRequest(field, "%q: use 1 to 64 letters, digits and . _ : -", serial)
	}
	return nil
}

// JobRequest is a request to queue a job.
type JobRequest struct {
	Kind        jobs.Kind
	Holder      string // username
	Agent       string // target agent ID
	Profile     string
	TokenSerial string    // "" means any token the profile allows
	Deadline    time.Time // zero: the profile's request expiry from now
	// IdempotencyKey, when set, names this request: the same key and request from the same
	// requester again returns the job created the first time (Job.Replayed), and the key
	// with another request is refused. Keys are kept as long as their job.
	IdempotencyKey string
	// Document is the document the issuance is based on (number and YYYY-MM-DD date), for
	// the crypto-device register: required by a profile with register.document: required
	// for an issue, refused by a profile that records none.
	Document store.Document
	// CertificateID (register_certificate only) is the CKA_ID, in hex, of the certificate
	// on the holder's token (TokenSerial) to register as their encryption key.
	CertificateID string
}

// Job is a stored job with the names the API shows and its approval progress.
type Job struct {
	store.Job
	Holder       string // username
	Requester    string // username
	Organization string // name
	Approvals    int    // valid request-gate approvals
	Required     int    // approvals the profile requires
	// Replayed: CreateJob found the job its idempotency key had created, and created
	// nothing.
	Replayed bool
}

// JobDetail is a job with its decisions, timeline and steps.
type JobDetail struct {
	Job
	Decisions []DecisionView
	Timeline  []Event
	Steps     []store.JobStep
	// WaitingReason says why an approved job is not sent to its agent yet.
	WaitingReason string
	// AgentResult is what the agent said of the current attempt's end, once it did
	// (after a cancel too: the help desk sees that the agent stopped).
	AgentResult string
	// Subject and SANs are the names the profile gives the holder now (empty when the
	// job has no holder or the holder's record no longer renders).
	Subject string
	SANs    []string
	// TokenURI is the PKCS#11 URI of the job's token; "" when the job names none.
	TokenURI string
	// AgentHostname, AgentOnline and AgentLastSeen are the job's agent's host and presence
	// (LastSeen zero: it never connected).
	AgentHostname string
	AgentOnline   bool
	AgentLastSeen time.Time
	// PINRevealed is when the user PIN this job set was shown (zero: not yet, or the job
	// set none), so that a page offers the one reveal only while it can succeed.
	PINRevealed time.Time
	// Recovery is what a recover_key job recovers and where to; nil for other kinds.
	Recovery *JobRecovery
}

// JobRecovery is a recover_key job's escrowed key and target.
type JobRecovery struct {
	EscrowedKeyID     string
	KeyID             string // fingerprint of the escrowed public key
	CertificateSerial string
	Target            string    // store.RecoveryToToken or store.RecoveryToOfficer
	Delivered         time.Time // when an officer delivered the key (zero: not yet)
	DeliveredBy       string    // username
}

// DecisionView is one recorded decision.
type DecisionView struct {
	Gate     jobs.Gate
	Approver string // username
	Verdict  jobs.Verdict
	Reason   string
	At       time.Time
	Valid    bool // still counts: bound to the job as it is, not lapsed, of this attempt
}

// Event is one transition of a job's timeline.
type Event struct {
	store.JobEvent
	ActorName string // username, or the actor as recorded when it is not a user
}

func (r *JobRequest) validate(now time.Time) error {
	switch {
	case r.Kind == "":
		return badRequest("kind", "is required")
	case !jobs.KnownKind(r.Kind):
		return badRequest("kind", "unknown kind %q (known: %v)", r.Kind, jobs.Kinds())
	case !jobs.OnAgent(r.Kind):
		return badRequest("kind", "%s runs on the coordinator and is not queued for an agent", r.Kind)
	case r.Holder == "":
		return badRequest("holder", "is required")
	case r.Profile == "":
		return badRequest("profile", "is required")
	case r.Agent == "":
		return badRequest("agent", "is required")
	}
	if err := protocol.ValidateAgentID(r.Agent); err != nil {
		return badRequest("agent", "%v", err)
	}
	if r.TokenSerial != "" {
		if err := checkTokenSerial("token_serial", r.TokenSerial); err != nil {
			return err
		}
	}
	if err := validateDocument(r.Document, now); err != nil {
		return err
	}
	switch {
	case r.Kind == jobs.KindRegisterCertificate && r.TokenSerial == "":
		return badRequest("token_serial", "a register_certificate job reads the certificate from the holder's token: name it")
	case r.Kind == jobs.KindRegisterCertificate && r.CertificateID == "":
		return badRequest("certificate_id", "is required: the CKA_ID (hex) of the certificate to register (pkcs11-tool --list-objects shows it as ID)")
	case r.Kind != jobs.KindRegisterCertificate && r.CertificateID != "":
		return badRequest("certificate_id", "only a register_certificate job names a certificate")
	}
	if r.CertificateID != "" {
		if err := (protocol.KeyParams{ID: r.CertificateID}).Validate(false); err != nil {
			return badRequest("certificate_id", "%v", err)
		}
	}
	if !r.Deadline.IsZero() {
		switch {
		case !r.Deadline.After(now):
			return badRequest("deadline", "%s is not in the future", r.Deadline.UTC().Format(time.RFC3339))
		case r.Deadline.Sub(now) > MaxJobDeadline:
			return badRequest("deadline", "%s is more than %s ahead", r.Deadline.UTC().Format(time.RFC3339), profile.Duration(MaxJobDeadline))
		}
	}
	return nil
}

// holderOf gives the profile package's view of a user.
func holderOf(u store.User, orgName string) profile.Holder {
	return profile.Holder{ID: u.Username, Name: u.DisplayName, Email: u.Email, UPN: u.UPN, Organization: orgName, Attributes: u.Attributes}
}

// jobCore is a job to create, its holder and profile looked up: what CreateJob and the
// rollout engine both create jobs from.
type jobCore struct {
	Kind        jobs.Kind
	Holder      store.User
	Profile     store.Profile // the current version
	Parsed      profile.Profile
	AgentID     string
	TokenSerial string
	Deadline    time.Time // zero: the profile's request expiry from now, or DefaultJobDeadline
	RequesterID string
	// IdempotencyKey and RequestHash: CreateJob's key, "" for none.
	IdempotencyKey, RequestHash string
	// Rollout is the rollout creating the job ("" for none): the job passes its request
	// gate by the rollout's approval, bound to RolloutBinding.
	Rollout        store.Rollout
	RolloutBinding string
	// Document is the document the request cites (zero for none), checked against the
	// profile by documentAllowed.
	Document store.Document
	// CertificateID is a register_certificate job's CKA_ID ("" for other kinds), bound
	// into the job's hash and recorded with it.
	CertificateID string
}

// jobReady checks that the job could be sent to its agent: an enabled holder, an enrolled
// agent (not removed or disabled when a rollout targets it), a token it may work on, and a
// profile that renders for the holder. It returns the rendered subject (canonical form).
func (t *txn) jobReady(ctx context.Context, c jobCore) (string, error) {
	// A key the coordinator makes is escrowed, one made on the token never: the kind
	// must match the profile's key origin (a rollout's template cannot bypass it).
	if k, err := escrowKind(c.Kind, c.Parsed); err != nil {
		return "", err
	} else if k != c.Kind {
		return "", badRequest("kind", "profile %s makes escrowed keys on the coordinator: queue a server_keygen job, not %s", c.Parsed.Name, c.Kind)
	}
	if c.Holder.Disabled {
		return "", badRequest("holder", "user %q is disabled", c.Holder.Username)
	}
	a, err := t.GetAgent(ctx, c.AgentID)
	if errors.Is(err, store.ErrNotFound) {
		return "", badRequest("agent", "agent %q is not enrolled; a job waits for an offline agent, not for one the coordinator has never seen", c.AgentID)
	} else if err != nil {
		return "", err
	}
	if c.Rollout.ID != "" && (a.State == store.AgentRemoved || a.State == store.AgentDisabled) {
		return "", badRequest("agent", "agent %s is %s", a.ID, a.State)
	}
	if err := t.tokenReady(ctx, JobRequest{Kind: c.Kind, TokenSerial: c.TokenSerial}, c.Parsed, c.Holder); err != nil {
		return "", err
	}
	orgName := ""
	if c.Holder.OrganizationID != "" {
		o, err := t.GetOrganization(ctx, c.Holder.OrganizationID)
		if err != nil {
			return "", err
		}
		orgName = o.Name
	}
	id, err := c.Parsed.Render(holderOf(c.Holder, orgName))
	if err != nil {
		e := AsError(err)
		return "", &Error{Code: e.Code, Field: "holder", Msg: e.Msg, Err: err}
	}
	return id.Canonical(), nil
}

// createJob stores a job jobReady passed (subject is its rendered subject), audits it,
// supersedes the open jobs it replaces and, when its request gate is already passed (a
// profile without approvals, or a rollout's job), approves it.
func (t *txn) createJob(ctx context.Context, c jobCore, subject string) (store.Job, error) {
	j, entry, err := t.insertJob(ctx, c, subject)
	if err != nil {
		return store.Job{}, err
	}
	if c.CertificateID != "" {
		// Before the approval below: the dispatch it writes reads it.
		if err := t.AddKeyRequest(ctx, store.KeyRequest{JobID: j.ID, CKAID: c.CertificateID}); err != nil {
			return store.Job{}, err
		}
	}
	if err := t.audit(ctx, entry); err != nil {
		return store.Job{}, err
	}
	if err := t.supersede(ctx, entry.Actor, j); err != nil {
		return store.Job{}, err
	}
	policy := c.Parsed.Approval.Policy()
	outcome, err := jobs.Evaluate(policy, j.Rules(j.OrganizationID, nil), t.now)
	if err != nil {
		return store.Job{}, err
	}
	if outcome.Status != jobs.StatusApproved {
		return j, t.notifyApprovalRequested(ctx, j, c.Parsed)
	}
	ch := store.JobChange{Actor: c.RequesterID, Reason: fmt.Sprintf("profile %s needs no approval", c.Profile.Name)}
	if c.Rollout.ID != "" {
		ch = rolloutApproval(c.Rollout)
	}
	return t.transition(ctx, j, jobs.StateApproved, ch, "")
}

// insertJob stores the job in pending_approval and returns the audit entry of its creation,
// for the caller to append before it supersedes the open jobs it replaces (the rollout
// engine appends a batch's entries at once).
func (t *txn) insertJob(ctx context.Context, c jobCore, subject string) (store.Job, audit.Entry, error) {
	deadline := c.Deadline
	if deadline.IsZero() {
		life := c.Parsed.Approval.Policy().ExpiresAfter
		if life <= 0 {
			life = DefaultJobDeadline
		}
		deadline = t.now.Add(life)
	}
	sp := c.Profile
	// The document is part of what is approved: approvers see it, and the register shows
	// it as the basis of the issuance.
	params := jobs.DocumentParams(c.Document.Number, c.Document.Date)
	if c.CertificateID != "" {
		if params == nil {
			params = map[string]string{}
		}
		params["certificate_id"] = c.CertificateID
	}
	binding := jobs.BindingHash(jobs.Binding{Kind: c.Kind, HolderID: c.Holder.ID, ProfileName: sp.Name, ProfileHash: sp.ContentHash,
		Subject: subject, TargetAgentID: c.AgentID, TokenSerial: c.TokenSerial, Params: params})
	j, err := t.CreateJob(ctx, store.Job{Kind: c.Kind, State: jobs.StatePendingApproval, HolderID: c.Holder.ID,
		ProfileName: sp.Name, ProfileHash: sp.ContentHash, AgentID: c.AgentID, TokenSerial: c.TokenSerial,
		RequesterID: c.RequesterID, OrganizationID: c.Holder.OrganizationID, BindingHash: binding,
		Deadline: deadline, Created: t.now, IdempotencyKey: c.IdempotencyKey, RequestHash: c.RequestHash, RolloutID: c.Rollout.ID,
		Document: c.Document})
	if err != nil {
		return store.Job{}, audit.Entry{}, err
	}
	actor := c.RequesterID
	kv := []any{"kind", string(j.Kind), "holder", c.Holder.Username, "profile", sp.Name, "profile_hash", sp.ContentHash,
		"agent", j.AgentID, "token_serial", j.TokenSerial, "binding_hash", binding, "deadline", deadline.Format(time.RFC3339)}
	if !c.Document.IsZero() {
		kv = append(kv, "document_number", c.Document.Number, "document_date", c.Document.Date)
	}
	if c.Rollout.ID != "" {
		actor = rolloutActor(c.Rollout.ID)
		kv = append(kv, "rollout", c.Rollout.ID, "rollout_binding", c.RolloutBinding)
	}
	return j, audit.Entry{Actor: actor, Action: audit.ActionJobCreated, JobID: j.ID, Target: "user:" + c.Holder.ID,
		Details: audit.Details(kv...)}, nil
}

// CreateJob queues a job (helpdesk or admin). The job starts in pending_approval and
// moves to approved in the same transaction when its profile needs no approval. An open
// job for the same holder, profile and target is superseded by it.
//
// The target agent must be known to the coordinator (enrolled, whether online or not): a
// job waits for an offline agent, but a job for an agent ID nobody enrolled is a typo that
// would sit until it expires.
func (s *Service) CreateJob(ctx context.Context, by Actor, r JobRequest) (Job, error) {
	return s.queueJob(ctx, by, r, nil, nil)
}

// queueJob is CreateJob with two hooks for requests that ask more of a job (a temporary
// token, a replacement): check refuses the job once jobReady passed it, after records
// what goes with the created job; both run in its transaction, and either may be nil.
func (s *Service) queueJob(ctx context.Context, by Actor, r JobRequest,
	check func(context.Context, *txn, jobCore) error, after func(context.Context, *txn, store.Job) error) (Job, error) {
	actor := by.user
	r.Holder, r.Profile, r.Agent, r.TokenSerial = strings.TrimSpace(r.Holder), strings.TrimSpace(r.Profile), strings.TrimSpace(r.Agent), strings.TrimSpace(r.TokenSerial)
	acc, err := accessOf(ctx, s.st, actor)
	if err != nil {
		return Job{}, AsError(err)
	}
	// A holder without the request permission may still ask for themselves, on a plain
	// request (no temporary or replacement token), when the profile allows it: judged in
	// the transaction by selfRequest.
	self := check == nil && after == nil && !actor.Disabled && r.Holder == actor.Username
	if !acc.canAnywhere(jobs.PermRequest) && !self {
		return Job{}, s.deny(ctx, actor, "create job", "", "", acc.refusal("create job", jobs.PermRequest, ""))
	}
	r.Document.Number, r.Document.Date = strings.TrimSpace(r.Document.Number), strings.TrimSpace(r.Document.Date)
	r.CertificateID = strings.ToLower(strings.TrimSpace(r.CertificateID))
	if err := checkIdempotencyKey(r.IdempotencyKey); err != nil {
		return Job{}, err
	}
	key, hash := r.IdempotencyKey, ""
	if key != "" {
		// A repeat is answered before the request is judged again: a deadline that has
		// passed since, or a holder disabled since, must not turn it into an error.
		hash = r.requestHash()
		if prior, ok, err := priorJob(ctx, s.st, actor.ID, key, hash); err != nil {
			return Job{}, AsError(err)
		} else if ok {
			return s.replayed(ctx, prior)
		}
	}
	if err := r.validate(s.clock()); err != nil {
		return Job{}, err
	}
	var (
		out      store.Job
		replayed bool
	)
	err = s.update(ctx, func(t *txn) error {
		replayed = false
		if key != "" {
			// A request with the same key may have committed since the look above.
			prior, ok, err := priorJob(ctx, t, actor.ID, key, hash)
			if err != nil {
				return err
			}
			if ok {
				out, replayed = prior, true
				return nil
			}
		}
		holder, err := t.GetUserByUsername(ctx, r.Holder)
		if errors.Is(err, store.ErrNotFound) {
			return badRequest("holder", "no user named %q", r.Holder)
		}
		if err != nil {
			return err
		}
		if holder.Disabled {
			return badRequest("holder", "user %q is disabled", holder.Username)
		}
		byRole := acc.can(jobs.PermRequest, holder.OrganizationID)
		if !byRole && (!self || holder.ID != actor.ID) {
			return t.refuse(ctx, actor, "create job", "", "user:"+holder.ID, acc.refusal("create job", jobs.PermRequest, holder.OrganizationID))
		}
		sp, err := t.GetProfile(ctx, r.Profile)
		if errors.Is(err, store.ErrNotFound) {
			return badRequest("profile", "no profile named %q", r.Profile)
		}
		if err != nil {
			return err
		}
		p, err := s.profiles.parse(sp)
		if err != nil {
			return internal(err)
		}
		if r.Kind, err = escrowKind(r.Kind, p); err != nil {
			return err
		}
		if !byRole {
			refusal, err := t.selfRequest(ctx, r, p, holder)
			if err != nil {
				return err
			}
			if refusal != nil {
				return t.refuse(ctx, actor, "create job", "", "user:"+holder.ID, refusal)
			}
		}
		if err := documentAllowed(p, r.Kind, r.Document); err != nil {
			return err
		}
		c := jobCore{Kind: r.Kind, Holder: holder, Profile: sp, Parsed: p, AgentID: r.Agent, TokenSerial: r.TokenSerial,
			Deadline: r.Deadline, RequesterID: actor.ID, IdempotencyKey: key, RequestHash: hash, Document: r.Document,
			CertificateID: r.CertificateID}
		subject, err := t.jobReady(ctx, c)
		if err != nil {
			return err
		}
		if check != nil {
			if err := check(ctx, t, c); err != nil {
				return err
			}
		}
		out, err = t.createJob(ctx, c, subject)
		if key != "" && errors.Is(err, store.ErrConflict) {
			// A concurrent request with the same key took it first (the unique index):
			// run again, and the look above finds its job.
			return retryable{err}
		}
		if err == nil && after != nil {
			err = after(ctx, t, out)
		}
		return err
	})
	if err != nil {
		return Job{}, err
	}
	if replayed {
		return s.replayed(ctx, out)
	}
	return s.jobView(ctx, s.st, newNames(s.st), out)
}

// replayed is the view of a job an idempotency key had created, as a repeat returns it.
func (s *Service) replayed(ctx context.Context, j store.Job) (Job, error) {
	v, err := s.jobView(ctx, s.st, newNames(s.st), j)
	v.Replayed = true
	return v, err
}

// tokenReady refuses, at request time, a job on a named token that could never be sent
// to the agent or would act on someone else's token: one that needs a PIN of the token
// that no tokenfleet job set (only a token tokenfleet initialised, or a blank one, can
// be worked on), and a renew for a token carrying another holder's certificates and none
// of this holder's.
func (t *txn) tokenReady(ctx context.Context, r JobRequest, p profile.Profile, holder store.User) error {
	if r.TokenSerial == "" {
		return nil // the token is chosen at dispatch; what is wrong then fails the job there
	}
	// Only an active token takes every job; the token's state says which it still takes.
	if err := tokenTakes(ctx, t, r.TokenSerial, r.Kind); err != nil {
		return err
	}
	blank := false
	tok, err := t.GetToken(ctx, r.TokenSerial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if p.Token.Initialize && (r.Kind == jobs.KindIssue || r.Kind == jobs.KindCSR) {
			// Not reported yet: it may come blank. The dispatch waits for the agent's
			// report and decides then.
			return nil
		}
	case err != nil:
		return err
	default:
		var f protocol.TokenFlags
		blank = json.Unmarshal(tok.Flags, &f) == nil && !f.Initialized
	}
	if need := jobs.PINNeeded(r.Kind, p.Token.Initialize, blank); need != "" {
		if _, err := t.GetTokenPIN(ctx, r.TokenSerial, need); errors.Is(err, store.ErrNotFound) {
			what := "user PIN"
			if need == jobs.PINSO {
				what = "SO PIN"
			}
			return newErr(CodePINsUnknown, "token_serial",
				"a %s job needs the %s of token %s, and tokenfleet holds none (no tokenfleet job set it); only a token tokenfleet initialised, or a blank one, can be worked on: issue it with a profile that initialises it first",
				r.Kind, what, r.TokenSerial)
		} else if err != nil {
			return err
		}
	}
	if r.Kind != jobs.KindRenew && r.Kind != jobs.KindRecoverKey {
		return nil
	}
	valid := false
	others := map[string]bool{}
	p2 := store.Page{Limit: store.MaxPageLimit}
	for {
		cs, next, err := t.ListCertificates(ctx, store.CertificateFilter{TokenSerial: r.TokenSerial, Revoked: &valid}, p2)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if c.HolderID == holder.ID {
				return nil
			}
			others[c.HolderID] = true
		}
		if next == "" {
			break
		}
		p2.Cursor = next
	}
	switch {
	case len(others) > 0 && r.Kind == jobs.KindRecoverKey:
		// Someone else's token, likely on their workstation: the key would be theirs.
		return newErr(CodeNotHoldersToken, "token_serial",
			"token %s carries certificates of another holder and none of %s: an escrowed key is recovered onto its holder's token, or onto one carrying no one's certificates",
			r.TokenSerial, holder.Username)
	case len(others) > 0:
		return newErr(CodeNotHoldersToken, "token_serial",
			"token %s carries certificates of another holder and none of %s: a renew is for the holder whose certificate the token has",
			r.TokenSerial, holder.Username)
	}
	return nil
}

// supersede ends every open job the new one replaces: same holder, profile and target.
func (t *txn) supersede(ctx context.Context, actor string, nj store.Job) error {
	f := store.JobFilter{States: []jobs.State{jobs.StatePendingApproval, jobs.StateApproved, jobs.StateDispatched},
		HolderID: nj.HolderID, ProfileName: nj.ProfileName, AgentID: nj.AgentID}
	var old []store.Job
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		page, next, err := t.ListJobs(ctx, f, p)
		if err != nil {
			return err
		}
		old = append(old, page...)
		if next == "" {
			break
		}
		p.Cursor = next
	}
	for _, o := range old {
		if !jobs.Supersedes(nj.Rules("", nil), o.Rules("", nil)) {
			continue
		}
		if _, err := t.transition(ctx, o, jobs.StateSuperseded, store.JobChange{Actor: actor,
			Reason: "superseded by job " + nj.ID, SupersededBy: nj.ID}, audit.ActionJobSuperseded); err != nil {
			return err
		}
	}
	return nil
}

// JobQuery filters ListJobs.
type JobQuery struct {
	State        jobs.State
	Kind         jobs.Kind
	Organization string // name
	Holder       string // username
	Requester    string // username
	Profile      string // profile name
	Agent        string
	// AwaitingMe keeps only the jobs the caller may decide on now, at either gate.
	AwaitingMe bool
}

// ListJobs lists jobs, newest first: all of them, or an approver's organisation's.
func (s *Service) ListJobs(ctx context.Context, by Actor, q JobQuery, page Page) ([]Job, string, error) {
	actor := by.user
	p := page.store()
	sc, err := s.canRead(ctx, actor, resJobs)
	if err != nil {
		return nil, "", err
	}
	var f store.JobFilter
	if q.State != "" {
		if !jobs.KnownState(q.State) {
			return nil, "", badRequest("state", "unknown state %q (known: %v)", q.State, jobs.States())
		}
		f.States = []jobs.State{q.State}
	}
	if q.Kind != "" {
		if !jobs.KnownKind(q.Kind) {
			return nil, "", badRequest("kind", "unknown kind %q (known: %v)", q.Kind, jobs.Kinds())
		}
		f.Kinds = []jobs.Kind{q.Kind}
	}
	if q.Organization != "" {
		o, err := s.st.GetOrganizationByName(ctx, q.Organization)
		if errors.Is(err, store.ErrNotFound) {
			return nil, "", badRequest("organization", "no organisation named %q", q.Organization)
		}
		if err != nil {
			return nil, "", AsError(err)
		}
		f.OrganizationID = o.ID
	}
	if q.Holder != "" {
		if f.HolderID, err = s.userID(ctx, "holder", q.Holder); err != nil {
			return nil, "", err
		}
	}
	if q.Requester != "" {
		if f.RequesterID, err = s.userID(ctx, "requester", q.Requester); err != nil {
			return nil, "", err
		}
	}
	f.AgentID, f.ProfileName = q.Agent, q.Profile
	if f.OrganizationID, err = s.narrowList(ctx, actor, sc, f.OrganizationID, "jobs"); err != nil {
		return nil, "", err
	}
	var (
		js   []store.Job
		next string
	)
	if q.AwaitingMe {
		js, next, err = s.awaiting(ctx, actor, f, p)
	} else {
		js, next, err = s.st.ListJobs(ctx, f, p)
	}
	if err != nil {
		return nil, "", pageErr(err)
	}
	names := newNames(s.st)
	out := make([]Job, 0, len(js))
	for _, j := range js {
		v, err := s.jobView(ctx, s.st, names, j)
		if err != nil {
			return nil, "", err
		}
		out = append(out, v)
	}
	return out, next, nil
}

// awaiting lists the jobs of f that wait for actor's decision: those on which an approval
// by actor would be taken now, as checkVote, the rule decide applies, says. It walks the
// store's pages until it has a page of its own; the cursor continues after the last job
// it returns.
func (s *Service) awaiting(ctx context.Context, actor store.User, f store.JobFilter, p store.Page) ([]store.Job, string, error) {
	// approved: a server_keygen job may wait there for the CA operator (checkVote passes
	// over the others).
	gates := []jobs.State{jobs.StatePendingApproval, jobs.StateAwaitingCertificate, jobs.StateApproved}
	switch {
	case len(f.States) == 0:
		f.States = gates
	case !slices.Contains(gates, f.States[0]):
		return nil, "", nil // nothing waits for a decision in that state
	}
	limit := p.Limit
	if limit <= 0 {
		limit = store.DefaultPageLimit
	}
	limit = min(limit, store.MaxPageLimit)
	now := s.clock()
	var out []store.Job
	sp := store.Page{Limit: store.MaxPageLimit, Cursor: p.Cursor}
	for {
		page, next, err := s.st.ListJobs(ctx, f, sp)
		if err != nil {
			return nil, "", err
		}
		for i, j := range page {
			if j.State == jobs.StateApproved && j.Kind != jobs.KindServerKeygen {
				continue // nothing to decide; spared the rules' reads
			}
			vc, err := s.checkVote(ctx, s.st, actor, j, jobs.Vote{Verdict: jobs.VerdictApprove}, now)
			if err != nil {
				// One job whose profile no longer reads must not hide the others.
				s.log.Warn().Err(err).Str("job", j.ID).Msg("listing jobs awaiting a decision")
				continue
			}
			if vc.refusal != nil {
				continue
			}
			out = append(out, j)
			if len(out) == limit {
				if i == len(page)-1 && next == "" {
					return out, "", nil
				}
				return out, store.JobCursor(j), nil
			}
		}
		if next == "" {
			return out, "", nil
		}
		sp.Cursor = next
	}
}

// GetJob returns one job with its decisions, timeline and steps.
func (s *Service) GetJob(ctx context.Context, by Actor, id string) (JobDetail, error) {
	actor := by.user
	sc, err := s.canRead(ctx, actor, resJobs)
	if err != nil {
		return JobDetail{}, err
	}
	j, err := s.st.GetJob(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return JobDetail{}, newErr(CodeNotFound, "", "no job %q", id)
	}
	if err != nil {
		return JobDetail{}, AsError(err)
	}
	if !sc.covers(j.OrganizationID) {
		return JobDetail{}, s.deny(ctx, actor, "read job", j.ID, "",
			newErr(CodeOutOfScope, "", "%s reads the jobs of their own organisation only", actor.Username))
	}
	return s.jobDetail(ctx, j)
}

// jobView adds names and approval progress to a job.
func (s *Service) jobView(ctx context.Context, r store.Reader, n *names, j store.Job) (Job, error) {
	v := Job{Job: j, Holder: n.user(ctx, j.HolderID), Requester: n.user(ctx, j.RequesterID), Organization: n.org(ctx, j.OrganizationID)}
	p, _, err := s.profileOfJob(ctx, r, j)
	if err != nil {
		return Job{}, internal(err)
	}
	approvals, err := r.ListApprovals(ctx, j.ID)
	if err != nil {
		return Job{}, AsError(err)
	}
	v.Required = p.Approval.Required
	approvers := map[string]bool{}
	for _, a := range approvals {
		if a.Gate == jobs.GateRequest && a.Verdict == jobs.VerdictApprove && a.BoundHash == j.BindingHash && s.decisionValid(p, j, a) {
			approvers[a.ApproverID] = true
		}
	}
	v.Approvals = len(approvers)
	return v, nil
}

// decisionValid reports whether a recorded decision still counts for the job as it is.
func (s *Service) decisionValid(p profile.Profile, j store.Job, a store.Approval) bool {
	if a.BoundHash != j.BindingHash {
		return false
	}
	if a.Gate == jobs.GateCAOperator {
		return a.Attempt == j.Attempt
	}
	// A request-gate approval lapses while the job still waits to run; once it ran, it
	// did its work.
	if jobs.Open(j.State) && a.Verdict == jobs.VerdictApprove {
		life := time.Duration(p.Approval.ExpiresAfter)
		return life <= 0 || s.clock().Before(a.At.Add(life))
	}
	return true
}

func (s *Service) jobDetail(ctx context.Context, j store.Job) (JobDetail, error) {
	n := newNames(s.st)
	v, err := s.jobView(ctx, s.st, n, j)
	if err != nil {
		return JobDetail{}, err
	}
	d := JobDetail{Job: v, Decisions: []DecisionView{}, Timeline: []Event{}, Steps: []store.JobStep{}}
	p, _, err := s.profileOfJob(ctx, s.st, j)
	if err != nil {
		return JobDetail{}, internal(err)
	}
	approvals, err := s.st.ListApprovals(ctx, j.ID)
	if err != nil {
		return JobDetail{}, AsError(err)
	}
	for _, a := range approvals {
		d.Decisions = append(d.Decisions, DecisionView{Gate: a.Gate, Approver: n.user(ctx, a.ApproverID), Verdict: a.Verdict,
			Reason: a.Reason, At: a.At, Valid: s.decisionValid(p, j, a)})
	}
	events, err := s.st.ListJobEvents(ctx, j.ID)
	if err != nil {
		return JobDetail{}, AsError(err)
	}
	for _, e := range events {
		d.Timeline = append(d.Timeline, Event{JobEvent: e, ActorName: n.user(ctx, e.Actor)})
	}
	steps, err := s.st.ListJobSteps(ctx, j.ID)
	if err != nil {
		return JobDetail{}, AsError(err)
	}
	if steps != nil {
		d.Steps = steps
	}
	att, err := s.st.GetJobAttempt(ctx, j.ID, j.Attempt)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return JobDetail{}, AsError(err)
	default:
		if j.State == jobs.StateApproved {
			d.WaitingReason = att.WaitingReason
		}
		d.AgentResult = att.ResultSummary
	}
	if id, ok := s.identityOf(ctx, n, j, p); ok {
		d.Subject = id.Subject.String()
		for _, v := range id.Emails {
			d.SANs = append(d.SANs, "email:"+v)
		}
		for _, v := range id.UPNs {
			d.SANs = append(d.SANs, "upn:"+v)
		}
		for _, v := range id.DNSNames {
			d.SANs = append(d.SANs, "dns:"+v)
		}
	}
	if j.TokenSerial != "" {
		tok, err := s.st.GetToken(ctx, j.TokenSerial)
		switch {
		case errors.Is(err, store.ErrNotFound):
			d.TokenURI = tokenURI("", "", j.TokenSerial, "") // not reported yet: its serial is all that is known
		case err != nil:
			return JobDetail{}, AsError(err)
		default:
			d.TokenURI = tokenOf(tok).URI
		}
		pin, err := s.st.GetTokenPIN(ctx, j.TokenSerial, store.PINPurposeUser)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return JobDetail{}, AsError(err)
		case pin.JobID == j.ID:
			d.PINRevealed = pin.Revealed
		}
	}
	if j.AgentID != "" {
		a, err := s.st.GetAgent(ctx, j.AgentID)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return JobDetail{}, AsError(err)
		default:
			d.AgentHostname, d.AgentOnline, d.AgentLastSeen = a.Hostname, a.Online, a.LastSeen
		}
	}
	if j.Kind == jobs.KindRecoverKey {
		kr, err := s.st.GetKeyRequest(ctx, j.ID)
		if err != nil {
			return JobDetail{}, AsError(err)
		}
		d.Recovery = &JobRecovery{EscrowedKeyID: kr.EscrowedKeyID, Target: kr.Target, Delivered: kr.Delivered, DeliveredBy: n.user(ctx, kr.DeliveredBy)}
		if k, err := s.st.GetEscrowedKey(ctx, kr.EscrowedKeyID); err == nil {
			d.Recovery.KeyID, d.Recovery.CertificateSerial = k.KeyID, k.CertificateSerial
		} else if !errors.Is(err, store.ErrNotFound) {
			return JobDetail{}, AsError(err)
		}
	}
	return d, nil
}

// identityOf renders the names j's profile gives its holder now; false when the job has
// no holder or the holder's record does not render (the dispatch says why, in time).
func (s *Service) identityOf(ctx context.Context, n *names, j store.Job, p profile.Profile) (profile.Identity, bool) {
	if j.HolderID == "" {
		return profile.Identity{}, false
	}
	holder, err := n.r.GetUser(ctx, j.HolderID)
	if err != nil {
		return profile.Identity{}, false
	}
	id, err := p.Render(holderOf(holder, n.org(ctx, holder.OrganizationID)))
	if err != nil {
		return profile.Identity{}, false
	}
	return id, true
}
