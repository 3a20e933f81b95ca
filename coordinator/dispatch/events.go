package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// jobEvent is an agent's report on one of its jobs, decoded, with what the coordinator
// knows of the job and the attempt it reports on.
type jobEvent struct {
	del  *amqp.Delivery
	job  store.Job
	att  store.JobAttempt
	kind jobs.EventKind
	step jobs.Step // of a progress event

	progress protocol.Progress
	csr      protocol.CSRSubmission
	result   protocol.Result
	outputs  protocol.Outputs // of a result; zero when it has none
}

// serial is the token the event names, if any.
func (e *jobEvent) serial() string {
	switch e.kind {
	case jobs.EventProgress:
		return e.progress.TokenSerial
	case jobs.EventCSR:
		return e.csr.TokenSerial
	}
	return e.outputs.TokenSerial
}

// onJobEvent handles progress, CSR and result. The job must target the sending agent,
// the event must be of the job's current attempt, the event table (jobs.AcceptEvent)
// must take it in the job's kind and state, and any token it names must be the job's
// own. Everything else is refused: dead-lettered with its code, audited, and nothing
// stored changes.
func (d *Dispatcher) onJobEvent(ctx context.Context, jt *service.JobTx, del *amqp.Delivery) (string, verdict, error) {
	env := del.Envelope
	j, err := jt.GetJob(ctx, env.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return "", d.refuse(del, false, protocol.CodeBadRequest, "no job %s", env.JobID), nil
	}
	if err != nil {
		return "", verdict{}, err
	}
	if j.AgentID != env.AgentID {
		return "", d.refuse(del, false, protocol.CodeForgedSender, "job %s targets agent %s, not %s", j.ID, j.AgentID, env.AgentID), nil
	}
	if int(env.Attempt) != j.Attempt {
		return d.stale(ctx, jt, del, j)
	}
	e := &jobEvent{del: del, job: j}
	if v, err := d.decodeJobEvent(e); err != nil || v.reject != nil {
		return "", v, err
	}
	if len(e.outputs.Certificate) > 0 && j.Kind != jobs.KindRegisterCertificate {
		// Only a register_certificate job reads a certificate back for the coordinator.
		return "", d.refuse(del, false, protocol.CodeEventNotAllowed, "a %s job reports no certificate it read; only register_certificate does", j.Kind), nil
	}
	if e.kind == jobs.EventSucceeded && j.Kind == jobs.KindRegisterCertificate && len(e.outputs.Certificate) == 0 {
		return "", d.refuse(del, false, protocol.CodeEventNotAllowed, "a register_certificate job's success carries the certificate it read (outputs.certificate)"), nil
	}
	if e.att, err = jt.GetJobAttempt(ctx, j.ID, j.Attempt); err != nil {
		return "", verdict{}, err
	}
	eff, err := jobs.AcceptEvent(j.Kind, j.State, e.att.DispatchMessageID != "", j.Progress, e.kind, e.step)
	if err != nil {
		var je *jobs.Error
		if !errors.As(err, &je) {
			return "", verdict{}, err
		}
		return "", d.refuse(del, false, tableCode(je.Code), "%s", je.Msg), nil
	}
	if v, err := d.claimToken(ctx, jt, e); err != nil || v.reject != nil {
		return "", v, err
	}
	if eff.Start {
		if e.job, err = d.markDispatched(ctx, jt, e.job, e.job.Attempt, "the agent reported on the attempt before the broker's confirmation was recorded"); err != nil {
			return "", verdict{}, err
		}
		if e.job, err = jt.Transition(ctx, e.job, jobs.StateRunning, store.JobChange{Actor: agentActor(j.AgentID), Reason: "the agent started the job"}); err != nil {
			return "", verdict{}, err
		}
	}
	var result string
	var v verdict
	switch e.kind {
	case jobs.EventProgress:
		result, v, err = d.onProgress(ctx, jt, e, eff)
	case jobs.EventCSR:
		result, v, err = d.onCSR(ctx, jt, e)
	default:
		result, v, err = d.onResult(ctx, jt, e, eff)
	}
	if err == nil {
		v.seen = env.AgentID
	}
	return result, v, err
}

// tableCode is the wire code of an event table refusal.
func tableCode(c jobs.Code) protocol.ErrorCode {
	switch c {
	case jobs.CodeNotDispatched:
		return protocol.CodeJobNotDispatched
	case jobs.CodeJobEnded:
		return protocol.CodeJobEnded
	}
	return protocol.CodeEventNotAllowed // event_not_allowed, illegal_step
}

