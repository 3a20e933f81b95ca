//go:build !cgo

package usb

import (
	"context"
	"errors"
	"testing"

	"github.com/rs/zerolog"
)

func TestGoUSBWithoutCgo(t *testing.T) {
	e, err := NewGoUSB(zerolog.Nop(), nil)
	if !errors.Is(err, ErrNoCgo) || e != nil {
		t.Fatalf("NewGoUSB = %v, %v; want ErrNoCgo", e, err)
	}
	var g GoUSB
	if _, err := g.Devices(context.Background()); !errors.Is(err, ErrNoCgo) {
		t.Fatalf("Devices: %v", err)
	}
}
