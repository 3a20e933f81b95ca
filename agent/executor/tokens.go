package executor

import (
	"context"
	"fmt"
	"strings"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// Tokens is what the executor needs of the PKCS#11 world: which tokens are present now
// (it polls this), a handle on an initialised token, and initialising a blank one, which
// has no serial to open it by.
type Tokens interface {
	// Present lists the slots holding a token the module recognises.
	Present(ctx context.Context) ([]pkcs11.Slot, error)
	// Open opens the initialised token with this serial; close it after use.
	Open(ctx context.Context, serial string) (*pkcs11.Token, error)
	// InitBlank initialises the token in the slot (a slot Present lists in this process).
	InitBlank(ctx context.Context, slot uint, opts pkcs11.InitOptions) (pkcs11.TokenInfo, error)
}

// ModuleTokens is Tokens over one PKCS#11 module.
type ModuleTokens struct {
	Module *pkcs11.Module
}

var _ Tokens = ModuleTokens{}

// Present implements Tokens.
func (m ModuleTokens) Present(ctx context.Context) ([]pkcs11.Slot, error) {
	slots, err := m.Module.Slots(ctx)
	if err != nil {
		return nil, err
	}
	out := slots[:0]
	for _, s := range slots {
		if s.TokenPresent && s.Token != nil {
			out = append(out, s)
		}
	}
	return out, nil
}

// Open implements Tokens.
func (m ModuleTokens) Open(ctx context.Context, serial string) (*pkcs11.Token, error) {
	return m.Module.FindToken(ctx, &uri.URI{Serial: serial})
}

// InitBlank implements Tokens.
func (m ModuleTokens) InitBlank(ctx context.Context, slot uint, opts pkcs11.InitOptions) (pkcs11.TokenInfo, error) {
	return m.Module.InitToken(ctx, slot, opts)
}

// selector is a dispatch's token selector, with the URI parsed once.
type selector struct {
	protocol.TokenSelector
	uri *uri.URI
}

func newSelector(s protocol.TokenSelector) (selector, error) {
	sel := selector{TokenSelector: s}
	if s.URI != "" {
		u, err := uri.Parse(s.URI)
		if err != nil {
			return sel, protocol.NewError(protocol.CodeBadRequest, "token.uri: %v", err)
		}
		sel.uri = u
	}
	return sel, nil
}

// empty reports whether the selector has no criterion (inventory of every token).
func (s selector) empty() bool {
	return s.Serial == "" && s.Model == "" && !s.Blank && s.URI == ""
}

// matches reports whether a present token meets every criterion.
func (s selector) matches(slot pkcs11.Slot) bool {
	t := slot.Token
	if t == nil {
		return false
	}
	switch {
	case s.Serial != "" && t.Serial != s.Serial:
		return false
	case s.Model != "" && t.Model != s.Model:
		return false
	case s.Blank && t.Initialized:
		return false
	case s.uri != nil && !s.uri.MatchToken(t.Label, t.Manufacturer, t.Serial, t.Model):
		return false
	case s.uri != nil && !s.uri.MatchSlot(slot.Description, slot.Manufacturer, slot.ID):
		return false
	}
	return true
}

// String describes the selection for operators, never the URI's PIN attributes.
func (s selector) String() string {
	var parts []string
	if s.Serial != "" {
		parts = append(parts, "serial "+s.Serial)
	}
	if s.Model != "" {
		parts = append(parts, "model "+s.Model)
	}
	if s.Blank {
		parts = append(parts, "a blank token")
	}
	if s.uri != nil {
		parts = append(parts, s.uri.Redacted())
	}
	if len(parts) == 0 {
		return "any token"
	}
	return strings.Join(parts, ", ")
}

func describeSlot(s pkcs11.Slot) string {
	if s.Token == nil {
		return fmt.Sprintf("slot %d", s.ID)
	}
	if s.Token.Serial == "" {
		return fmt.Sprintf("blank token in slot %d", s.ID)
	}
	return fmt.Sprintf("%q (serial %s)", s.Token.Label, s.Token.Serial)
}
