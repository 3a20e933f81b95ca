//go:build !cgo || windows

package usb

import (
	"context"
	"errors"

	"github.com/rs/zerolog"
)

// ErrNoCgo is returned when this build has no libusb: built without cgo, or for Windows,
// where the agent leaves detection to PKCS#11 slot polling (libusb is not part of the
// Windows cross-build).
var ErrNoCgo = errors.New("usb: USB detection unavailable in this build (no cgo, or Windows: PKCS#11 polling only)")

// ErrClosed is returned by Devices after Close.
var ErrClosed = errors.New("usb: enumerator closed")

// GoUSB is unavailable in this build; NewGoUSB says so.
type GoUSB struct{}

// NewGoUSB returns ErrNoCgo: this build has no libusb.
func NewGoUSB(log zerolog.Logger, want func(vid, pid uint16) bool) (*GoUSB, error) {
	return nil, ErrNoCgo
}

// Devices returns ErrNoCgo.
func (e *GoUSB) Devices(ctx context.Context) ([]Device, error) { return nil, ErrNoCgo }

// Close does nothing.
func (e *GoUSB) Close() error { return nil }