// stale records an event of an older attempt: fenced off, it changes nothing (a result is
// audited).
func (d *Dispatcher) stale(ctx context.Context, jt *service.JobTx, del *amqp.Delivery, j store.Job) (string, verdict, error) {
	env := del.Envelope
	reason := fmt.Sprintf("%s of attempt %d; the job is at attempt %d", env.Type, env.Attempt, j.Attempt)
	d.log.Info().Str("job", j.ID).Str("message_id", env.ID).Str("reason", reason).Msg("stale event ignored")
	if env.Type == protocol.TypeResult {
		if err := jt.Audit(ctx, audit.Entry{Actor: agentActor(env.AgentID), Action: audit.ActionJobResultStale, JobID: j.ID,
			Reason: reason, Details: audit.Details("attempt", int(env.Attempt), "current_attempt", j.Attempt, "message_id", env.ID)}); err != nil {
			return "", verdict{}, err
		}
	}
	return "stale: " + reason, verdict{}, nil
}

// decodeJobEvent decodes the event's body and names it for the event table.
func (d *Dispatcher) decodeJobEvent(e *jobEvent) (verdict, error) {
	env := e.del.Envelope
	var err error
	switch env.Type {
	case protocol.TypeProgress:
		e.kind = jobs.EventProgress
		if e.progress, err = protocol.DecodeBody[protocol.Progress](env); err == nil {
			e.step = e.progress.Step
		}
	case protocol.TypeCSR:
		e.kind = jobs.EventCSR
		e.csr, err = protocol.DecodeBody[protocol.CSRSubmission](env)
	default:
		if e.result, err = protocol.DecodeBody[protocol.Result](env); err != nil {
			break
		}
		if e.result.Outputs != nil {
			e.outputs = *e.result.Outputs
		}
		switch {
		case e.result.Outcome == protocol.OutcomeSucceeded:
			e.kind = jobs.EventSucceeded
		case e.result.Error != nil && e.result.Error.Code == protocol.CodeJobCancelled:
			e.kind = jobs.EventAcknowledged
		default:
			e.kind = jobs.EventFailed
		}
	}
	if err != nil {
		return d.refuse(e.del, false, protocol.CodeOf(err), "%v", err), nil
	}
	return verdict{}, nil
}

// claimToken checks that a token the event names is the job's own: the one the job
// targets, else the one the attempt already works on, else one the agent reported
// holding (or a token no agent holds, such as a blank token it has just initialised).
// The token then becomes the attempt's: its later reports may name no other.
func (d *Dispatcher) claimToken(ctx context.Context, jt *service.JobTx, e *jobEvent) (verdict, error) {
	serial := e.serial()
	if serial == "" {
		return verdict{}, nil
	}
	j := e.job
	switch {
	case j.TokenSerial != "" && serial != j.TokenSerial:
		return d.refuse(e.del, false, protocol.CodeTokenNotOwned, "job %s is for token %s; the %s names token %s", j.ID, j.TokenSerial, e.kind, serial), nil
	case e.att.TokenSerial != "" && serial != e.att.TokenSerial:
		return d.refuse(e.del, false, protocol.CodeTokenNotOwned, "attempt %d of job %s works on token %s; the %s names token %s",
			j.Attempt, j.ID, e.att.TokenSerial, e.kind, serial), nil
	case j.TokenSerial == "" && e.att.TokenSerial == "":
		t, err := jt.GetToken(ctx, serial)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return verdict{}, err
		case t.AgentID != "" && t.AgentID != j.AgentID:
			return d.refuse(e.del, false, protocol.CodeTokenNotOwned, "token %s is held by agent %s, not by %s", serial, t.AgentID, j.AgentID), nil
		}
	}
	if jobs.Terminal(j.State) {
		return verdict{}, nil // a last word records nothing on the attempt but its PINs
	}
	if err := jt.RecordAttemptToken(ctx, j.ID, j.Attempt, serial); err != nil {
		return verdict{}, err
	}
	e.att.TokenSerial = serial
	return verdict{}, nil
}

