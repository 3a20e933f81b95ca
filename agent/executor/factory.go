package executor

import (
	"context"
	"fmt"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

// FactoryPINs knows the factory PINs of token models.
type FactoryPINs interface {
	// Defaults returns the factory PINs of the token's model, nil when the model or its
	// PINs are unknown. present is every token present, which helps tie the token to a
	// USB device.
	Defaults(ctx context.Context, token pkcs11.TokenInfo, present []pkcs11.TokenInfo) (*usb.Defaults, error)
}

// USBFactoryPINs finds a token's model through the USB bus and the model registry: the
// token is tied to an attached device (usb.Tie), whose registry model carries its
// factory PINs (usb.Model.Defaults).
type USBFactoryPINs struct {
	USB      usb.Enumerator
	Registry *usb.Registry
}

var _ FactoryPINs = USBFactoryPINs{}

// Defaults implements FactoryPINs.
func (f USBFactoryPINs) Defaults(ctx context.Context, token pkcs11.TokenInfo, present []pkcs11.TokenInfo) (*usb.Defaults, error) {
	if f.USB == nil || f.Registry == nil {
		return nil, nil
	}
	devices, err := usb.Identify(ctx, f.USB, f.Registry)
	if err != nil {
		return nil, fmt.Errorf("USB enumeration: %w", err)
	}
	refs := make([]usb.TokenRef, 0, len(present))
	for _, t := range present {
		refs = append(refs, usb.TokenRef{Serial: t.Serial, Manufacturer: t.Manufacturer})
	}
	d := usb.Tie(usb.TokenRef{Serial: token.Serial, Manufacturer: token.Manufacturer}, devices, refs)
	if d == nil || d.Model.Defaults == nil {
		return nil, nil
	}
	def := *d.Model.Defaults
	return &def, nil
}
