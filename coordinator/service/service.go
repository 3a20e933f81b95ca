package service

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/ratelimit"
)

// Dispatcher is told about job changes inside the transaction that makes them, so that
// the message a change causes goes into the outbox atomically with it. An error rolls the
// change back.
type Dispatcher interface {
	// JobApproved is called when job has just entered approved. It may fail the job when
	// its dispatch can never be built, through jt like any other transition.
	JobApproved(ctx context.Context, jt *JobTx, job store.Job) error
	// JobWithdrawn is called when the coordinator ended job (from the state from) without
	// the agent having reported that end: cancelled, superseded, expired, rejected at the
	// CA-operator gate, or failed by the coordinator (a CSR refused, a dispatch that
	// cannot be built). If the agent was sent the attempt it must be told, so that it
	// stops waiting and leaves the token as the job kind's rules say.
	JobWithdrawn(ctx context.Context, tx store.Tx, job store.Job, from jobs.State) error
}

// Issuer continues issuance once the CA-operator gate of a job in awaiting_certificate
// has passed: it signs the certificate and moves the job on. Called inside the
// transaction that records the deciding approval.
type Issuer interface {
	CAGatePassed(ctx context.Context, jt *JobTx, job store.Job) error
}

// Observer counts what happened, after the transaction committed (so retried attempts
// are not counted twice). Metrics implements it.
type Observer interface {
	JobTransition(from, to jobs.State)
	Decision(gate jobs.Gate, verdict jobs.Verdict)
	Denial(code Code)
}

// NopDispatcher does nothing: jobs stay approved until a dispatcher is wired in.
type NopDispatcher struct{}

func (NopDispatcher) JobApproved(context.Context, *JobTx, store.Job) error { return nil }
func (NopDispatcher) JobWithdrawn(context.Context, store.Tx, store.Job, jobs.State) error {
	return nil
}

// NopIssuer does nothing: a job whose CA-operator gate passed stays in
// awaiting_certificate until an issuer is wired in.
type NopIssuer struct{}

func (NopIssuer) CAGatePassed(context.Context, *JobTx, store.Job) error { return nil }

type nopObserver struct{}

func (nopObserver) JobTransition(jobs.State, jobs.State) {}
func (nopObserver) Decision(jobs.Gate, jobs.Verdict)     {}
func (nopObserver) Denial(Code)                          {}

// Options configure a Service.
type Options struct {
	Store      store.Store    // required
	Logger     zerolog.Logger // the zero value discards
	Now        func() time.Time
	Dispatcher Dispatcher // nil: NopDispatcher
	Issuer     Issuer     // nil: NopIssuer
	Observer   Observer   // nil: nothing is counted
	AgentHook  AgentHook  // nil: enrolled agents' queues are declared when the dispatcher starts
	// APITokenTTL is the life of an API token issued without one; 0: DefaultAPITokenTTL.
	APITokenTTL time.Duration
	// APITokenMaxTTL is the longest life an API token may be issued with; 0: MaxAPITokenTTL.
	APITokenMaxTTL time.Duration
	// Broker provisions self-enrolled agents' broker users; nil turns self-enrolment off.
	Broker BrokerIdentities
	// Notifier writes notices into the notifications outbox; nil: nobody is notified.
	Notifier Notifier
	// SignIn is how people sign in to the web console: session timeouts, lockout and
	// password hashing; zero fields take the defaults.
	SignIn SignInOptions
	// CheckpointKey verifies the kept audit checkpoints in VerifyAudit; nil: they are not
	// checked.
	CheckpointKey ed25519.PublicKey
	// RecoveryApprovals is how many key-recovery officers must approve the recovery of an
	// escrowed key (at least 1); 0: DefaultRecoveryApprovals.
	RecoveryApprovals int
	// EncryptionIssuers gives the CA certificates a certificate read by a
	// register_certificate job must be issued by (directly): the coordinator's own CA and
	// the configured escrow.trusted_issuers. Asked at each registration, so a reloaded CA
	// is seen. nil or none: no certificate can be registered.
	EncryptionIssuers func() []*x509.Certificate
}

// Service is the coordinator's business operations. It is safe for concurrent use.
type Service struct {
	st       store.Store
	log      zerolog.Logger
	now      func() time.Time
	disp     Dispatcher
	issuer   Issuer
	obs      Observer
	agents   AgentHook
	broker   BrokerIdentities
	profiles *profileCache
	tokenUse *ratelimit.Limiter // one token.used entry per token and TokenUseAuditEvery
	anon     *ratelimit.Limiter // one access.denied entry per source and reason and anonDenialWindow

	tokenTTL, tokenMaxTTL time.Duration

	rollouts *rolloutEngine
	notifier Notifier // nil: no notices
	watch    watchers // WatchJob's subscribers, told of job changes after each commit

	signin SignInOptions // defaults filled in
	hasher *hasher
	ghosts *ghostLocks // lockout of usernames no user has
	cpKey  ed25519.PublicKey

	recoveryN  int                        // approvals a key recovery needs
	encIssuers func() []*x509.Certificate // see Options.EncryptionIssuers
}

