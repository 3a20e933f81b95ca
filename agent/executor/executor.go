// Package executor carries out the jobs the coordinator dispatches to this agent, on
// PKCS#11 tokens, step by step, resumable after any crash.
//
// It is event-driven, so that no broker delivery is ever held while a job waits (for a
// token, for a certificate): Submit, DeliverCertificate and Cancel journal the message and
// return, and the caller acks the delivery then. The job itself runs on a goroutine owned
// by Run, one per job, which stops when the job finishes, parks (awaiting its certificate:
// no goroutine waits for it) or Run's context ends. Resume, at start-up, continues every
// unfinished job from the journal.
//
// Each job kind is a list of steps (see steps.go). A step is journalled started before it
// touches the token and done after, and every step is safe to run again: it looks at the
// token first (a key under the job's CKA_ID is reused, a certificate already written is
// left alone, PINs the job generated are tried before the old ones). A step interrupted
// by a crash or a shutdown is simply run again on the next start. Shutdown never
// interrupts a PKCS#11 call: Run's context ending stops the job at the next step boundary
// (or while it waits for a token), and the step in flight finishes or is redone later.
//
// Messages (progress, CSR, result) go to the journal's outbox in the same transaction as
// the step change that causes them; this package never sends anything itself.
//
// PINs and keys: the PINs of a dispatch, and the private key of server_keygen and
// recover_key, are opened with the agent's key when needed and never stored (the journal
// keeps the dispatch, where they stay sealed; the key is wiped once on the token); PINs the agent generates are kept in the journal only sealed to the agent's own
// key until the result carrying them (sealed to the coordinator's result key) is in the
// outbox. No PIN is ever logged or put in an error.
//
// # Messages, in the order a job produces them
//
// Every message is a new envelope (fresh message ID, the job ID and attempt) in the
// journal's outbox:
//
//	progress waiting_for_token   only when the token is not there at the first look; once
//	                             per wait, detail says which token to insert
//	progress token_found         token_serial set (empty for a blank token)
//	progress initialising        issue/csr with initialise; wipe
//	progress key_generated       key_id, public_key (PKIX), key_existed (the key was found
//	                             on the token, made by an earlier pass or attempt)
//	progress key_imported        server_keygen, recover_key: the dispatch's key is on the
//	                             token (detail says when an earlier pass put it there)
//	csr                          CSRSubmission: csr, key_id, public_key, token_serial
//	progress csr_sent            then issue and renew park in awaiting_certificate
//	progress certificate_written after the delivery (issue, renew) or from the dispatch
//	                             (install_certificate, server_keygen, recover_key)
//	progress verified            the key signed a fresh challenge its certificate verifies
//	                             (a decryption key: decrypted one, or agreed an ECDH secret);
//	                             unblock_pin: the new user PIN logs in; wipe: token empty
//	result                       always last; exactly one per attempt
//
// A csr job's result (succeeded) is written with its CSR and csr_sent: a csr job ends
// there, its certificate comes with an install_certificate job. An inventory job sends
// only its result, the tokens in outputs.tokens (with a selector: waiting_for_token and
// token_found first). A register_certificate job reports token_found, then its result with
// the certificate read (outputs.certificate, DER). Kinds report only the steps the coordinator's table allows them
// (renew never initialising). A job resumed after a restart repeats no step it reported,
// except waiting_for_token and token_found when it had to wait for the token again.
//
// A result's outputs: token_serial, key_id, certificate_serial once written, and pins,
// sealed to the dispatch's result_key (purpose user_pin, so_pin; bound to the job and
// attempt), for every PIN the job set on the token. Failures carry them too: a token
// initialised before a later step failed has new PINs the coordinator must know. A
// failure's error has the driver's token.* code as is, retryable as the protocol's table
// says (token.device_removed, token.not_present: true), or deadline_exceeded,
// job_cancelled, factory_pins_unknown, policy_violation, unseal_failed, key_mismatch (a
// sealed key that is not its certificate's).
//
// A retry (a new attempt of the same job) inherits the token serial and the PINs the job
// set: a token this job initialised is not wiped again, its key is found by its CKA_ID.
//
// # When the coordinator stops a job
//
// A cancel says what the coordinator did: cancelled, superseded, expired, rejected, or
// failed (it failed the job itself: a CSR refused, signing failed). Cancel journals it and
// wakes the job at once: a job waiting for its token or for another job's lock on it stops
// waiting, and a job parked for its certificate runs one last pass. Otherwise the job stops
// at its next step boundary: the step in flight finishes, a token write is never cut
// short. The attempt ends with a failed result carrying job_cancelled, its message saying
// what the coordinator did ("the coordinator failed the job: REASON"), the same line in
// the log; the journal records the attempt cancelled, or failed when the coordinator
// failed it: such a job may be retried, and the retry needs the PINs this attempt set,
// which the journal keeps after a failure and deletes after a cancel.
//
// Nothing is undone: the agent removes nothing it made (a retry reuses it, and removing
// is a token write nobody asked for) and the result's outputs report what stays, as after
// any failure. Per kind, by the last step done:
//
//   - issue, csr: before token_found, the token is untouched. Initialised (or its factory
//     PINs replaced), it stays so with the new label and PINs, which the result carries
//     sealed so the coordinator keeps them. A key generated stays under the job's CKA_ID
//     (outputs.key_id): a retry uses it, a later initialise or wipe of the token removes
//     it. Parked for the certificate, no certificate is written; once written, it stays
//     (outputs.certificate_serial). A csr job is over when its CSR is sent: a later cancel
//     is too late and ignored.
//   - renew: the old key and certificate stay; they are removed only by the last step,
//     after the new certificate is written and verified. A new key (and a new certificate,
//     once written) stays beside them, reported as for issue.
//   - install_certificate: stopped before write_certificate, nothing is written; after it,
//     the certificate and its chain stay (outputs.certificate_serial).
//   - server_keygen, recover_key: stopped before import_key, the token is untouched; after
//     it, the key stays under the job's CKA_ID (a retry finds it), then the certificate
//     once written, as for install_certificate.
//   - register_certificate reads only.
//   - unblock_pin: stopped before reset_pin, the token is untouched; after it, the token
//     has the new user PIN, which the result carries sealed.
//   - wipe: stopped before the wipe step, the token is untouched; a wipe step started is
//     finished first, so a job_cancelled result after initialising means the token is
//     wiped (its SO PIN kept, no user PIN).
//   - inventory writes nothing.
//
// One exception to "the step in flight finishes": a step cut short by a crash or shutdown
// is not run again when the cancel is already in the journal as the job resumes; its
// effect on the token is then unknown and not reported.
package executor

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// DefaultPollInterval is how often a job waiting for its token looks at the slots.
const DefaultPollInterval = time.Second

