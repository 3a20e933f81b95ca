//go:build cgo

package watch

import (
	"testing"

	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

// The real libusb enumerator on a machine without a USB bus (the project's build machines)
// lists nothing; the watcher must work on PKCS#11 alone and report no USB error.
func TestRunWithRealGoUSB(t *testing.T) {
	reg, err := usb.DefaultRegistry()
	if err != nil {
		t.Fatal(err)
	}
	enum, err := usb.NewGoUSB(testLogger(t), reg.Known)
	if err != nil {
		t.Fatalf("libusb: %v", err)
	}
	t.Cleanup(func() {
		if err := enum.Close(); err != nil {
			t.Error(err)
		}
	})
	src := &fakeTokens{}
	src.set(softToken("aaaa", "alpha"))
	h := startRun(t, Config{InsertAfter: 2, RemoveAfter: 2, Registry: reg}, enum, src)
	h.tick()
	ev := h.next()
	if ev.Kind != Inserted || ev.Token.Serial != "aaaa" {
		t.Fatalf("event %+v (a USB error here means the real enumerator failed)", ev)
	}
	if ev.Token.USB != nil {
		t.Fatalf("soft token tied to USB device %+v", ev.Token.USB)
	}
	src.set()
	h.tick()
	h.tick()
	if ev := h.next(); ev.Kind != Removed {
		t.Fatalf("event %+v", ev)
	}
	for _, d := range h.w.Devices() {
		// Only possible on a machine with a real token attached.
		t.Logf("attached token device: %s %s", d.Device, d.Model.Name)
	}
	select {
	case ev := <-h.w.Events():
		t.Fatalf("unexpected event %+v", ev)
	default:
	}
}
