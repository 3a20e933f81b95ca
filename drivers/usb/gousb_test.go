//go:build cgo

package usb

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// sysfsDeviceCount counts the USB devices (root hubs included, interfaces excluded) the
// Linux kernel exposes, which is what libusb enumerates. On the project's build machines
// there is no USB bus at all and the count is zero.
func sysfsDeviceCount(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/sys/bus/usb/devices")
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !strings.Contains(e.Name(), ":") {
			n++
		}
	}
	return n
}

func TestGoUSBRealBus(t *testing.T) {
	reg := defaultRegistry(t)
	e, err := NewGoUSB(zerolog.New(zerolog.NewTestWriter(t)), reg.Known)
	if err != nil {
		t.Fatalf("libusb did not initialise: %v", err)
	}
	devs, err := e.Devices(context.Background())
	if err != nil {
		t.Fatalf("Devices: %v", err)
	}
	if want := sysfsDeviceCount(t); len(devs) != want {
		t.Fatalf("gousb listed %d devices, the kernel shows %d: %+v", len(devs), want, devs)
	}
	// Polling repeatedly must not leak handles: Close fails if a device stayed open.
	for range 3 {
		if _, err := e.Devices(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Devices(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := e.Devices(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Devices after Close: %v", err)
	}
}
