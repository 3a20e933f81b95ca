// Package watch reports crypto tokens coming and going on a workstation: inserted,
// removed and changed (re-initialised, relabelled, PIN state moved), with the token's
// identity and, when it can be tied to one, the USB device and registry model it sits on.
//
// PKCS#11 slot and token presence is the authority: a token is present when a module
// lists it. USB enumeration (libusb has no hotplug here, so it is polled too) only names
// the model and gives an early hint that a known token device is attached before its
// module shows the token. A machine without a USB bus, or a build without libusb, loses
// that hint and nothing else.
//
// Both sources are polled on one ticker; presence is debounced over consecutive polls, and
// a poll that fails changes nothing (a broken module is not "every token removed").
package watch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

// USBSource lists attached USB devices; *usb.GoUSB is one.
type USBSource interface {
	Devices(ctx context.Context) ([]usb.Device, error)
}

// TokenSource lists the tokens its PKCS#11 modules see right now.
//
// A source over several modules should keep going when one module fails: it returns the
// tokens of the modules that answered together with a *ModuleError per failed module
// (joined with errors.Join). The watcher then holds the failed modules' tokens as they
// were and treats the rest as authoritative. Any other error fails the whole poll.
type TokenSource interface {
	Tokens(ctx context.Context) ([]TokenState, error)
}

// ModuleError says one module could not be polled.
type ModuleError struct {
	ModulePath string
	Err        error
}

func (e *ModuleError) Error() string {
	return fmt.Sprintf("pkcs11 module %s: %v", e.ModulePath, e.Err)
}

func (e *ModuleError) Unwrap() error { return e.Err }

// PINFlags is the state of one PIN as the token reports it.
type PINFlags struct {
	CountLow    bool `json:"count_low"`
	FinalTry    bool `json:"final_try"`
	Locked      bool `json:"locked"`
	ToBeChanged bool `json:"to_be_changed"`
}

// TokenFlags are the token flags whose change matters to a fleet: they move when a token
// is initialised, gets its user PIN, or has its PINs blocked.
type TokenFlags struct {
	UserPINInitialized bool     `json:"user_pin_initialized"`
	LoginRequired      bool     `json:"login_required"`
	ProtectedAuthPath  bool     `json:"protected_auth_path"`
	WriteProtected     bool     `json:"write_protected"`
	UserPIN            PINFlags `json:"user_pin"`
	SOPIN              PINFlags `json:"so_pin"`
}

// TokenState is a token as a TokenSource sees it.
type TokenState struct {
	ModulePath   string     `json:"module_path"`
	Serial       string     `json:"serial"`
	Label        string     `json:"label"`
	Manufacturer string     `json:"manufacturer"`
	Model        string     `json:"model"`
	Initialized  bool       `json:"initialized"`
	Flags        TokenFlags `json:"flags"`

	// USB is the device and model the token was tied to, set by the watcher; nil when
	// none could be tied (no USB bus, a soft token, or an ambiguous match).
	USB *usb.Identified `json:"usb,omitempty"`
}

// Key identifies a token across polls: its module and serial number. Tokens without a
// serial (rare, and non-conformant) fall back to their label.
func (t TokenState) Key() string {
	if s := strings.TrimSpace(t.Serial); s != "" {
		return t.ModulePath + "\x00serial:" + s
	}
	return t.ModulePath + "\x00label:" + strings.TrimSpace(t.Label)
}

// Fingerprint covers what makes a token "changed" while it stays inserted: label,
// manufacturer, model, initialised state and flags. The USB tie is not part of it.
func (t TokenState) Fingerprint() string {
	f := t.Flags
	return fmt.Sprintf("%q|%q|%q|init=%t|upin=%t|login=%t|pap=%t|wp=%t|u=%s|so=%s",
		t.Label, t.Manufacturer, t.Model, t.Initialized, f.UserPINInitialized,
		f.LoginRequired, f.ProtectedAuthPath, f.WriteProtected, f.UserPIN.code(), f.SOPIN.code())
}

func (p PINFlags) code() string {
	b := []byte("----")
	for i, on := range []bool{p.CountLow, p.FinalTry, p.Locked, p.ToBeChanged} {
		if on {
			b[i] = "cflx"[i]
		}
	}
	return string(b)
}

// String names the token for logs.
func (t TokenState) String() string {
	return fmt.Sprintf("%q (serial %s, %s)", t.Label, t.Serial, t.ModulePath)
}

// EventKind says what happened.
type EventKind string

const (
	// Inserted: a token became present (seen in Config.InsertAfter consecutive polls).
	Inserted EventKind = "inserted"
	// Removed: a present token was missing for Config.RemoveAfter consecutive polls.
	// Event.Token is its last known state.
	Removed EventKind = "removed"
	// Changed: a present token's fingerprint changed and held for Config.InsertAfter
	// polls. Event.Previous is the state before.
	Changed EventKind = "changed"
	// DeviceAttached: a USB device the registry knows as a token was attached. When no
	// present token can be tied to it yet, Event.Pending is true: expect Inserted once a
	// module sees the token (if none does, its middleware is probably missing).
	DeviceAttached EventKind = "device_attached"
	// DeviceDetached: that device left the bus.
	DeviceDetached EventKind = "device_detached"
	// SourceError: a source started failing (Event.Source, Event.ModulePath, Event.Err).
	// Reported once per failure streak; presence is held as it was meanwhile.
	SourceError EventKind = "source_error"
	// SourceRecovered: a failing source answered again.
	SourceRecovered EventKind = "source_recovered"
)

// Source names for SourceError and SourceRecovered events.
const (
	SourceUSB    = "usb"
	SourceTokens = "tokens"
)

// Event is one thing the watcher observed.
type Event struct {
	Kind     EventKind
	Time     time.Time
	Token    TokenState      // Inserted, Removed, Changed; DeviceAttached when its token is visible
	Previous *TokenState     // Changed
	Device   *usb.Identified // DeviceAttached, DeviceDetached
	Pending  bool            // DeviceAttached with no token tied to it yet
	Source   string          // SourceError, SourceRecovered: SourceUSB or SourceTokens
	// ModulePath is set for errors of one module of a multi-module TokenSource.
	ModulePath string
	Err        error
}

// ErrAlreadyRunning is returned by a second call to Run.
var ErrAlreadyRunning = errors.New("watch: Run called more than once")
