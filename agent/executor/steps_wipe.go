package executor

import (
	"context"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/protocol"
)

func (r *run) wipeLabel() string {
	if r.d.TokenLabel != "" {
		return r.d.TokenLabel
	}
	if r.slot.Token != nil && r.slot.Token.Label != "" {
		return r.slot.Token.Label
	}
	return "tokenfleet"
}

// wipe re-initialises the token with its SO PIN: every object on it goes. Repeating it
// wipes an empty token again, which is harmless.
func (r *run) wipe(ctx context.Context, _ bool) error {
	tok, err := r.requireToken()
	if err != nil {
		return err
	}
	so, err := r.dispatchPIN(protocol.PurposeSOPIN)
	if err != nil {
		return err
	}
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepInitialising, Detail: "wiping the token"})
	if err != nil {
		return err
	}
	if r.job.Step == stepWipe {
		c = journal.Change{} // resumed: initialising was reported already
	}
	if err := r.begin(ctx, stepWipe, c); err != nil {
		return err
	}
	r.loggedIn = false
	info, err := tok.Init(ctx, pkcs11.InitOptions{Label: r.wipeLabel(), SOPIN: so, Force: true})
	if err != nil {
		return err
	}
	r.slot.Token = &info
	return r.done(ctx, stepWipe, journal.Change{})
}

// verifyWipe checks the token is initialised with the label and holds no object anyone
// can see.
func (r *run) verifyWipe(ctx context.Context, _ bool) error {
	if err := r.begin(ctx, stepVerifyWipe, journal.Change{}); err != nil {
		return err
	}
	info, err := r.tok.Info(ctx)
	if err != nil {
		return err
	}
	if !info.Initialized || info.Label != r.wipeLabel() {
		return protocol.NewError(protocol.CodeTokenGeneralError, "after the wipe the token is labelled %q (initialised %t), want %q",
			info.Label, info.Initialized, r.wipeLabel())
	}
	certs, err := r.tok.Certificates(ctx)
	if err != nil {
		return err
	}
	keys, err := r.tok.Keys(ctx)
	if err != nil {
		return err
	}
	if len(certs)+len(keys) != 0 {
		return protocol.NewError(protocol.CodeTokenGeneralError, "after the wipe the token still shows %d certificates and %d keys",
			len(certs), len(keys))
	}
	c, err := r.progressChange(protocol.Progress{Step: protocol.StepVerified, Detail: "the token is empty"})
	if err != nil {
		return err
	}
	return r.done(ctx, stepVerifyWipe, c)
}
