package executor

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"time"
	"unicode"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// Ways a pass over a job ends without a result.
var (
	// errParked: the job waits for its certificate; no goroutine needs to wait with it.
	errParked = errors.New("parked until the certificate is delivered")
	// errCancelled: a cancel was journalled; the job ends with job_cancelled.
	errCancelled = errors.New("cancelled")
)

// journalError is a failure to write the journal: nothing can be recorded, so the job
// stops where it is and is resumed on the next start.
type journalError struct{ err error }

func (e journalError) Error() string { return "journal: " + e.err.Error() }
func (e journalError) Unwrap() error { return e.err }

// run is one pass of the executor over one job attempt.
type run struct {
	e   *Executor
	rn  *runner
	log zerolog.Logger

	job   journal.Job // as last read from the journal
	env   *protocol.Envelope
	d     protocol.JobDispatch
	sel   selector
	keyID []byte // the dispatch's CKA_ID, decoded

	// The token, once found: the slot it was found in, its handle (nil while a blank
	// token is not initialised) and serial, and the lock held on it.
	slot     pkcs11.Slot
	tok      *pkcs11.Token
	serial   string
	release  func()
	loggedIn bool
	// pinsSent: this pass had initialise send the token the new SO PIN (change its SO
	// PIN, or initialise a blank token with it), whatever came of it, or found the token
	// had it. pinsAbsent: this pass knows the token does not have the new PINs (it chose
	// them, or marked them sent itself, or the token refused them). resolvePINs goes by
	// both.
	pinsSent, pinsAbsent bool
	// waited says this pass had to wait for the token (so token_found is reported again).
	waited bool

	// secrets are the job's secrets from the journal, kept in step with it.
	secrets map[string]journal.Secret
	// held is a change not journalled yet: it goes with the next one (see done).
	held *journal.Change
}

func (e *Executor) execute(ctx context.Context, rn *runner, job journal.Job) {
	if job.State.Finished() {
		return
	}
	r := &run{e: e, rn: rn, job: job, log: e.log.With().Str("job", job.Ref.JobID).Uint32("attempt", job.Ref.Attempt).
		Str("kind", string(job.Kind)).Logger()}
	defer r.close()
	err := r.prepare(ctx)
	if err == nil {
		e.setActive(job.Ref, "")
		err = r.drive(ctx)
	}
	r.settle(ctx, err)
}

// prepare decodes what the journal holds for the attempt.
func (r *run) prepare(ctx context.Context) error {
	if r.job.DispatchEnvelope == nil {
		// A cancel tombstone: there is no job to run or report.
		return journal.ErrFinished
	}
	env, d, err := r.job.Dispatch()
	if err != nil {
		return err
	}
	r.env, r.d = env, d
	if r.sel, err = newSelector(d.Token); err != nil {
		return err
	}
	if d.Key != nil {
		if r.keyID, err = hex.DecodeString(d.Key.ID); err != nil {
			return protocol.NewError(protocol.CodeBadRequest, "key.id: %v", err)
		}
	}
	secrets, err := r.e.cfg.Journal.Secrets(ctx, r.job.Ref.JobID)
	if err != nil {
		return journalError{err}
	}
	r.secrets = map[string]journal.Secret{}
	for _, s := range secrets {
		r.secrets[s.Name] = s
	}
	return nil
}

func (r *run) close() {
	if r.tok != nil {
		_ = r.tok.Close() // logs the token out; nothing of ours is lost if it fails
		r.tok = nil
	}
	if r.release != nil {
		r.release()
	}
}

// drive runs the job's steps from where the journal says it is.
func (r *run) drive(ctx context.Context) error {
	if err := r.checkpoint(ctx); err != nil {
		return err
	}
	steps := stepsFor(r.job.Kind, r.d)
	start, resumed := resumePoint(steps, r.job)
	if start < len(steps) && steps[start].needsCertificate && !r.hasCertificate() {
		return errParked
	}
	if r.needsToken() {
		if err := r.acquire(ctx); err != nil {
			return err
		}
	} else if r.job.State == journal.StateReceived {
		if err := r.update(ctx, journal.Change{State: journal.StateRunning}); err != nil {
			return err
		}
	}
	for i := start; i < len(steps); i++ {
		s := steps[i]
		if err := r.checkpoint(ctx); err != nil {
			return err
		}
		if s.needsCertificate && !r.hasCertificate() {
			return errParked
		}
		r.log.Debug().Str("step", s.name).Bool("resumed", resumed && i == start).Msg("step")
		began := time.Now()
		if err := s.run(r, ctx, resumed && i == start); err != nil {
			return err
		}
		r.e.cfg.Observer.TokenOperation(s.name, r.model(), time.Since(began))
		if r.job.State.Finished() {
			return nil
		}
	}
	return r.succeed(ctx)
}

