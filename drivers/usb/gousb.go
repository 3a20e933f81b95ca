//go:build cgo && !windows

package usb

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/gousb"
	"github.com/rs/zerolog"
)

// GoUSB enumerates devices through libusb (gousb). libusb has no portable hotplug here, so
// callers poll Devices; with no device attached a call costs microseconds.
type GoUSB struct {
	log  zerolog.Logger
	want func(vid, pid uint16) bool

	mu  sync.Mutex // guards ctx: gousb's Context is not documented as safe for concurrent use
	ctx *gousb.Context
}

// NewGoUSB initialises libusb. want selects the devices opened to read their serial,
// manufacturer and product strings (nil: all); every device is listed either way. Opening
// only known tokens avoids touching unrelated devices and permission noise.
func NewGoUSB(log zerolog.Logger, want func(vid, pid uint16) bool) (e *GoUSB, err error) {
	// gousb panics when libusb_init fails (e.g. no usbfs in a container): turn it into an
	// error so the agent can carry on with PKCS#11 polling only.
	defer func() {
		if p := recover(); p != nil {
			e, err = nil, fmt.Errorf("usb: libusb initialisation failed: %v", p)
		}
	}()
	return &GoUSB{log: log, want: want, ctx: gousb.NewContext()}, nil
}

// Devices lists the attached devices. Opening a device or reading its strings may fail
// (permissions, device gone meanwhile): that is logged at debug level and the device is
// listed with what its descriptor says.
func (e *GoUSB) Devices(ctx context.Context) ([]Device, error) {
	if e == nil {
		// A nil *GoUSB stored in an interface (NewGoUSB failed) must not crash a poller.
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil {
		return nil, ErrClosed
	}
	var all []Device
	index := map[[2]int]int{} // bus, address -> position in all
	opened, err := e.ctx.OpenDevices(func(desc *gousb.DeviceDesc) bool {
		d := Device{VID: uint16(desc.Vendor), PID: uint16(desc.Product), Bus: desc.Bus, Address: desc.Address}
		index[[2]int{d.Bus, d.Address}] = len(all)
		all = append(all, d)
		return e.want == nil || e.want(d.VID, d.PID)
	})
	if err != nil {
		// OpenDevices reports the last failure but still returns what it could open.
		e.log.Debug().Err(err).Msg("usb: some devices could not be opened; their strings are not read")
	}
	for _, od := range opened {
		i, ok := index[[2]int{od.Desc.Bus, od.Desc.Address}]
		if ok {
			all[i].Serial = e.readString(od, "serial", od.SerialNumber)
			all[i].Manufacturer = e.readString(od, "manufacturer", od.Manufacturer)
			all[i].Product = e.readString(od, "product", od.Product)
		}
		if cerr := od.Close(); cerr != nil {
			e.log.Debug().Err(cerr).Str("device", od.Desc.String()).Msg("usb: closing device")
		}
	}
	if len(all) == 0 && err != nil {
		// Nothing listed and an error: the bus itself could not be read.
		return nil, fmt.Errorf("usb: listing devices: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return all, nil
}

func (e *GoUSB) readString(d *gousb.Device, what string, read func() (string, error)) string {
	s, err := read()
	if err != nil {
		e.log.Debug().Err(err).Str("device", d.Desc.String()).Msgf("usb: reading %s string", what)
		return ""
	}
	return s
}

// Close releases libusb. It is safe to call more than once.
func (e *GoUSB) Close() error {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil {
		return nil
	}
	err := e.ctx.Close()
	e.ctx = nil
	if err != nil {
		return fmt.Errorf("usb: closing libusb: %w", err)
	}
	return nil
}

// ErrClosed is returned by Devices after Close.
var ErrClosed = errors.New("usb: enumerator closed")
