package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// onResult ends the attempt: succeeded or failed with the agent's error. What the agent
// left behind is kept whatever the job's state: the PINs it set (a token initialised
// before a later step failed has new PINs nobody else knows), and an inventory's tokens.
func (d *Dispatcher) onResult(ctx context.Context, tx store.Tx, del *amqp.Delivery, j store.Job) (string, verdict, error) {
	r, err := protocol.DecodeBody[protocol.Result](del.Envelope)
	if err != nil {
		return d.badBody(ctx, tx, del, err)
	}
	var out protocol.Outputs
	if r.Outputs != nil {
		out = *r.Outputs
	}
	if j.Kind == jobs.KindCSR && r.Outcome == protocol.OutcomeSucceeded && !jobs.Terminal(j.State) {
		// A csr job's CSR and result leave the agent together; another coordinator may
		// still be checking the CSR.
		att, err := tx.GetJobAttempt(ctx, j.ID, j.Attempt)
		if err != nil {
			return "", verdict{}, err
		}
		if att.CSR == nil && d.early.again(del.Envelope.ID, del.DeliveryCount) {
			return "", verdict{later: fmt.Errorf("result of csr job %s attempt %d came before its CSR", j.ID, j.Attempt)}, nil
		}
	}
	v := verdict{}
	kept, err := d.keepPINs(ctx, tx, j, out)
	if err != nil {
		return "", v, err
	}
	if len(kept) > 0 || len(out.Tokens) > 0 {
		v.wake = true // a job waiting for these PINs or tokens may go now
	}
	if err := d.upsertTokens(ctx, tx, j.AgentID, out.Tokens); err != nil {
		return "", v, err
	}
	note := ""
	if len(kept) > 0 {
		note = "; kept " + strings.Join(kept, ", ")
	}
	if jobs.Terminal(j.State) {
		return "ignored: the job is " + string(j.State) + note, v, nil
	}
	change := store.JobChange{Actor: agentActor(j.AgentID), TokenSerial: out.TokenSerial}
	switch r.Outcome {
	case protocol.OutcomeSucceeded:
		if jobs.NeedsCertificate(j.Kind) && j.State != jobs.StateInstalling {
			msg := fmt.Sprintf("the agent reported success while the job was %s: its certificate was never delivered", j.State)
			if j.State == jobs.StateApproved {
				if j, err = d.markDispatched(ctx, tx, j, j.Attempt, "the agent reported on the attempt"); err != nil {
					return "", v, err
				}
			}
			if _, err := d.fail(ctx, tx, j, ActorDispatch, protocol.CodeBadRequest, msg); err != nil {
				return "", v, err
			}
			return "refused success: " + msg + note, v, nil
		}
		if j, err = d.catchUp(ctx, tx, j); err != nil {
			return "", v, err
		}
		change.Reason = "the agent reported success"
		if out.CertificateSerial != "" {
			change.Reason += "; certificate " + out.CertificateSerial + " on the token"
		}
		change.Error = &store.JobError{} // a retry that succeeds clears the last attempt's error
		if _, err := d.transition(ctx, tx, j, jobs.StateSucceeded, change); err != nil {
			return "", v, err
		}
		return "succeeded" + note, v, nil
	default:
		if j, err = d.markDispatched(ctx, tx, j, j.Attempt, "the agent reported on the attempt"); err != nil {
			return "", v, err
		}
		msg := r.Error.Message
		if r.Error.Retryable {
			msg += " (retryable: tokenfleetctl retry)"
		}
		change.Reason = fmt.Sprintf("the agent reported failure: %s: %s", r.Error.Code, r.Error.Message)
		change.Error = &store.JobError{Code: string(r.Error.Code), Message: msg}
		if _, err := d.transition(ctx, tx, j, jobs.StateFailed, change); err != nil {
			return "", v, err
		}
		return "failed: " + string(r.Error.Code) + note, v, nil
	}
}

// keepPINs stores the PINs of a result as the agent sealed them, and names what it kept.
func (d *Dispatcher) keepPINs(ctx context.Context, tx store.Tx, j store.Job, out protocol.Outputs) ([]string, error) {
	if out.PINs == nil {
		return nil, nil
	}
	serial := out.TokenSerial
	if serial == "" {
		serial = j.TokenSerial
	}
	if serial == "" {
		// Kept under the job rather than lost: an operator can still find it.
		serial = "job:" + j.ID
		d.log.Error().Str("job", j.ID).Msg("result carries PINs but no token serial; kept under the job")
	}
	var kept []string
	for _, p := range []struct {
		purpose string
		sealed  *protocol.Sealed
	}{{store.PINPurposeUser, out.PINs.UserPIN}, {store.PINPurposeSO, out.PINs.SOPIN}} {
		if p.sealed == nil {
			continue
		}
		if want := protocol.KeyFingerprint(d.resultPub); p.sealed.KeyID != want {
			// Kept all the same: the key it was sealed to may be found again.
			d.log.Error().Str("job", j.ID).Str("purpose", p.purpose).Str("kid", p.sealed.KeyID).Str("result_key", want).
				Msg("PIN sealed to another key than this coordinator's result key")
		}
		data, err := json.Marshal(p.sealed)
		if err != nil {
			return nil, err
		}
		_, err = tx.AddTokenPIN(ctx, store.TokenPIN{TokenSerial: serial, Purpose: p.purpose, JobID: j.ID, Attempt: j.Attempt,
			Sealed: data, Recorded: d.clock()})
		if errors.Is(err, store.ErrConflict) {
			continue // this attempt's PIN is kept already
		}
		if err != nil {
			return nil, err
		}
		kept = append(kept, pinName(p.purpose)+" of token "+serial)
	}
	return kept, nil
}

// upsertTokens records tokens as an agent reports them.
func (d *Dispatcher) upsertTokens(ctx context.Context, tx store.Tx, agentID string, tokens []protocol.Token) error {
	now := d.clock()
	for _, t := range tokens {
		flags, err := json.Marshal(t.Flags)
		if err != nil {
			return err
		}
		if _, err := tx.UpsertToken(ctx, store.Token{Serial: t.Serial, AgentID: agentID, Label: t.Label,
			Manufacturer: t.Manufacturer, Model: t.Model, Flags: flags, LastSeen: now}); err != nil {
			return err
		}
	}
	return nil
}