func (d *Dispatcher) onProgress(ctx context.Context, jt *service.JobTx, e *jobEvent, eff jobs.Effect) (string, verdict, error) {
	j, p := e.job, e.progress
	switch e.step {
	case jobs.StepKeyGenerated:
		// Recorded late too: with several coordinators a later step may have been handled
		// first, and the CSR is checked against this key.
		if err := d.recordKey(ctx, jt, e.del, j, p.PublicKey); err != nil {
			return "", verdict{}, err
		}
	case jobs.StepInitialising:
		// The only proof the coordinator gets that the attempt re-initialised its token:
		// the PINs of its result may replace the token's.
		if err := jt.MarkAttemptReinitialised(ctx, j.ID, j.Attempt); err != nil {
			return "", verdict{}, err
		}
	}
	if eff.LastWord {
		// The job ended before the agent could say so (stopped mid-initialise, it answers
		// after the cancel): the step records nothing else, its result's PINs follow.
		return "last word: the attempt re-initialised its token", verdict{}, nil
	}
	if eff.Late {
		// With several coordinators a later step was handled first: what this one
		// reports is kept above, the progress does not go back.
		return "late step " + string(e.step), verdict{}, nil
	}
	detail := p.Detail
	if detail == "" && p.TokenSerial != "" {
		detail = "token " + p.TokenSerial
	}
	if p.KeyExisted {
		detail += " (key made by an earlier pass, reused)"
	}
	detail = protocol.TruncateText(detail, protocol.MaxTextLen)
	if _, err := jt.AddJobStep(ctx, store.JobStep{JobID: j.ID, Attempt: j.Attempt, Step: e.step, Detail: detail, At: d.clock()}, eff.Progress, j.Version); err != nil {
		return "", verdict{}, err
	}
	return "step " + string(e.step), verdict{}, nil
}

// recordKey records the public key reported for the attempt; a second, different key is
// audited and ignored: the first one counts.
func (d *Dispatcher) recordKey(ctx context.Context, jt *service.JobTx, del *amqp.Delivery, j store.Job, pub []byte) error {
	err := jt.RecordAttemptKey(ctx, j.ID, j.Attempt, pub)
	if !errors.Is(err, store.ErrConflict) {
		return err
	}
	// A conflict is also a lost race with another coordinator (PostgreSQL): only a key
	// really recorded, and different, is a second key. Anything else runs again.
	att, gerr := jt.GetJobAttempt(ctx, j.ID, j.Attempt)
	if gerr != nil {
		return errors.Join(err, gerr)
	}
	if len(att.PublicKey) == 0 || bytes.Equal(att.PublicKey, pub) {
		return err
	}
	msg := fmt.Sprintf("attempt %d reported a second, different public key; the first one counts", j.Attempt)
	d.log.Warn().Str("job", j.ID).Msg(msg)
	return jt.Audit(ctx, audit.Entry{Actor: agentActor(j.AgentID), Action: audit.ActionMessageRejected, JobID: j.ID,
		Target: "agent:" + j.AgentID, Reason: msg, Details: audit.Details("code", string(protocol.CodeKeyMismatch), "message_id", del.Envelope.ID)})
}

