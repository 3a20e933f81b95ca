// Package usb detects USB crypto tokens and knows token models: a registry maps a USB
// VID:PID to vendor, model, family, the PKCS#11 modules to load per OS and what the model
// can do. Detection is a hint only (PKCS#11 slot and token presence is the authority): it
// names the model early, before the token is visible to its module, and tells which module
// to load.
package usb

import (
	"context"
	"fmt"
)

// Device is a USB device as seen on the bus. String fields are read best-effort: they are
// empty when the device could not be opened (permissions) or has no such descriptor.
type Device struct {
	VID, PID     uint16
	Bus, Address int
	Serial       string
	Manufacturer string
	Product      string
}

// ID returns the device's VID:PID as "vvvv:pppp".
func (d Device) ID() string { return FormatID(d.VID, d.PID) }

// String identifies the device for logs.
func (d Device) String() string {
	s := fmt.Sprintf("%s bus %d addr %d", d.ID(), d.Bus, d.Address)
	if d.Product != "" {
		s += " " + d.Product
	}
	return s
}

// Enumerator lists the USB devices currently attached.
type Enumerator interface {
	Devices(ctx context.Context) ([]Device, error)
}

// Identified is a detected device with its registry model.
type Identified struct {
	Device Device
	Model  Model
}

// Identify lists the attached devices that the registry knows as tokens.
func Identify(ctx context.Context, e Enumerator, r *Registry) ([]Identified, error) {
	devs, err := e.Devices(ctx)
	if err != nil {
		return nil, err
	}
	var out []Identified
	for _, d := range devs {
		if m, ok := r.Match(d); ok {
			out = append(out, Identified{Device: d, Model: m})
		}
	}
	return out, nil
}