// resumePoint finds the first step to run and whether it was interrupted.
func resumePoint(steps []step, job journal.Job) (int, bool) {
	for i, s := range steps {
		if s.name == job.Step {
			if job.StepStatus == journal.StepDone {
				return i + 1, false
			}
			return i, true
		}
	}
	return 0, false
}

func (r *run) needsToken() bool {
	return r.job.Kind != protocol.KindInventory || !r.sel.empty()
}

func (r *run) hasCertificate() bool {
	return r.job.CertificateEnvelope != nil
}

// preCSR reports whether the job is still before its CSR: the deadline bounds that part.
// A certificate that arrives after the deadline is still installed when the token is
// there; waiting for an absent token stays bounded by the deadline.
func (r *run) preCSR() bool {
	return r.job.State == journal.StateReceived || r.job.State == journal.StateRunning
}

// checkpoint is a safe point: between steps and while waiting. It stops the pass on
// shutdown, on a newer attempt, on a cancel and at the deadline.
func (r *run) checkpoint(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	job, err := r.e.cfg.Journal.Job(ctx, r.job.Ref)
	if err != nil {
		return journalError{err}
	}
	r.job = job
	r.overlay()
	switch {
	case job.State.Finished():
		return journal.ErrFinished
	case job.CancelEnvelope != nil:
		return errCancelled
	case r.preCSR() && !r.e.cfg.Now().Before(r.d.Deadline):
		return r.deadlineError()
	}
	return nil
}

func (r *run) deadlineError() error {
	return protocol.NewError(protocol.CodeDeadlineExceeded, "the attempt's deadline %s passed before the job was done",
		r.d.Deadline.UTC().Format(time.RFC3339))
}

// settle turns how the pass ended into the journal's terms.
func (r *run) settle(ctx context.Context, err error) {
	if err != nil {
		r.flushHeld(ctx)
	}
	var je journalError
	switch {
	case err == nil:
		if r.job.State.Finished() {
			r.log.Info().Str("state", string(r.job.State)).Msg("job finished")
		}
	case errors.Is(err, errParked):
		r.log.Info().Msg("job parked until its certificate is delivered")
	case errors.Is(err, journal.ErrFinished):
		r.log.Info().Msg("job attempt finished elsewhere (superseded or cancelled); stopping")
	case errors.As(err, &je):
		r.log.Error().Err(err).Msg("cannot write the journal; the job resumes on the next start")
	case ctx.Err() != nil:
		r.log.Info().Str("step", r.job.Step).Str("step_status", string(r.job.StepStatus)).Msg("job parked for shutdown")
	case errors.Is(err, errCancelled):
		r.resolvePINs(ctx)
		r.finishCancelled(ctx)
	default:
		r.resolvePINs(ctx)
		r.fail(ctx, err)
	}
}