// Opener opens the PINs a dispatch carries, sealed to the agent's key; *keys.Pair is one.
type Opener interface {
	Open(s *protocol.Sealed, b seal.Binding) ([]byte, error)
}

// Config is what an Executor works with.
type Config struct {
	// AgentID is this agent's ID: the sender of every message it makes.
	AgentID string
	Journal *journal.Journal
	// Keys opens the PINs of dispatches.
	Keys   Opener
	Tokens Tokens
	// FactoryPINs looks up the factory PINs of a token's model, for dispatches with
	// factory_pins (nil: such jobs fail with factory_pins_unknown). It also lets the
	// executor refuse to issue onto a token whose user PIN is still the factory one.
	FactoryPINs FactoryPINs
	// Inventory lists the tokens this agent sees, for inventory jobs (see NewInventory).
	Inventory func(ctx context.Context) ([]protocol.Token, error)
	// PollInterval is how often a job waiting for a token polls; 0 means
	// DefaultPollInterval.
	PollInterval time.Duration
	// Now is the clock deadlines are judged by; nil means time.Now.
	Now func() time.Time
	Log zerolog.Logger
	// Observer hears how attempts end and how long token steps take; nil: nobody.
	Observer Observer
}

// Executor runs jobs. Its methods are safe for concurrent use.
type Executor struct {
	cfg   Config
	log   zerolog.Logger
	locks *locks

	mu sync.Mutex // guards the fields below
	// runCtx is Run's context while Run runs; nil before and after.
	runCtx  context.Context
	running bool
	// runners are the job goroutines, by job ID.
	runners map[string]*runner
	// queued are jobs kicked while Run was not running, started when it runs.
	queued map[string]bool
	// active is the last step each executing job reported, for heartbeats.
	active map[string]Activity
	wg     sync.WaitGroup
}

