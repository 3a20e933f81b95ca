package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/tokenfleet/tokenfleet/agent/executor"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/drivers/watch"
)

// modules are the PKCS#11 modules the agent loaded, seen as one set of tokens: the
// executor's Tokens and the watcher's TokenSource.
//
// SoftHSM2 (tests, demos) reads its token store once, in C_Initialize: a token another
// process creates after the agent loaded the module stays invisible until the module is
// loaded again (an agent restart). The set does not finalize and re-initialise modules
// to work around it: C_Finalize ends every session and login of the process, so it could
// only happen between jobs, and real modules (OpenSC, vendor middleware) report tokens
// coming and going without it.
type modules struct {
	mods []*pkcs11.Module

	mu sync.Mutex // guards slots
	// slots maps each slot ID of the last Present to the modules that listed it: InitBlank
	// gets only a slot ID, which two modules may both use.
	slots map[uint][]*pkcs11.Module
}

var (
	_ executor.Tokens   = (*modules)(nil)
	_ watch.TokenSource = (*modules)(nil)
)

func newModules(mods []*pkcs11.Module) *modules {
	return &modules{mods: mods, slots: map[uint][]*pkcs11.Module{}}
}

// paths lists the modules' library paths.
func (m *modules) paths() []string {
	out := make([]string, len(m.mods))
	for i, mod := range m.mods {
		out[i] = mod.Path()
	}
	return out
}

// Present implements executor.Tokens: the slots holding a recognised token, in every
// module that answered. A module that fails is left out (its tokens look absent, so a job
// waiting for one keeps waiting); only when every module fails is it an error.
func (m *modules) Present(ctx context.Context) ([]pkcs11.Slot, error) {
	var (
		out  []pkcs11.Slot
		errs []error
	)
	seen := map[uint][]*pkcs11.Module{}
	for _, mod := range m.mods {
		slots, err := mod.Slots(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("module %s: %w", mod.Path(), err))
			continue
		}
		for _, s := range slots {
			if s.TokenPresent && s.Token != nil {
				out = append(out, s)
				seen[s.ID] = append(seen[s.ID], mod)
			}
		}
	}
	if len(errs) > 0 && len(errs) == len(m.mods) {
		return nil, errors.Join(errs...)
	}
	m.mu.Lock()
	m.slots = seen
	m.mu.Unlock()
	return out, nil
}

// Open implements executor.Tokens: the token with the serial, in whichever module has it.
func (m *modules) Open(ctx context.Context, serial string) (*pkcs11.Token, error) {
	var last error
	for _, mod := range m.mods {
		tok, err := mod.FindToken(ctx, &uri.URI{Serial: serial})
		if err == nil {
			return tok, nil
		}
		last = err
		if pkcs11.CodeOf(err) != pkcs11.CodeNotFound {
			break
		}
	}
	if last == nil {
		return nil, &pkcs11.Error{Op: "find token", Code: pkcs11.CodeNotFound, Token: serial,
			Err: errors.New("no PKCS#11 module is loaded")}
	}
	return nil, last
}

// InitBlank implements executor.Tokens, in the module that listed the slot.
func (m *modules) InitBlank(ctx context.Context, slot uint, opts pkcs11.InitOptions) (pkcs11.TokenInfo, error) {
	m.mu.Lock()
	owners := m.slots[slot]
	m.mu.Unlock()
	switch len(owners) {
	case 0:
		return pkcs11.TokenInfo{}, &pkcs11.Error{Op: "initialise token", Code: pkcs11.CodeNotPresent,
			Err: fmt.Errorf("slot %d was not listed by any module", slot)}
	case 1:
		return owners[0].InitToken(ctx, slot, opts)
	}
	return pkcs11.TokenInfo{}, &pkcs11.Error{Op: "initialise token", Code: pkcs11.CodeAmbiguous,
		Err: fmt.Errorf("slot %d is listed by %d modules; configure only the module of the blank token", slot, len(owners))}
}

// Tokens implements watch.TokenSource: the tokens of every module, with a
// *watch.ModuleError per module that could not be listed.
func (m *modules) Tokens(ctx context.Context) ([]watch.TokenState, error) {
	var (
		out  []watch.TokenState
		errs []error
	)
	for _, mod := range m.mods {
		slots, err := mod.Slots(ctx)
		if err != nil {
			errs = append(errs, &watch.ModuleError{ModulePath: mod.Path(), Err: err})
			continue
		}
		for _, s := range slots {
			if s.Token != nil {
				out = append(out, tokenState(mod.Path(), *s.Token))
			}
		}
	}
	return out, errors.Join(errs...)
}

func tokenState(module string, t pkcs11.TokenInfo) watch.TokenState {
	pin := func(p pkcs11.PINStatus) watch.PINFlags {
		return watch.PINFlags{CountLow: p.CountLow, FinalTry: p.FinalTry, Locked: p.Locked, ToBeChanged: p.ToBeChanged}
	}
	return watch.TokenState{
		ModulePath: module, Serial: t.Serial, Label: t.Label, Manufacturer: t.Manufacturer, Model: t.Model,
		Initialized: t.Initialized,
		Flags: watch.TokenFlags{
			UserPINInitialized: t.UserPINInitialized, LoginRequired: t.LoginRequired,
			ProtectedAuthPath: t.ProtectedAuthPath, WriteProtected: t.WriteProtected,
			UserPIN: pin(t.UserPIN), SOPIN: pin(t.SOPIN),
		},
	}
}

// close closes every module.
func (m *modules) close() error {
	var errs []error
	for _, mod := range m.mods {
		if err := mod.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing module %s: %w", mod.Path(), err))
		}
	}
	return errors.Join(errs...)
}