// onResult ends the attempt: succeeded or failed with the agent's error, or, for a job
// that ended already, the agent's last word on it. One result is taken per attempt. The
// PINs it carries are kept when the attempt had the right to change them (keepPINs); an
// inventory's tokens are recorded as the agent's when they are not another agent's.
func (d *Dispatcher) onResult(ctx context.Context, jt *service.JobTx, e *jobEvent, eff jobs.Effect) (string, verdict, error) {
	j, r := e.job, e.result
	// A csr job's CSR and result leave the agent together; another coordinator may still
	// be checking the CSR, or waiting for the key_generated report before it. The result
	// waits a little for it; past that it is taken, and the job succeeds once its CSR is
	// (onCSR): refused, the result would leave the job running for good.
	awaitCSR := j.Kind == jobs.KindCSR && eff.To == jobs.StateSucceeded && len(e.att.CSR) == 0
	if awaitCSR && d.early.again(e.del.Envelope.ID, e.del.DeliveryCount) {
		return "", verdict{later: fmt.Errorf("result of csr job %s attempt %d came before its CSR", j.ID, j.Attempt)}, nil
	}
	if e.outputs.PINs != nil && !e.att.Reinitialised && jobs.MayReinitialise(j.Kind) && d.early.again(e.del.Envelope.ID, e.del.DeliveryCount) {
		// The initialising step left the agent before the result, but another coordinator
		// may still be on it: taken now, the PINs the attempt set would be refused, and the
		// coordinator would go on with the token's old ones.
		return "", verdict{later: fmt.Errorf("result of job %s attempt %d carries PINs and came before its initialising step", j.ID, j.Attempt)}, nil
	}
	if err := jt.RecordAttemptResult(ctx, j.ID, j.Attempt, e.del.Envelope.ID, resultSummary(r)); errors.Is(err, store.ErrConflict) {
		return "", d.refuse(e.del, false, protocol.CodeEventNotAllowed, "attempt %d of job %s has a result already: %v", j.Attempt, j.ID, err), nil
	} else if err != nil {
		return "", verdict{}, err
	}
	v := verdict{}
	kept, err := d.keepPINs(ctx, jt, e)
	if err != nil {
		return "", v, err
	}
	if len(e.outputs.Tokens) > 0 && j.Kind == jobs.KindInventory {
		if err := d.recordTokens(ctx, jt, e.del, j.AgentID, e.outputs.Tokens, false); err != nil {
			return "", v, err
		}
	}
	// A job waiting for these PINs or tokens, or for this attempt to end on its token
	// (fence), may go now.
	v.wake = true
	note := ""
	if len(kept) > 0 {
		note = "; kept " + strings.Join(kept, ", ")
	}
	if eff.LastWord {
		return "last word on the " + string(j.State) + " job" + note, v, nil
	}
	if awaitCSR {
		return "success taken; the job succeeds once its CSR is" + note, v, nil
	}
	change := store.JobChange{Actor: agentActor(j.AgentID), TokenSerial: e.outputs.TokenSerial}
	if j.TokenSerial != "" {
		change.TokenSerial = ""
	}
	if eff.To == jobs.StateSucceeded && j.Kind == jobs.KindRegisterCertificate {
		serial := j.TokenSerial
		if serial == "" {
			serial = e.outputs.TokenSerial
		}
		if err := jt.RegisterCertificate(ctx, j, e.outputs.Certificate, serial); err != nil {
			var pe *protocol.Error
			if !errors.As(err, &pe) {
				return "", v, err
			}
			change.Reason = protocol.TruncateText("the certificate read was refused: "+pe.Message, protocol.MaxTextLen)
			change.Error = &store.JobError{Code: string(pe.Code), Message: pe.Message}
			if _, err := jt.Transition(ctx, j, jobs.StateFailed, change); err != nil {
				return "", v, err
			}
			return "failed: certificate refused" + note, v, nil
		}
	}
	if eff.To == jobs.StateSucceeded {
		change.Reason = "the agent reported success"
		if e.outputs.CertificateSerial != "" {
			change.Reason += "; certificate " + e.outputs.CertificateSerial + " on the token"
		}
		change.Error = &store.JobError{} // a retry that succeeds clears the last attempt's error
		if _, err := jt.Transition(ctx, j, jobs.StateSucceeded, change); err != nil {
			return "", v, err
		}
		return "succeeded" + note, v, nil
	}
	msg := r.Error.Message
	if r.Error.Retryable {
		msg += " (retryable: tokenfleetctl retry)"
	}
	change.Reason = protocol.TruncateText(fmt.Sprintf("the agent reported failure: %s: %s", r.Error.Code, r.Error.Message), protocol.MaxTextLen)
	change.Error = &store.JobError{Code: string(r.Error.Code), Message: msg}
	if _, err := jt.Transition(ctx, j, jobs.StateFailed, change); err != nil {
		return "", v, err
	}
	return "failed: " + string(r.Error.Code) + note, v, nil
}

// pinRights says which PINs an attempt may set on its token: both after it reported
// re-initialising the token (issue, csr and wipe), the user PIN for an unblock (the
// coordinator gave it the SO PIN to reset it with), none otherwise.
func pinRights(j store.Job, att store.JobAttempt) map[string]bool {
	switch {
	case att.Reinitialised:
		return map[string]bool{store.PINPurposeUser: true, store.PINPurposeSO: true}
	case j.Kind == jobs.KindUnblockPIN:
		return map[string]bool{store.PINPurposeUser: true}
	}
	return nil
}