// runner is the goroutine of one job.
type runner struct {
	// kick asks the runner to look at the journal again when its current pass is over.
	kick chan struct{}
	// wake interrupts a job waiting for a token or a lock, to look at the journal now (a
	// cancel or a newer attempt came).
	wake chan struct{}
}

// Activity is a job being executed and the last step it reported.
type Activity struct {
	Job  protocol.JobRef
	Step protocol.Step
}

// New checks the configuration and makes an Executor; call Run to start executing.
func New(cfg Config) (*Executor, error) {
	switch {
	case protocol.ValidateAgentID(cfg.AgentID) != nil:
		return nil, fmt.Errorf("executor: agent ID: %w", protocol.ValidateAgentID(cfg.AgentID))
	case cfg.Journal == nil:
		return nil, errors.New("executor: a journal is required")
	case cfg.Keys == nil:
		return nil, errors.New("executor: the agent's key pair is required")
	case cfg.Tokens == nil:
		return nil, errors.New("executor: a token source is required")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return &Executor{
		cfg:     cfg,
		log:     cfg.Log.With().Str("component", "executor").Logger(),
		locks:   newLocks(),
		runners: map[string]*runner{},
		queued:  map[string]bool{},
		active:  map[string]Activity{},
	}, nil
}

// Submit journals a dispatch and starts (or, for a redelivered one, leaves alone) its job.
// Ack the delivery once it returns without error, whatever the disposition: a duplicate or
// stale dispatch is safely dropped. An error means nothing was journalled: do not ack (a
// *protocol.Error with a client code means the message itself is bad: dead-letter it).
func (e *Executor) Submit(ctx context.Context, env *protocol.Envelope) (journal.Receipt, error) {
	if err := e.checkEnvelope(env, protocol.TypeDispatch); err != nil {
		return journal.Receipt{}, err
	}
	rc, err := e.cfg.Journal.RecordDispatch(ctx, env)
	if err != nil {
		return rc, err
	}
	e.logReceipt(env, rc)
	if rc.Disposition == journal.Accepted {
		e.kick(env.JobID, len(rc.Superseded) > 0)
	}
	return rc, nil
}

// DeliverCertificate journals the certificate the coordinator signed for an attempt's CSR;
// the job continues at installing. d is env's body as the caller decoded it. Ack as for
// Submit.
func (e *Executor) DeliverCertificate(ctx context.Context, env *protocol.Envelope, d protocol.CertificateDelivery) (journal.Receipt, error) {
	if err := e.checkEnvelope(env, protocol.TypeCertificate); err != nil {
		return journal.Receipt{}, err
	}
	body, err := protocol.DecodeBody[protocol.CertificateDelivery](env)
	if err != nil {
		return journal.Receipt{}, err
	}
	if !reflect.DeepEqual(body, d) {
		return journal.Receipt{}, protocol.NewError(protocol.CodeBadRequest, "the delivery given is not the envelope's body")
	}
	// Issue and renew write the certificate next: its step begins in the delivery's
	// commit, before any token write as always, one commit fewer.
	rc, err := e.cfg.Journal.RecordCertificateAndBegin(ctx, env, stepWriteCert)
	if err != nil {
		return rc, err
	}
	e.logReceipt(env, rc)
	if rc.Disposition == journal.Accepted {
		e.kick(env.JobID, false)
	}
	return rc, nil
}

// Cancel journals a cancel. The job stops at its next safe point (never in the middle of
// a token write) and reports a failed result with job_cancelled. Ack as for Submit.
func (e *Executor) Cancel(ctx context.Context, env *protocol.Envelope) (journal.Receipt, error) {
	if err := e.checkEnvelope(env, protocol.TypeCancel); err != nil {
		return journal.Receipt{}, err
	}
	rc, err := e.cfg.Journal.RecordCancel(ctx, env)
	if err != nil {
		return rc, err
	}
	e.logReceipt(env, rc)
	if rc.Disposition == journal.Accepted {
		e.kick(env.JobID, true)
	}
	return rc, nil
}

// Resume continues every unfinished job of the journal: call it once at start-up, before
// or after Run. It returns how many jobs it found.
func (e *Executor) Resume(ctx context.Context) (int, error) {
	jobs, err := e.cfg.Journal.Pending(ctx)
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	for _, j := range jobs {
		if seen[j.Ref.JobID] {
			continue
		}
		seen[j.Ref.JobID] = true
		e.log.Info().Str("job", j.Ref.JobID).Uint32("attempt", j.Ref.Attempt).Str("state", string(j.State)).
			Str("step", j.Step).Str("step_status", string(j.StepStatus)).Msg("resuming job")
		e.kick(j.Ref.JobID, false)
	}
	return len(seen), nil
}

// Run executes jobs until ctx ends, then waits for every job to reach a safe point and
// returns. Jobs submitted while Run is not running are journalled and start when it runs.
func (e *Executor) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.running {
		e.mu.Unlock()
		return errors.New("executor: Run is already running")
	}
	e.running, e.runCtx = true, ctx
	for id := range e.queued {
		e.startLocked(id)
	}
	clear(e.queued)
	e.mu.Unlock()

	<-ctx.Done()

	e.mu.Lock()
	e.runCtx = nil
	e.mu.Unlock()
	e.wg.Wait()
	e.mu.Lock()
	e.running = false
	e.mu.Unlock()
	return nil
}