// resolvePINs finds out, before the attempt ends, whether the token took the PINs an
// initialise journalled but never recorded as set. The attempt may stop between the token
// taking its new SO PIN and the journal saying so: a failure later in the step (the user
// PIN refused after the SO PIN changed), or a crash there followed by a cancel or the
// deadline before the step could resume. Its result would leave those PINs out, the
// coordinator would go on with the SO PIN the token no longer has, and every later job on
// the token would fail with token.pin_incorrect (a token that locks after wrong tries
// locks). The check is the resumed step's own: the new SO PIN setting the new user PIN. If
// the token takes it, both are journalled as set and reported. If it refuses the SO PIN,
// the token still has the one the coordinator knows, at the cost of one wrong try; the
// journal then takes back the PINs' sent mark, so that no retry tries them again before
// it sends them. PINs never sent are not checked: this pass stopped before the call that
// sets them (or the token refused them in this pass and nothing was sent since), and a
// check would only spend one of the token's tries; the mark is taken back then too. A
// token that is not there, or that another job holds, stays unresolved: the journal keeps
// the PINs, marked, for a retry of the job. The check runs whatever step the attempt
// stopped at: PINs marked sent by an earlier attempt that was superseded before it could
// say the token took them are checked too when this attempt ends before its own
// initialise (cancelled, or failed by the coordinator, while waiting): a cancelled job's
// PINs leave the journal, and the coordinator would keep the SO PIN the token no longer
// has (a wipe with it then spends the SO PIN's tries until the token locks).
func (r *run) resolvePINs(ctx context.Context) {
	so, user := r.secrets[secretSOPIN], r.secrets[secretUserPIN]
	if !r.d.Initialise || so.Value == "" || user.Value == "" || (so.Applied && user.Applied) || !so.Sent {
		return
	}
	if r.pinsAbsent && !r.pinsSent {
		// This pass stopped before sending the token the PINs (or after it refused
		// them): the token still has those the coordinator knows.
		r.unsend(ctx)
		return
	}
	tok := r.tok
	if tok == nil {
		// This pass never had the token: it stopped (cancelled, past its deadline) before
		// resuming the step a crash interrupted, or before the initialise of a retry whose
		// superseded attempt sent the PINs; check as the resumed step would.
		var done func()
		if tok, done = r.openIdle(ctx); tok == nil {
			return
		}
		defer done()
	}
	r.loggedIn = false
	if err := tok.InitUserPIN(ctx, so.Value, user.Value); err != nil {
		r.log.Info().Str("code", string(pkcs11.CodeOf(err))).
			Msg("the token does not take the PINs the interrupted initialise chose; it keeps those the coordinator knows")
		if isCode(err, pkcs11.CodePINIncorrect) {
			r.unsend(ctx)
		}
		return
	}
	var c journal.Change
	if r.job.Step != stepInitialise {
		// An earlier attempt set them and ended before saying so; this one stopped before
		// its own initialise. Reported as this attempt's initialising step: the coordinator
		// takes the PINs of a result only from an attempt that re-initialised its token.
		var err error
		if c, err = r.progressChange(protocol.Progress{Step: protocol.StepInitialising,
			Detail: "the token has the PINs an earlier attempt of this job set"}); err != nil {
			r.log.Error().Err(err).Msg("reporting the PINs an earlier attempt set")
			return
		}
	}
	c.Applied = []string{secretSOPIN, secretUserPIN}
	if err := r.update(ctx, c); err != nil {
		r.log.Error().Err(err).Msg("the token has the PINs the interrupted initialise chose, but the journal could not record it")
		return
	}
	r.log.Warn().Msg("the token has the PINs the interrupted initialise chose: the result reports them")
}

// unsend takes back the sent mark of the initialise's PINs: the token does not have them.
func (r *run) unsend(ctx context.Context) {
	if err := r.update(ctx, journal.Change{Unsent: []string{secretSOPIN, secretUserPIN}}); err != nil {
		r.log.Error().Err(err).Msg("journalling that the token does not have the new PINs; a retry tries them once")
	}
}

// openIdle opens the job's token for resolvePINs when it is there and no other job holds
// it, without waiting; done closes it and gives its lock back. nil when it cannot.
func (r *run) openIdle(ctx context.Context) (tok *pkcs11.Token, done func()) {
	serial := r.serial
	if serial == "" {
		serial = r.job.TokenSerial
	}
	if serial == "" {
		return nil, nil
	}
	release, ok := r.e.locks.tryAcquire(serial)
	if !ok {
		r.log.Info().Msg("another job holds the token: the PINs of the interrupted initialise stay unresolved")
		return nil, nil
	}
	slots, err := r.e.cfg.Tokens.Present(ctx)
	present := false
	for _, sl := range slots {
		present = present || (sl.Token != nil && sl.Token.Serial == serial && sl.Token.Initialized)
	}
	if err != nil || !present {
		release()
		r.log.Info().Msg("the token is not there: the PINs of the interrupted initialise stay unresolved")
		return nil, nil
	}
	if tok, err = r.e.cfg.Tokens.Open(ctx, serial); err != nil {
		release()
		r.log.Info().Err(err).Msg("opening the token failed: the PINs of the interrupted initialise stay unresolved")
		return nil, nil
	}
	return tok, func() {
		_ = tok.Close()
		release()
	}
}