// New returns a Service over o.Store.
func New(o Options) (*Service, error) {
	if o.Store == nil {
		return nil, errors.New("service: no store")
	}
	s := &Service{st: o.Store, log: o.Logger, now: o.Now, disp: o.Dispatcher, issuer: o.Issuer, obs: o.Observer, agents: o.AgentHook, broker: o.Broker,
		profiles: newProfileCache(), tokenUse: ratelimit.New(TokenUseAuditEvery, maxTracked), anon: ratelimit.New(anonDenialWindow, maxTracked)}
	if s.now == nil {
		s.now = time.Now
	}
	switch {
	case o.RecoveryApprovals < 0 || o.RecoveryApprovals > jobs.MaxRequired:
		return nil, fmt.Errorf("service: recovery approvals %d: want 1 to %d (0: the default, %d)", o.RecoveryApprovals, jobs.MaxRequired, DefaultRecoveryApprovals)
	case o.RecoveryApprovals == 0:
		s.recoveryN = DefaultRecoveryApprovals
	default:
		s.recoveryN = o.RecoveryApprovals
	}
	s.encIssuers = o.EncryptionIssuers
	s.rollouts = newRolloutEngine()
	s.notifier = o.Notifier
	s.cpKey = o.CheckpointKey
	s.tokenTTL, s.tokenMaxTTL = o.APITokenTTL, o.APITokenMaxTTL
	if s.tokenTTL <= 0 {
		s.tokenTTL = DefaultAPITokenTTL
	}
	if s.tokenMaxTTL <= 0 {
		s.tokenMaxTTL = MaxAPITokenTTL
	}
	if s.tokenTTL > s.tokenMaxTTL {
		return nil, fmt.Errorf("service: API token default life %s is longer than the maximum %s", s.tokenTTL, s.tokenMaxTTL)
	}
	if err := s.setSignIn(o.SignIn); err != nil {
		return nil, err
	}
	if s.disp == nil {
		s.disp = NopDispatcher{}
	}
	if s.issuer == nil {
		s.issuer = NopIssuer{}
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	return s, nil
}

// Ping checks that the store answers.
func (s *Service) Ping(ctx context.Context) error {
	_, err := s.st.AuditHead(ctx)
	return err
}

// clock returns the service's current time in store precision.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// maxTxAttempts bounds how often an operation re-reads and re-decides after losing a
// compare-and-set to a concurrent change.
const maxTxAttempts = 4

// txn is one attempt of an operation's transaction: what it observed, to report after the
// commit, and the refusal it recorded (committed with its audit entry).
type txn struct {
	store.Tx
	s       *Service
	now     time.Time
	events  []func(Observer)
	refusal error
}

// update runs fn in a transaction. A lost compare-and-set (fn returns a retryable error)
// rolls back and runs fn again on fresh reads, at most maxTxAttempts times. When fn
// refused the operation (t.refuse), the transaction commits — the refusal's audit entry
// must stay — and update returns the refusal.
func (s *Service) update(ctx context.Context, fn func(t *txn) error) error {
	var err error
	for range maxTxAttempts {
		var t *txn
		err = s.st.InTx(ctx, func(tx store.Tx) error {
			t = &txn{Tx: tx, s: s, now: s.clock()}
			return fn(t)
		})
		var r retryable
		if errors.As(err, &r) {
			s.log.Debug().Err(err).Msg("concurrent change; reading again")
			continue
		}
		if err != nil {
			return AsError(err)
		}
		for _, ev := range t.events {
			ev(s.obs)
		}
		if t.refusal != nil {
			return t.refusal
		}
		return nil
	}
	return &Error{Code: CodeConflict, Msg: "the record kept changing while this request was processed; try again", Err: err}
}

// audit appends an entry at the transaction's time.
func (t *txn) audit(ctx context.Context, e audit.Entry) error {
	if e.Time.IsZero() {
		e.Time = t.now
	}
	_, err := t.AppendAudit(ctx, e, audit.Seal)
	return err
}

// auditAll appends entries, in order, at the transaction's time, under one lock of the
// chain head.
func (t *txn) auditAll(ctx context.Context, es []audit.Entry) error {
	for i := range es {
		if es[i].Time.IsZero() {
			es[i].Time = t.now
		}
	}
	_, err := t.AppendAudits(ctx, es, audit.Seal)
	return err
}

// refuse records a refusal: an access.denied audit entry naming the actor, the operation
// and the rule's code. The transaction then commits only that entry, and the operation
// returns err.
func (t *txn) refuse(ctx context.Context, actor store.User, op, jobID, target string, err error) error {
	e := AsError(err)
	if err := t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionAccessDenied, JobID: jobID, Target: target,
		Reason: e.Msg, Details: audit.Details("operation", op, "code", string(e.Code), "username", actor.Username)}); err != nil {
		return err
	}
	t.refusal = e
	t.events = append(t.events, func(o Observer) { o.Denial(e.Code) })
	return nil
}