// Active lists the jobs being executed now with the last step each reported: what a
// heartbeat carries.
func (e *Executor) Active() []Activity {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Activity, 0, len(e.active))
	for _, a := range e.active {
		out = append(out, a)
	}
	return out
}

func (e *Executor) setActive(ref protocol.JobRef, step protocol.Step) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if step == "" {
		if a, ok := e.active[ref.JobID]; ok {
			step = a.Step
		}
	}
	e.active[ref.JobID] = Activity{Job: ref, Step: step}
}

func (e *Executor) clearActive(jobID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.active, jobID)
}

func (e *Executor) checkEnvelope(env *protocol.Envelope, want protocol.MessageType) error {
	if env == nil {
		return protocol.NewError(protocol.CodeBadRequest, "no envelope")
	}
	if env.Type != want {
		return protocol.NewError(protocol.CodeBadRequest, "a %s message, want %s", env.Type, want)
	}
	if env.AgentID != e.cfg.AgentID {
		return protocol.NewError(protocol.CodeBadRequest, "message for agent %q, this is %q", env.AgentID, e.cfg.AgentID)
	}
	return nil
}

func (e *Executor) logReceipt(env *protocol.Envelope, rc journal.Receipt) {
	level := zerolog.InfoLevel
	if rc.Disposition != journal.Accepted {
		level = zerolog.WarnLevel
	}
	e.log.WithLevel(level).Str("message_id", env.ID).Str("type", string(env.Type)).Str("job", env.JobID).Uint32("attempt", env.Attempt).
		Str("disposition", string(rc.Disposition)).Str("reason", rc.Reason).Int("superseded", len(rc.Superseded)).
		Msg("job message journalled")
}

// kick makes the job's runner look at the journal, starting one if there is none. wake
// also interrupts a wait of the running pass.
func (e *Executor) kick(jobID string, wake bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.runCtx == nil {
		e.queued[jobID] = true
		return
	}
	r := e.startLocked(jobID)
	select {
	case r.kick <- struct{}{}:
	default:
	}
	if wake {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

func (e *Executor) startLocked(jobID string) *runner {
	if r := e.runners[jobID]; r != nil {
		return r
	}
	r := &runner{kick: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
	r.kick <- struct{}{}
	e.runners[jobID] = r
	e.wg.Add(1)
	go e.runJob(e.runCtx, jobID, r)
	return r
}

// runJob is a job's goroutine: one pass per kick, until nothing is left to do.
func (e *Executor) runJob(ctx context.Context, jobID string, r *runner) {
	defer e.wg.Done()
	defer e.clearActive(jobID)
	for {
		e.mu.Lock()
		select {
		case <-r.kick:
		default:
			// No kick since the last pass: this runner is done. Deciding under the lock
			// means a kick after this point starts a new runner.
			delete(e.runners, jobID)
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		if ctx.Err() != nil {
			e.mu.Lock()
			delete(e.runners, jobID)
			e.queued[jobID] = true // journalled; the next Run or Resume takes it up
			e.mu.Unlock()
			return
		}
		select { // a wake for an earlier pass is stale now: this pass reads the journal
		case <-r.wake:
		default:
		}
		job, err := e.cfg.Journal.Latest(ctx, jobID)
		if err != nil {
			e.log.Error().Err(err).Str("job", jobID).Msg("reading the job from the journal")
			continue
		}
		e.execute(ctx, r, job)
	}
}
