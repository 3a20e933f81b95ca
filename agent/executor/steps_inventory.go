package executor

import (
	"context"
	"errors"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// inventory answers with the tokens this agent sees (those the selector picks, if it has
// criteria) in the result.
func (r *run) inventory(ctx context.Context, _ bool) error {
	if r.e.cfg.Inventory == nil {
		return errors.New("no inventory source is configured")
	}
	if err := r.begin(ctx, stepInventory, journal.Change{}); err != nil {
		return err
	}
	tokens, err := r.e.cfg.Inventory(ctx)
	if err != nil {
		return err
	}
	if !r.sel.empty() {
		kept := tokens[:0]
		for _, t := range tokens {
			if t.Serial == r.serial {
				kept = append(kept, t)
			}
		}
		tokens = kept
	}
	if len(tokens) > protocol.MaxTokens {
		r.log.Warn().Int("tokens", len(tokens)).Int("reported", protocol.MaxTokens).Msg("more tokens than a result may carry")
		tokens = tokens[:protocol.MaxTokens]
	}
	res, err := r.message(protocol.Result{Outcome: protocol.OutcomeSucceeded, Outputs: &protocol.Outputs{Tokens: tokens}})
	if err != nil {
		return err
	}
	return r.done(ctx, stepInventory, journal.Change{State: journal.StateDone, Result: res})
}