// transition moves j to state to (checked against the kind's table) with a timeline
// event and an audit entry, and tells the dispatcher.
func (t *txn) transition(ctx context.Context, j store.Job, to jobs.State, c store.JobChange, action string) (store.Job, error) {
	njs, err := t.transitionAll(ctx, []store.Job{j}, to, c, action)
	if err != nil {
		return store.Job{}, err
	}
	return njs[0], nil
}

// transitionAll is transition for several jobs that take the same change: each is
// checked against its kind's table, then all move, with their timeline events and audit
// entries, in a few statements for the whole set; the dispatcher is told of each.
func (t *txn) transitionAll(ctx context.Context, js []store.Job, to jobs.State, c store.JobChange, action string) ([]store.Job, error) {
	return t.moveAll(ctx, js, to, c, action, true)
}

// moveAll is transitionAll; tell false keeps the dispatcher out of it, for a rollout's job
// that fails at once because its target is gone: nothing is to be sent for it.
func (t *txn) moveAll(ctx context.Context, js []store.Job, to jobs.State, c store.JobChange, action string, tell bool) ([]store.Job, error) {
	if len(js) == 0 {
		return nil, nil
	}
	moves := make([]store.JobMove, len(js))
	for i, j := range js {
		if err := jobs.CanTransitionKind(j.Kind, j.State, to); err != nil {
			if len(js) > 1 {
				return nil, fmt.Errorf("job %s: %w", j.ID, err)
			}
			return nil, err
		}
		moves[i] = store.JobMove{ID: j.ID, From: j.State, ExpectedVersion: j.Version}
	}
	if c.At.IsZero() {
		c.At = t.now
	}
	njs, err := t.UpdateJobStates(ctx, moves, to, c)
	if err != nil {
		return nil, casLost(err)
	}
	if action == "" {
		action = audit.ActionJobTransition
	}
	entries := make([]audit.Entry, len(njs))
	for i, nj := range njs {
		kv := []any{"from", string(js[i].State), "to", string(to), "attempt", nj.Attempt}
		if c.SupersededBy != "" {
			kv = append(kv, "superseded_by", c.SupersededBy)
		}
		entries[i] = audit.Entry{Actor: c.Actor, Action: action, JobID: nj.ID, Reason: c.Reason, Details: audit.Details(kv...)}
	}
	if err := t.auditAll(ctx, entries); err != nil {
		return nil, err
	}
	ids := make([]string, len(njs))
	for i, nj := range njs {
		ids[i] = nj.ID
	}
	t.jobsChanged(ids...)
	nudged := false
	for i := range njs {
		from, nj := js[i].State, njs[i]
		t.events = append(t.events, func(o Observer) { o.JobTransition(from, to) })
		if nj.RolloutID != "" && jobs.Terminal(to) && !nudged {
			// The rollout's engine looks at once: a wave may have finished, or the brake tripped.
			nudged = true
			t.events = append(t.events, func(Observer) { t.s.nudgeRollouts() })
		}
		switch {
		case !tell:
		case to == jobs.StateApproved:
			if err = t.s.disp.JobApproved(ctx, &JobTx{Tx: t.Tx, t: t}, nj); err == nil {
				// The dispatcher may have failed the job it could not dispatch.
				njs[i], err = t.GetJob(ctx, nj.ID)
			}
		case jobs.Terminal(to) && to != jobs.StateSucceeded && from != jobs.StatePendingApproval && !byAgent(c):
			err = t.s.disp.JobWithdrawn(ctx, t.Tx, nj, from)
		}
		if err != nil {
			return nil, fmt.Errorf("dispatcher: job %s %s -> %s: %w", nj.ID, from, to, err)
		}
		if to == jobs.StateSucceeded {
			// A temporary token or a replacement takes effect with its job's success.
			if err := t.tokenJobSucceeded(ctx, njs[i]); err != nil {
				return nil, fmt.Errorf("token life cycle: job %s: %w", nj.ID, err)
			}
		}
		if jobs.Terminal(to) {
			if err := t.escrowJobEnded(ctx, njs[i]); err != nil {
				return nil, fmt.Errorf("key escrow: job %s: %w", nj.ID, err)
			}
		}
		if err := t.notifyJobEnded(ctx, njs[i]); err != nil {
			return nil, err
		}
		if err := t.notifyCAGate(ctx, njs[i]); err != nil {
			return nil, err
		}
	}
	return njs, nil
}
