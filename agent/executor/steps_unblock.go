package executor

import (
	"context"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// resetPIN sets a new user PIN with the SO PIN (C_InitPIN): the unblock. The new PIN is
// journalled before it is set, so a resumed step sets the same one again.
func (r *run) resetPIN(ctx context.Context, _ bool) error {
	tok, err := r.requireToken()
	if err != nil {
		return err
	}
	so, err := r.dispatchPIN(protocol.PurposeSOPIN)
	if err != nil {
		return err
	}
	var c journal.Change
	if r.secrets[secretUserPIN].Value == "" {
		if c.Secrets, err = r.newPINs([]string{secretUserPIN}, []string{so}); err != nil {
			return err
		}
	}
	if err := r.begin(ctx, stepResetPIN, c); err != nil {
		return err
	}
	r.loggedIn = false
	if err := tok.InitUserPIN(ctx, so, r.secrets[secretUserPIN].Value); err != nil {
		return err
	}
	return r.done(ctx, stepResetPIN, journal.Change{Applied: []string{secretUserPIN}})
}

// verifyPIN logs in with the new user PIN.
func (r *run) verifyPIN(ctx context.Context, _ bool) error {
	if err := r.begin(ctx, stepVerifyPIN, journal.Change{}); err != nil {
		return err
	}
	if err := r.login(ctx); err != nil {
		return err
	}
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepVerified, Detail: "the new user PIN works"})
	if err != nil {
		return err
	}
	return r.done(ctx, stepVerifyPIN, c)
}
