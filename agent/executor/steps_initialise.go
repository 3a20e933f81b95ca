package executor

import (
	"context"
	"errors"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/usb"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// initialise wipes and initialises the token with a fresh SO PIN, user PIN and label.
//
// Safe to repeat: the new PINs are journalled (sealed) before the token is touched, marked
// sent in the same commit, before the call that may set them (the SO PIN change, or the
// initialisation of a blank token). A step resumed with the PINs marked sent first tries
// them (the new SO PIN setting the new user PIN). If they work, the earlier pass got
// through; if the SO PIN is refused, the token still has its old one and the step runs
// again. That costs one wrong SO PIN try, which the good one right after resets. PINs not
// marked sent are not tried: the token cannot have them, and each guess would spend one
// of its tries (a token that locks after three locks after three guesses in a row). A
// token this job initialised in an earlier attempt is not wiped again.
func (r *run) initialise(ctx context.Context, _ bool) error {
	so, user := r.secrets[secretSOPIN], r.secrets[secretUserPIN]
	if so.Applied && user.Applied && r.tok != nil {
		r.log.Info().Msg("the token was initialised by an earlier attempt of this job; keeping it")
		return r.done(ctx, stepInitialise, journal.Change{TokenSerial: r.serial})
	}
	var factory *usb.Defaults
	if r.d.FactoryPINs {
		def, err := r.requireFactoryDefaults(ctx)
		if err != nil {
			return err
		}
		factory = def
	}
	names := []string{secretSOPIN, secretUserPIN}
	fresh := so.Value == "" || user.Value == ""
	// probe: an earlier pass may have set these PINs on the token.
	probe := !fresh && so.Sent
	var c journal.Change
	if r.job.Step != stepInitialise { // a resumed step reported initialising already
		var err error
		if c, err = r.progressChange(protocol.Progress{Step: protocol.StepInitialising, Detail: "initialising the token " + r.d.TokenLabel}); err != nil {
			return err
		}
	}
	if fresh {
		var err error
		var avoid []string
		if factory != nil {
			avoid = append(avoid, factory.UserPIN, factory.SOPIN)
		}
		if c.Secrets, err = r.newPINs(names, avoid); err != nil {
			return err
		}
		for i := range c.Secrets {
			c.Secrets[i].Sent = true
		}
	} else if !so.Sent || !user.Sent {
		c.Sent = names
	}
	if err := r.begin(ctx, stepInitialise, c); err != nil {
		return err
	}
	r.pinsAbsent = !probe
	so, user = r.secrets[secretSOPIN], r.secrets[secretUserPIN]
	r.loggedIn = false
	if r.tok == nil {
		if err := r.initBlank(ctx, so.Value, user.Value); err != nil {
			return err
		}
	} else if err := r.reinitialise(ctx, probe, factory, so.Value, user.Value); err != nil {
		return err
	}
	return r.done(ctx, stepInitialise, journal.Change{TokenSerial: r.serial, Applied: names})
}

func (r *run) initBlank(ctx context.Context, so, user string) error {
	r.pinsSent = true // a blank token takes the new SO PIN as it is initialised
	info, err := r.e.cfg.Tokens.InitBlank(ctx, r.slot.ID, pkcs11.InitOptions{Label: r.d.TokenLabel, SOPIN: so})
	if err != nil {
		return err
	}
	tok, err := r.e.cfg.Tokens.Open(ctx, info.Serial)
	if err != nil {
		return err
	}
	held := r.serial // the lock take holds: the blank token's serial, or none (the blank tokens' lock)
	r.tok, r.serial = tok, info.Serial
	r.slot.Token = &info
	r.log = r.log.With().Str("token", r.serial).Logger()
	// The token has a serial now: hold its own lock instead of the blank tokens' one, so
	// that jobs waiting for another blank token need not wait for this job. A blank token
	// that had a serial already (a chip's, which initialising keeps) is held under it:
	// taking that lock again would wait for this job itself.
	if held != r.serial {
		if release, err := r.e.locks.acquire(ctx, r.serial, nil); err == nil {
			r.release()
			r.release = release
		}
	}
	// Journal the serial at once: a crash before the user PIN is set then finds the token
	// by it. A blank token whose serial was known before (a chip's, journalled with the
	// step's begin) needs no commit here.
	if r.held != nil || r.job.TokenSerial != r.serial {
		if err := r.update(ctx, journal.Change{TokenSerial: r.serial}); err != nil {
			return err
		}
	}
	return tok.InitUserPIN(ctx, so, user)
}

func (r *run) reinitialise(ctx context.Context, probe bool, factory *usb.Defaults, so, user string) error {
	tok := r.tok
	if probe {
		err := tok.InitUserPIN(ctx, so, user)
		if err == nil {
			r.pinsSent = true
			return nil
		}
		if !isCode(err, pkcs11.CodePINIncorrect) {
			return err
		}
		// The token has its old SO PIN: nothing this job sent it took.
		r.pinsAbsent = true
	}
	var oldSO string
	if factory != nil && factory.SOPIN != "" {
		oldSO = factory.SOPIN
	} else {
		pin, err := r.dispatchPIN(protocol.PurposeSOPIN)
		if err != nil {
			return err
		}
		oldSO = pin
	}
	// C_InitToken on an initialised token checks, and keeps, its SO PIN: change it after.
	info, err := tok.Init(ctx, pkcs11.InitOptions{Label: r.d.TokenLabel, SOPIN: oldSO, Force: true})
	if err != nil {
		return err
	}
	r.slot.Token = &info
	r.pinsSent = true // the next call may set the new SO PIN (begin marked it sent)
	if err := tok.ChangeSOPIN(ctx, oldSO, so); err != nil {
		return err
	}
	return tok.InitUserPIN(ctx, so, user)
}

// replaceFactoryPINs replaces the factory PINs of a token that arrived initialised with
// them: the SO PIN (when the model has a factory one) and the user PIN. Safe to repeat
// like initialise: a resumed step tries the new PINs first when it may have set them.
func (r *run) replaceFactoryPINs(ctx context.Context, _ bool) error {
	tok, err := r.requireToken()
	if err != nil {
		return err
	}
	def, err := r.requireFactoryDefaults(ctx)
	if err != nil {
		return err
	}
	names := []string{secretUserPIN}
	if def.SOPIN != "" {
		names = append(names, secretSOPIN)
	}
	applied := true
	for _, n := range names {
		applied = applied && r.secrets[n].Applied
	}
	if applied {
		r.log.Info().Msg("the factory PINs were replaced by an earlier attempt of this job")
		return r.done(ctx, stepFactoryPINs, journal.Change{})
	}
	fresh := r.secrets[secretUserPIN].Value == "" || (def.SOPIN != "" && r.secrets[secretSOPIN].Value == "")
	// Tried first only when an earlier pass may have set them (see initialise).
	probe := !fresh && r.secrets[names[len(names)-1]].Sent
	var c journal.Change
	if fresh {
		if c.Secrets, err = r.newPINs(names, []string{def.UserPIN, def.SOPIN}); err != nil {
			return err
		}
		for i := range c.Secrets {
			c.Secrets[i].Sent = true
		}
	} else if !probe {
		c.Sent = names
	}
	if err := r.begin(ctx, stepFactoryPINs, c); err != nil {
		return err
	}
	user, so := r.secrets[secretUserPIN].Value, r.secrets[secretSOPIN].Value
	r.loggedIn = false
	if def.SOPIN != "" {
		err := errors.New("not tried")
		if probe {
			err = tok.InitUserPIN(ctx, so, user)
			if err != nil && !isCode(err, pkcs11.CodePINIncorrect) {
				return err
			}
		}
		if err != nil {
			if err := tok.ChangeSOPIN(ctx, def.SOPIN, so); err != nil {
				return err
			}
			if err := tok.InitUserPIN(ctx, so, user); err != nil {
				return err
			}
		}
	} else {
		err := errors.New("not tried")
		if probe {
			err = tok.Login(ctx, user)
			if err != nil && !isCode(err, pkcs11.CodePINIncorrect) {
				return err
			}
		}
		if err != nil {
			if err := tok.ChangeUserPIN(ctx, def.UserPIN, user); err != nil {
				return err
			}
		}
		_ = tok.Logout(ctx) // log in again with the new PIN through login
	}
	return r.done(ctx, stepFactoryPINs, journal.Change{TokenSerial: r.serial, Applied: names})
}