// fail ends the attempt with a failed result carrying what the job left behind.
func (r *run) fail(ctx context.Context, cause error) {
	werr := wireError(cause)
	r.log.Warn().Str("code", string(werr.Code)).Bool("retryable", werr.Retryable).Str("step", r.job.Step).
		Str("error", werr.Message).Msg("job failed")
	res := protocol.Result{Outcome: protocol.OutcomeFailed, Error: werr, Outputs: r.outputs()}
	if err := r.finish(ctx, journal.StateFailed, res); err != nil {
		r.log.Error().Err(err).Msg("recording the failure")
	}
}

// finishCancelled ends an attempt the coordinator stopped: a failed result carrying
// job_cancelled whatever the coordinator's state, since the agent did not fail; the
// message says what the coordinator did. A job the coordinator failed stays failed in the
// journal too, not cancelled: the coordinator may retry it (failed → approved), and the
// retry needs the PINs this attempt generated, which the journal deletes with a
// cancelled job.
func (r *run) finishCancelled(ctx context.Context) {
	c, err := r.job.Cancel()
	if err != nil || c == nil {
		r.log.Error().Err(err).Msg("reading the journalled cancel; reporting a plain cancel")
		c = &protocol.Cancel{State: protocol.StateCancelled}
	}
	msg := clean(cancelMessage(*c))
	state, level := journal.StateCancelled, zerolog.InfoLevel
	if c.State == protocol.StateFailed {
		state, level = journal.StateFailed, zerolog.WarnLevel
	}
	r.log.WithLevel(level).Str("coordinator_state", string(c.State)).Str("step", r.job.Step).
		Str("step_status", string(r.job.StepStatus)).Msg(msg)
	res := protocol.Result{Outcome: protocol.OutcomeFailed, Error: protocol.NewError(protocol.CodeJobCancelled, "%s", msg),
		Outputs: r.outputs()}
	if err := r.finish(ctx, state, res); err != nil {
		r.log.Error().Err(err).Msg("recording the cancellation")
	}
}

// cancelMessage says what the coordinator did to the job, in the words of the agent's
// log and of its result.
func cancelMessage(c protocol.Cancel) string {
	var msg string
	switch c.State {
	case protocol.StateFailed:
		msg = "the coordinator failed the job"
	case protocol.StateRejected:
		msg = "the coordinator rejected the job"
	case protocol.StateExpired:
		msg = "the job expired on the coordinator"
	case protocol.StateSuperseded:
		msg = "the coordinator superseded the job with a newer one"
	default:
		msg = "the coordinator cancelled the job"
	}
	if c.Reason != "" {
		msg += ": " + c.Reason
	}
	return msg
}

// succeed ends the attempt with a successful result.
func (r *run) succeed(ctx context.Context) error {
	return r.finish(ctx, journal.StateDone, protocol.Result{Outcome: protocol.OutcomeSucceeded, Outputs: r.outputs()})
}

func (r *run) finish(ctx context.Context, state journal.State, res protocol.Result) error {
	env, err := r.message(res)
	if err != nil {
		return err
	}
	return r.update(ctx, journal.Change{State: state, Result: env})
}

// outputs is what the attempt leaves behind, reported with success and failure alike: the
// PINs the token now has above all, sealed to the coordinator's result key.
func (r *run) outputs() *protocol.Outputs {
	o := &protocol.Outputs{TokenSerial: r.serial}
	if o.TokenSerial == "" {
		o.TokenSerial = r.job.TokenSerial
	}
	if r.job.KeyID != "" {
		o.KeyID = r.job.KeyID
	} else if r.d.Key != nil && r.job.Kind == protocol.KindInstallCertificate {
		o.KeyID = r.d.Key.ID
	}
	o.CertificateSerial = r.certificateSerial()
	pins, err := r.sealedPINs()
	if err != nil {
		r.log.Error().Err(err).Msg("sealing the PINs for the coordinator")
	}
	o.PINs = pins
	if o.TokenSerial == "" && o.KeyID == "" && o.CertificateSerial == "" && o.PINs == nil {
		return nil
	}
	return o
}

