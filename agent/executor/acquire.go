package executor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/protocol"
)

const stepToken = "token"

// acquire finds the job's token, waiting for it up to the deadline, takes the token's lock
// and opens it. The first time, it journals the token step and reports token_found; a
// resumed job reports waiting_for_token and token_found again only if it had to wait.
func (r *run) acquire(ctx context.Context) error {
	first := r.job.Step == "" || r.job.Step == stepToken
	if first && r.job.Step == "" {
		// Held: a token found at once is journalled running, found and the first step
		// begun in one commit; waiting for it writes this first (waiting_for_token).
		r.hold(journal.Change{State: journal.StateRunning, Step: stepToken, StepStatus: journal.StepStarted})
	}
	if err := r.waitToken(ctx, r.job.Kind != protocol.KindInventory); err != nil {
		return err
	}
	if !first && !r.waited {
		return nil
	}
	found, err := r.progress(protocol.Progress{Step: protocol.StepTokenFound, Detail: "found " + describeSlot(r.slot)})
	if err != nil {
		return err
	}
	c := journal.Change{TokenSerial: r.serial, Outbox: []*protocol.Envelope{found}}
	if first {
		c.Step, c.StepStatus = stepToken, journal.StepDone
	}
	// Held like a step's done: it goes with the first step's begin.
	r.hold(c)
	return nil
}

// waitToken polls for the one token the job selects. Several candidates is
// token.ambiguous at once; none is waiting_for_token (reported once) until the deadline.
// With lock, the token's lock is taken and the token opened.
func (r *run) waitToken(ctx context.Context, lock bool) error {
	var lastErr string
	for {
		slots, err := r.e.cfg.Tokens.Present(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err.Error() != lastErr { // say it once, not every second
				r.log.Warn().Err(err).Msg("listing the tokens failed; still waiting")
				lastErr = err.Error()
			}
		} else {
			cands := r.candidates(slots)
			if len(cands) > 1 {
				names := make([]string, len(cands))
				for i, c := range cands {
					names[i] = describeSlot(c)
				}
				return protocol.NewError(protocol.CodeTokenAmbiguous, "%d tokens match %s: %v; a narrower selector is needed",
					len(cands), r.sel, names)
			}
			if len(cands) == 1 {
				ok, err := r.take(ctx, cands[0], lock)
				if err != nil || ok {
					return err
				}
				continue // it went, or changed, while we waited for its lock
			}
		}
		if !r.waited {
			r.waited = true
			detail := "insert the token: " + r.sel.String()
			if r.job.TokenSerial != "" {
				detail = "insert the token with serial " + r.job.TokenSerial
			}
			p, err := r.progress(protocol.Progress{Step: protocol.StepWaitingForToken, Detail: detail})
			if err != nil {
				return err
			}
			if err := r.update(ctx, journal.Change{Outbox: []*protocol.Envelope{p}}); err != nil {
				return err
			}
			r.log.Info().Str("selector", r.sel.String()).Msg("waiting for the token")
		}
		if err := r.pause(ctx); err != nil {
			return err
		}
	}
}

// pause waits one poll interval (less when the deadline is nearer), then checks whether
// the job should stop.
func (r *run) pause(ctx context.Context) error {
	wait := r.e.cfg.PollInterval
	if left := r.d.Deadline.Sub(r.e.cfg.Now()); left < wait {
		wait = max(left, time.Millisecond)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.rn.wake:
	case <-t.C:
	}
	if err := r.checkpoint(ctx); err != nil {
		return err
	}
	// Waiting for a token is bounded by the deadline in every state.
	if !r.e.cfg.Now().Before(r.d.Deadline) {
		return r.deadlineError()
	}
	return nil
}

// candidates are the present tokens the job may act on. Once the job knows its token (a
// serial journalled by this or an earlier attempt) only that one; otherwise those the
// selector matches. A job that initialises a blank token and may have been cut short
// between initialising it and journalling the serial also considers an initialised token
// with its label and no user PIN yet, ahead of blank ones: that is the token it was
// initialising.
func (r *run) candidates(slots []pkcs11.Slot) []pkcs11.Slot {
	var out []pkcs11.Slot
	if known := r.job.TokenSerial; known != "" && (r.sel.Serial == "" || r.sel.Serial == known) {
		for _, s := range slots {
			if s.Token.Serial == known {
				out = append(out, s)
			}
		}
		return out
	}
	if r.d.Initialise && r.sel.Blank && r.pendingInit() {
		for _, s := range slots {
			t := s.Token
			if t.Initialized && !t.UserPINInitialized && t.Label == r.d.TokenLabel && t.Serial != "" {
				out = append(out, s)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	for _, s := range slots {
		if r.sel.matches(s) {
			out = append(out, s)
		}
	}
	return out
}

// pendingInit reports whether the job generated PINs to initialise a token that are not
// known to be on it yet.
func (r *run) pendingInit() bool {
	so, ok := r.secrets[secretSOPIN]
	return ok && !so.Applied
}

// take locks the candidate token and opens it. It reports false when the token is no
// longer there (or no longer matches) once the lock is held.
func (r *run) take(ctx context.Context, slot pkcs11.Slot, lock bool) (bool, error) {
	if !lock {
		r.slot, r.serial = slot, slot.Token.Serial
		return true, nil
	}
	key := slot.Token.Serial
	if key == "" {
		key = blankLockKey
	}
	release, err := r.e.locks.acquire(ctx, key, r.rn.wake)
	if errors.Is(err, errWoken) {
		return false, r.checkpoint(ctx)
	}
	if err != nil {
		return false, err
	}
	// Another job may have changed the token while we waited for it: look again.
	slots, err := r.e.cfg.Tokens.Present(ctx)
	if err != nil {
		release()
		r.log.Debug().Err(err).Msg("listing the tokens failed; looking again")
		return false, nil //nolint:nilerr // a failed listing is retried by the wait loop
	}
	var now *pkcs11.Slot
	for _, c := range r.candidates(slots) {
		if c.ID == slot.ID && c.Token.Serial == slot.Token.Serial {
			now = &c
		}
	}
	if now == nil {
		release()
		return false, nil
	}
	if now.Token.Initialized && now.Token.Serial != "" {
		tok, err := r.e.cfg.Tokens.Open(ctx, now.Token.Serial)
		if err != nil {
			release()
			return false, fmt.Errorf("open token %s: %w", now.Token.Serial, err)
		}
		r.tok = tok
	}
	r.slot, r.serial, r.release = *now, now.Token.Serial, release
	if r.serial != "" { // a blank token has none yet: initialising it adds the field
		r.log = r.log.With().Str("token", r.serial).Logger()
	}
	return true, nil
}
