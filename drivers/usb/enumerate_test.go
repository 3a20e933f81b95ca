package usb

import (
	"context"
	"errors"
	"testing"
)

// fakeEnumerator is a USB bus in memory.
type fakeEnumerator struct {
	devices []Device
	err     error
}

func (f *fakeEnumerator) Devices(ctx context.Context) ([]Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return append([]Device(nil), f.devices...), f.err
}

func TestIdentify(t *testing.T) {
	r := defaultRegistry(t)
	bus := &fakeEnumerator{devices: []Device{
		{VID: 0x1d6b, PID: 0x0002, Bus: 1, Address: 1, Product: "root hub"},
		{VID: 0x1050, PID: 0x0407, Bus: 1, Address: 7, Serial: "", Product: "YubiKey OTP+FIDO+CCID"},
		{VID: 0x046d, PID: 0xc52b, Bus: 1, Address: 3, Product: "Unifying Receiver"},
		{VID: 0x0a89, PID: 0x0030, Bus: 2, Address: 4, Product: "Rutoken ECP"},
	}}
	got, err := Identify(context.Background(), bus, r)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		addr  int
		model string
	}{{7, "YubiKey 4/5 OTP+FIDO+CCID"}, {4, "Rutoken ECP"}}
	if len(got) != len(want) {
		t.Fatalf("identified %d devices, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Device.Address != w.addr || got[i].Model.Name != w.model {
			t.Errorf("[%d] = %s %q, want addr %d %q", i, got[i].Device, got[i].Model.Name, w.addr, w.model)
		}
	}

	boom := errors.New("bus gone")
	if _, err := Identify(context.Background(), &fakeEnumerator{err: boom}, r); !errors.Is(err, boom) {
		t.Fatalf("enumerator error not passed on: %v", err)
	}
}

func TestMatch(t *testing.T) {
	r := defaultRegistry(t)
	tests := []struct {
		dev  Device
		ok   bool
		name string
	}{
		{Device{VID: 0x20a0, PID: 0x4211}, true, "Nitrokey Start"},
		{Device{VID: 0x20a0, PID: 0x41e5}, false, ""}, // BlinkStick shares the VID
		{Device{VID: 0x096e, PID: 0x080a}, true, "ePass2003 Auto"},
		{Device{VID: 0x0000, PID: 0x0000}, false, ""},
	}
	for _, tc := range tests {
		m, ok := r.Match(tc.dev)
		if ok != tc.ok || m.Name != tc.name {
			t.Errorf("Match(%s) = %q, %v; want %q, %v", tc.dev.ID(), m.Name, ok, tc.name, tc.ok)
		}
	}
}

func TestDeviceString(t *testing.T) {
	d := Device{VID: 0x1050, PID: 0x0407, Bus: 3, Address: 9, Product: "YubiKey"}
	if got, want := d.String(), "1050:0407 bus 3 addr 9 YubiKey"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}