// sealedPINs seals the job's applied secrets to the dispatch's result key. Secrets not
// applied are left out: the token may not have them, and a coordinator that believed it
// did would lose the PIN the token really has. They stay in the journal for a retry of
// the job to resolve.
func (r *run) sealedPINs() (*protocol.SealedPINs, error) {
	user, so := r.secrets[secretUserPIN], r.secrets[secretSOPIN]
	if !user.Applied && !so.Applied {
		return nil, nil
	}
	if len(r.d.ResultKey) == 0 {
		return nil, errors.New("the job set PINs but its dispatch has no result key")
	}
	to, err := seal.ParsePublicKey(r.d.ResultKey)
	if err != nil {
		return nil, err
	}
	var out protocol.SealedPINs
	b := seal.Binding{JobID: r.job.Ref.JobID, Attempt: r.job.Ref.Attempt}
	if user.Applied {
		b.Purpose = protocol.PurposeUserPIN
		if out.UserPIN, err = seal.Seal(to, []byte(user.Value), b); err != nil {
			return nil, err
		}
	}
	if so.Applied {
		b.Purpose = protocol.PurposeSOPIN
		if out.SOPIN, err = seal.Seal(to, []byte(so.Value), b); err != nil {
			return nil, err
		}
	}
	return &out, nil
}

func sealBinding(ref protocol.JobRef, purpose protocol.SealPurpose) seal.Binding {
	return seal.Binding{JobID: ref.JobID, Attempt: ref.Attempt, Purpose: purpose}
}

// message wraps a body for the coordinator, for this attempt.
func (r *run) message(body protocol.Body) (*protocol.Envelope, error) {
	return protocol.NewEnvelope(r.e.cfg.AgentID, r.job.Ref, body)
}

// progress makes a progress message for a step.
func (r *run) progress(p protocol.Progress) (*protocol.Envelope, error) {
	if p.TokenSerial == "" {
		p.TokenSerial = r.serial
	}
	p.Detail = clean(p.Detail)
	return r.message(p)
}

// update writes the held change and c to the journal, in one commit, and reads the
// attempt back. A write after the attempt finished elsewhere fails with
// journal.ErrFinished; any other failure is a journalError. Writes are not cut short by
// shutdown: what the token did must be recorded.
func (r *run) update(ctx context.Context, c journal.Change) error {
	ctx = context.WithoutCancel(ctx)
	if r.held != nil {
		// Written now or never: a failed write stops the pass, and the next start
		// finds the step started and does it again.
		c, r.held = merge(*r.held, c), nil
	}
	if err := r.e.cfg.Journal.Update(ctx, r.job.Ref, c); err != nil {
		if errors.Is(err, journal.ErrFinished) {
			return err
		}
		return journalError{err}
	}
	for _, s := range c.Secrets {
		r.secrets[s.Name] = s
	}
	for _, n := range c.Unsent {
		s := r.secrets[n]
		s.Sent = s.Applied
		r.secrets[n] = s
	}
	for _, n := range c.Sent {
		s := r.secrets[n]
		s.Sent = true
		r.secrets[n] = s
	}
	for _, n := range c.Applied {
		s := r.secrets[n]
		s.Applied, s.Sent = true, true
		r.secrets[n] = s
	}
	for _, env := range c.Outbox {
		if env.Type == protocol.TypeProgress {
			if p, err := protocol.DecodeBody[protocol.Progress](env); err == nil {
				r.e.setActive(r.job.Ref, p.Step)
			}
		}
	}
	if c.State.Finished() {
		r.e.cfg.Observer.JobFinished(string(r.job.Kind), outcome(c.State))
	}
	job, err := r.e.cfg.Journal.Job(ctx, r.job.Ref)
	if err != nil {
		return journalError{err}
	}
	r.job = job
	return nil
}

// wireError turns any error into the protocol's form: codes of the protocol and of the
// PKCS#11 driver (the same strings) pass through, anything else is internal.
func wireError(err error) *protocol.Error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		out := *pe
		out.Message = clean(out.Message)
		if out.Message == "" {
			out.Message = string(out.Code)
		}
		return &out
	}
	var ke *pkcs11.Error
	if errors.As(err, &ke) {
		code := protocol.ErrorCode(ke.Code)
		e := protocol.NewError(code, "%s", clean(err.Error()))
		e.Retryable = code.Retryable() || pkcs11.Retryable(err)
		return e
	}
	return protocol.NewError(protocol.CodeInternal, "%s", clean(err.Error()))
}

// clean makes text fit a message field: no control characters, at most MaxTextLen bytes.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	return protocol.TruncateText(s, protocol.MaxTextLen)
}
