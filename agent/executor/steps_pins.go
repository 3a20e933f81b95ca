package executor

import (
	"context"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/usb"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// dispatchPIN opens a PIN the dispatch carries, sealed to the agent.
func (r *run) dispatchPIN(purpose protocol.SealPurpose) (string, error) {
	var s *protocol.Sealed
	if r.d.PINs != nil {
		switch purpose {
		case protocol.PurposeUserPIN:
			s = r.d.PINs.UserPIN
		case protocol.PurposeSOPIN:
			s = r.d.PINs.SOPIN
		}
	}
	if s == nil {
		return "", protocol.NewError(protocol.CodeBadRequest, "the dispatch carries no %s", purpose)
	}
	b := sealBinding(r.job.Ref, purpose)
	pin, err := r.e.cfg.Keys.Open(s, b)
	if err != nil {
		return "", err
	}
	return string(pin), nil
}

// userPIN is the PIN to log in with: the one this job set, else the dispatch's.
func (r *run) userPIN() (string, error) {
	if s := r.secrets[secretUserPIN]; s.Applied {
		return s.Value, nil
	}
	return r.dispatchPIN(protocol.PurposeUserPIN)
}

// login logs the user in once per pass (PIN changes log out and reset this). A wrong PIN is
// never tried twice.
func (r *run) login(ctx context.Context) error {
	if r.loggedIn {
		return nil
	}
	tok, err := r.requireToken()
	if err != nil {
		return err
	}
	pin, err := r.userPIN()
	if err != nil {
		return err
	}
	if err := r.refuseFactoryUserPIN(ctx, pin); err != nil {
		return err
	}
	if err := tok.Login(ctx, pin); err != nil {
		return err
	}
	r.loggedIn = true
	return nil
}

// refuseFactoryUserPIN stops an issue, csr, server_keygen or recover_key job from putting
// a key on a token whose user PIN is still its model's factory PIN: such a token must be
// issued to first (with factory_pins), so that it gets a PIN of its own.
func (r *run) refuseFactoryUserPIN(ctx context.Context, pin string) error {
	putsKey := r.job.Kind == protocol.KindIssue || r.job.Kind == protocol.KindCSR || importsKey(r.job.Kind)
	if !putsKey || r.secrets[secretUserPIN].Applied ||
		r.e.cfg.FactoryPINs == nil || r.slot.Token == nil {
		return nil
	}
	def, err := r.factoryDefaults(ctx)
	if err != nil || def == nil {
		return nil //nolint:nilerr // an unknown model is no reason to refuse; factory_pins jobs check strictly
	}
	if def.UserPIN != "" && def.UserPIN == pin {
		if importsKey(r.job.Kind) {
			return protocol.NewError(protocol.CodePolicyViolation,
				"the token's user PIN is still its model's factory PIN; issue to the token first (with factory_pins) so that it gets PINs of its own")
		}
		return protocol.NewError(protocol.CodePolicyViolation,
			"the token's user PIN is still its model's factory PIN; dispatch the job with factory_pins to replace it")
	}
	return nil
}

// factoryDefaults looks up the factory PINs of the job's token model.
func (r *run) factoryDefaults(ctx context.Context) (*usb.Defaults, error) {
	if r.e.cfg.FactoryPINs == nil {
		return nil, nil
	}
	slots, err := r.e.cfg.Tokens.Present(ctx)
	if err != nil {
		return nil, err
	}
	present := make([]pkcs11.TokenInfo, 0, len(slots))
	for _, s := range slots {
		present = append(present, *s.Token)
	}
	return r.e.cfg.FactoryPINs.Defaults(ctx, *r.slot.Token, present)
}

func (r *run) requireFactoryDefaults(ctx context.Context) (*usb.Defaults, error) {
	def, err := r.factoryDefaults(ctx)
	if err != nil {
		return nil, protocol.NewError(protocol.CodeFactoryPINsUnknown, "looking up the token's model: %v", err)
	}
	if def == nil || (def.UserPIN == "" && def.SOPIN == "") {
		return nil, protocol.NewError(protocol.CodeFactoryPINsUnknown,
			"no factory PINs are known for token %s (%s %s): it cannot be tied to a registry model that lists them",
			r.serial, r.slot.Token.Manufacturer, r.slot.Token.Model)
	}
	return def, nil
}

func (r *run) tokenPINLimits() (uint, uint) {
	if r.slot.Token == nil {
		return 0, 0
	}
	return r.slot.Token.MinPINLen, r.slot.Token.MaxPINLen
}

func (r *run) policy() (protocol.PINPolicy, error) {
	if r.d.PINPolicy == nil {
		return protocol.PINPolicy{}, protocol.NewError(protocol.CodeBadRequest, "the dispatch has no pin_policy")
	}
	return *r.d.PINPolicy, nil
}

// newPINs generates the named secrets, all different from each other and from avoid.
func (r *run) newPINs(names []string, avoid []string) ([]journal.Secret, error) {
	p, err := r.policy()
	if err != nil {
		return nil, err
	}
	lo, hi := r.tokenPINLimits()
	out := make([]journal.Secret, 0, len(names))
	for _, n := range names {
		pol := p
		if n == secretSOPIN {
			pol = soPolicy(p)
		}
		pin, err := generatePIN(pol, lo, hi, avoid...)
		if err != nil {
			return nil, err
		}
		avoid = append(avoid, pin)
		out = append(out, journal.Secret{Name: n, Value: pin})
	}
	return out, nil
}
