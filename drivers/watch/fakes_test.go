package watch

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

// fakeTokens is a TokenSource whose answer the test sets between polls.
type fakeTokens struct {
	mu    sync.Mutex
	toks  []TokenState
	err   error
	calls int
}

func (f *fakeTokens) set(toks ...TokenState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.toks, f.err = toks, nil
}

// answer sets tokens and an error together (a partial answer).
func (f *fakeTokens) answer(err error, toks ...TokenState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.toks, f.err = toks, err
}

func (f *fakeTokens) Tokens(ctx context.Context) ([]TokenState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if f.err != nil && len(f.toks) == 0 {
		return nil, f.err
	}
	return slices.Clone(f.toks), f.err
}

// fakeUSB is a USBSource whose bus the test sets between polls.
type fakeUSB struct {
	mu   sync.Mutex
	devs []usb.Device
	err  error
}

func (f *fakeUSB) set(devs ...usb.Device) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.devs, f.err = devs, nil
}

func (f *fakeUSB) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeUSB) Devices(ctx context.Context) ([]usb.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if f.err != nil {
		return nil, f.err
	}
	return slices.Clone(f.devs), nil
}

// fakeTicker lets a test decide when the next poll happens.
type fakeTicker struct {
	c       chan time.Time
	mu      sync.Mutex
	stopped bool
}

func newFakeTicker() *fakeTicker { return &fakeTicker{c: make(chan time.Time)} }

func (f *fakeTicker) C() <-chan time.Time { return f.c }
func (f *fakeTicker) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
}

func (f *fakeTicker) isStopped() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stopped
}

var fixedTime = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
}

func newWatcher(t *testing.T, cfg Config, u USBSource, tok TokenSource) *Watcher {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return fixedTime }
	}
	return New(cfg, u, tok, testLogger(t))
}

// drain returns the events waiting in the channel without blocking.
func drain(w *Watcher) []Event {
	var out []Event
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				return out
			}
			out = append(out, ev)
		default:
			return out
		}
	}
}

func kinds(evs []Event) []EventKind {
	out := make([]EventKind, len(evs))
	for i, e := range evs {
		out[i] = e.Kind
	}
	return out
}

// pollN runs n polls synchronously, as Run would on n ticks.
func pollN(w *Watcher, n int) {
	for range n {
		w.poll(context.Background())
	}
}

func softToken(serial, label string) TokenState {
	return TokenState{
		ModulePath:   "/usr/lib/softhsm/libsofthsm2.so",
		Serial:       serial,
		Label:        label,
		Manufacturer: "SoftHSM project",
		Model:        "SoftHSM v2",
		Initialized:  true,
		Flags:        TokenFlags{UserPINInitialized: true, LoginRequired: true},
	}
}

func yubiToken(serial string) TokenState {
	return TokenState{
		ModulePath:   "/usr/lib/x86_64-linux-gnu/libykcs11.so",
		Serial:       serial,
		Label:        "YubiKey PIV #" + serial,
		Manufacturer: "Yubico (www.yubico.com)",
		Model:        "YubiKey YK5",
		Initialized:  true,
		Flags:        TokenFlags{UserPINInitialized: true, LoginRequired: true},
	}
}

var (
	yubiDev     = usb.Device{VID: 0x1050, PID: 0x0407, Bus: 1, Address: 5, Product: "YubiKey OTP+FIDO+CCID", Serial: "12345678"}
	rutokenDev  = usb.Device{VID: 0x0a89, PID: 0x0030, Bus: 1, Address: 6, Product: "Rutoken ECP"}
	keyboardDev = usb.Device{VID: 0x046d, PID: 0xc31c, Bus: 1, Address: 2, Product: "Keyboard"}
)