// keepPINs stores the PINs of a result as the agent sealed them, bound to the job and
// attempt, and names what it kept. PINs the attempt had no right to set are not kept,
// and that is audited; replacing the PINs another job set is audited too.
func (d *Dispatcher) keepPINs(ctx context.Context, jt *service.JobTx, e *jobEvent) ([]string, error) {
	out, j := e.outputs, e.job
	if out.PINs == nil {
		return nil, nil
	}
	serial := out.TokenSerial
	if serial == "" {
		serial = j.TokenSerial
	}
	if serial == "" {
		serial = e.att.TokenSerial
	}
	rights := pinRights(j, e.att)
	var kept, refused, older []string
	for _, p := range []struct {
		purpose string
		sealed  *protocol.Sealed
	}{{store.PINPurposeUser, out.PINs.UserPIN}, {store.PINPurposeSO, out.PINs.SOPIN}} {
		if p.sealed == nil {
			continue
		}
		if !rights[p.purpose] || serial == "" {
			refused = append(refused, pinName(p.purpose))
			continue
		}
		if want := protocol.KeyFingerprint(d.resultPub); p.sealed.KeyID != want {
			// Kept all the same: the key it was sealed to may be found again.
			d.log.Error().Str("job", j.ID).Str("purpose", p.purpose).Str("kid", p.sealed.KeyID).Str("result_key", want).
				Msg("PIN sealed to another key than this coordinator's result key")
		}
		prev, err := jt.GetTokenPIN(ctx, serial, p.purpose)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, err
		case prev.JobID == j.ID && prev.Attempt == j.Attempt:
			continue // this attempt's PIN is kept already
		case jobs.Terminal(j.State) && prev.JobID != j.ID && prev.Recorded.After(j.StateSince):
			// A last word handled after another job's PINs that came in once this job had
			// ended: that job went on the token after this one (a job carrying the token's
			// PINs waits while another is in flight on it), so its PINs are the token's.
			older = append(older, pinName(p.purpose))
			continue
		}
		data, err := jsonOf(p.sealed)
		if err != nil {
			return nil, err
		}
		if _, err := jt.AddTokenPIN(ctx, store.TokenPIN{TokenSerial: serial, Purpose: p.purpose, JobID: j.ID, Attempt: j.Attempt,
			Sealed: data, Recorded: d.clock()}); err != nil {
			return nil, err
		}
		if prev.JobID != "" {
			if err := jt.Audit(ctx, audit.Entry{Actor: agentActor(j.AgentID), Action: audit.ActionPINsReplaced, JobID: j.ID,
				Target: "token:" + serial, Reason: fmt.Sprintf("attempt %d re-initialised the token", j.Attempt),
				Details: audit.Details("purpose", p.purpose, "previous_job", prev.JobID, "previous_attempt", prev.Attempt)}); err != nil {
				return nil, err
			}
		}
		kept = append(kept, pinName(p.purpose)+" of token "+serial)
	}
	if len(older) > 0 {
		why := fmt.Sprintf("the last word of attempt %d carries the %s of token %q, which a job set again after this one ended: the token has that job's",
			j.Attempt, strings.Join(older, " and "), serial)
		d.log.Warn().Str("job", j.ID).Str("agent", j.AgentID).Msg(why)
		if err := jt.Audit(ctx, audit.Entry{Actor: agentActor(j.AgentID), Action: audit.ActionPINsRefused, JobID: j.ID,
			Target: "token:" + serial, Reason: why, Details: audit.Details("message_id", e.del.Envelope.ID)}); err != nil {
			return nil, err
		}
	}
	if len(refused) > 0 {
		why := fmt.Sprintf("the result of attempt %d carries the %s of token %q, which the attempt had no right to set: it did not re-initialise the token",
			j.Attempt, strings.Join(refused, " and "), serial)
		d.log.Warn().Str("job", j.ID).Str("agent", j.AgentID).Msg(why)
		if err := jt.Audit(ctx, audit.Entry{Actor: agentActor(j.AgentID), Action: audit.ActionPINsRefused, JobID: j.ID,
			Target: "token:" + serial, Reason: why, Details: audit.Details("message_id", e.del.Envelope.ID)}); err != nil {
			return nil, err
		}
	}
	return kept, nil
}

// resultSummary is what an agent's result said, as job show tells it.
func resultSummary(r protocol.Result) string {
	if r.Outcome == protocol.OutcomeSucceeded || r.Error == nil {
		return string(r.Outcome)
	}
	return protocol.TruncateText(fmt.Sprintf("%s: %s: %s", r.Outcome, r.Error.Code, r.Error.Message), protocol.MaxTextLen)
}
