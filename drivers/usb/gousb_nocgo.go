//go:build !cgo

package usb

import (
	"context"
	"errors"

	"github.com/rs/zerolog"
)

// ErrNoCgo is returned when tokenfleet was built without cgo: libusb cannot be used.
var ErrNoCgo = errors.New("usb: built without cgo: USB detection unavailable (rebuild with CGO_ENABLED=1)")

// ErrClosed is returned by Devices after Close.
var ErrClosed = errors.New("usb: enumerator closed")

// GoUSB is unavailable without cgo; NewGoUSB says so.
type GoUSB struct{}

// NewGoUSB returns ErrNoCgo: this build has no libusb.
func NewGoUSB(log zerolog.Logger, want func(vid, pid uint16) bool) (*GoUSB, error) {
	return nil, ErrNoCgo
}

// Devices returns ErrNoCgo.
func (e *GoUSB) Devices(ctx context.Context) ([]Device, error) { return nil, ErrNoCgo }

// Close does nothing.
func (e *GoUSB) Close() error { return nil }
