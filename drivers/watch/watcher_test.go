package watch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

// step is one poll: what the token source answers, what events follow, what is present.
type step struct {
	toks    []TokenState
	err     error
	want    []EventKind
	present []string // serials in Snapshot after the poll
}

func runSteps(t *testing.T, cfg Config, steps []step) []Event {
	t.Helper()
	src := &fakeTokens{}
	w := newWatcher(t, cfg, nil, src)
	var all []Event
	for i, s := range steps {
		src.answer(s.err, s.toks...)
		w.poll(context.Background())
		evs := drain(w)
		all = append(all, evs...)
		if got := kinds(evs); !slices.Equal(got, s.want) {
			t.Fatalf("poll %d: events %v, want %v (%+v)", i+1, got, s.want, evs)
		}
		var serials []string
		for _, tok := range w.Snapshot() {
			serials = append(serials, tok.Serial)
		}
		if !slices.Equal(serials, s.present) {
			t.Fatalf("poll %d: present %v, want %v", i+1, serials, s.present)
		}
	}
	return all
}

func TestDebounce(t *testing.T) {
	a := softToken("aaaa", "alpha")
	b := softToken("bbbb", "beta")
	none := []TokenState{}
	boom := errors.New("C_GetSlotList: CKR_GENERAL_ERROR")
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{
			name: "insert after two polls, remove after two",
			cfg:  Config{InsertAfter: 2, RemoveAfter: 2},
			steps: []step{
				{toks: []TokenState{a}},
				{toks: []TokenState{a}, want: []EventKind{Inserted}, present: []string{"aaaa"}},
				{toks: none, present: []string{"aaaa"}},
				{toks: none, want: []EventKind{Removed}},
				{toks: none},
			},
		},
		{
			name: "flicker on insert is not an insert",
			cfg:  Config{InsertAfter: 2, RemoveAfter: 2},
			steps: []step{
				{toks: []TokenState{a}},
				{toks: none},
				{toks: []TokenState{a}},
				{toks: []TokenState{a}, want: []EventKind{Inserted}, present: []string{"aaaa"}},
			},
		},
		{
			name: "flicker while present is not a removal",
			cfg:  Config{InsertAfter: 1, RemoveAfter: 3},
			steps: []step{
				{toks: []TokenState{a}, want: []EventKind{Inserted}, present: []string{"aaaa"}},
				{toks: none, present: []string{"aaaa"}},
				{toks: none, present: []string{"aaaa"}},
				{toks: []TokenState{a}, present: []string{"aaaa"}},
				{toks: none, present: []string{"aaaa"}},
				{toks: none, present: []string{"aaaa"}},
				{toks: none, want: []EventKind{Removed}},
			},
		},
		{
			name: "no debounce with 1",
			cfg:  Config{InsertAfter: 1, RemoveAfter: 1},
			steps: []step{
				{toks: []TokenState{a, b}, want: []EventKind{Inserted, Inserted}, present: []string{"aaaa", "bbbb"}},
				{toks: []TokenState{b}, want: []EventKind{Removed}, present: []string{"bbbb"}},
			},
		},
		{
			name: "failed polls are neither seen nor missing",
			cfg:  Config{InsertAfter: 2, RemoveAfter: 2},
			steps: []step{
				{toks: []TokenState{a}},
				{toks: []TokenState{a}, want: []EventKind{Inserted}, present: []string{"aaaa"}},
				{err: boom, want: []EventKind{SourceError}, present: []string{"aaaa"}},
				{err: boom, present: []string{"aaaa"}},
				{err: boom, present: []string{"aaaa"}},
				{err: boom, present: []string{"aaaa"}},
				{toks: []TokenState{a}, want: []EventKind{SourceRecovered}, present: []string{"aaaa"}},
				{toks: none, present: []string{"aaaa"}},
				{err: boom, want: []EventKind{SourceError}, present: []string{"aaaa"}},
				{toks: none, want: []EventKind{SourceRecovered, Removed}},
			},
		},
		{
			name: "a failure between sightings does not break the insert streak",
			cfg:  Config{InsertAfter: 2, RemoveAfter: 2},
			steps: []step{
				{toks: []TokenState{a}},
				{err: boom, want: []EventKind{SourceError}},
				{toks: []TokenState{a}, want: []EventKind{SourceRecovered, Inserted}, present: []string{"aaaa"}},
			},
		},
		{
			name: "token present at start is reported as inserted",
			cfg:  Config{},
			steps: []step{
				{toks: []TokenState{a, b}},
				{toks: []TokenState{b, a}, want: []EventKind{Inserted, Inserted}, present: []string{"aaaa", "bbbb"}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { runSteps(t, tc.cfg, tc.steps) })
	}
}

func TestChanged(t *testing.T) {
	blank := softToken("cccc", "")
	blank.Initialized = false
	blank.Flags = TokenFlags{}
	initd := softToken("cccc", "issued-to-alice")
	locked := initd
	locked.Flags.UserPIN = PINFlags{CountLow: true, FinalTry: true, Locked: true}

	evs := runSteps(t, Config{InsertAfter: 2, RemoveAfter: 2}, []step{
		{toks: []TokenState{blank}},
		{toks: []TokenState{blank}, want: []EventKind{Inserted}, present: []string{"cccc"}},
		// initialisation seen once, then the token flips back: no change yet
		{toks: []TokenState{initd}, present: []string{"cccc"}},
		{toks: []TokenState{blank}, present: []string{"cccc"}},
		// now it holds
		{toks: []TokenState{initd}, present: []string{"cccc"}},
		{toks: []TokenState{initd}, want: []EventKind{Changed}, present: []string{"cccc"}},
		{toks: []TokenState{initd}, present: []string{"cccc"}},
		// PIN locked: a flags change is a change too
		{toks: []TokenState{locked}, present: []string{"cccc"}},
		{toks: []TokenState{locked}, want: []EventKind{Changed}, present: []string{"cccc"}},
	})
	first := evs[1]
	if first.Kind != Changed || first.Previous == nil {
		t.Fatalf("first change event: %+v", first)
	}
	if first.Previous.Initialized || first.Previous.Label != "" || !first.Token.Initialized || first.Token.Label != "issued-to-alice" {
		t.Fatalf("change reported %+v -> %+v", *first.Previous, first.Token)
	}
	second := evs[2]
	if !second.Token.Flags.UserPIN.Locked || second.Previous.Flags.UserPIN.Locked {
		t.Fatalf("PIN lock change reported %+v -> %+v", second.Previous.Flags, second.Token.Flags)
	}
	if second.Time != fixedTime {
		t.Fatalf("event time %v, want the injected clock's %v", second.Time, fixedTime)
	}
}

func TestRemovedCarriesLastState(t *testing.T) {
	a := softToken("aaaa", "alpha")
	evs := runSteps(t, Config{InsertAfter: 1, RemoveAfter: 1}, []step{
		{toks: []TokenState{a}, want: []EventKind{Inserted}, present: []string{"aaaa"}},
		{toks: nil, want: []EventKind{Removed}},
	})
	if got := evs[1].Token; got.Serial != "aaaa" || got.Label != "alpha" || got.ModulePath != a.ModulePath {
		t.Fatalf("removed event token = %+v", got)
	}
}

// Identity is module + serial: the same serial in two modules is two tokens, and a
// token without a serial is tracked by its label.
func TestTokenKey(t *testing.T) {
	viaOpenSC := yubiToken("1234")
	viaOpenSC.ModulePath = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
	noSerial := softToken("", "no-serial")
	runSteps(t, Config{InsertAfter: 1, RemoveAfter: 1}, []step{
		{toks: []TokenState{yubiToken("1234"), viaOpenSC, noSerial}, want: []EventKind{Inserted, Inserted, Inserted},
			present: []string{"", "1234", "1234"}},
		// a duplicate listing within one poll is ignored
		{toks: []TokenState{yubiToken("1234"), yubiToken("1234"), viaOpenSC, noSerial}, present: []string{"", "1234", "1234"}},
	})
	if softToken("", "x").Key() == softToken("", "y").Key() || softToken("s", "x").Key() != softToken("s", "y").Key() {
		t.Fatal("Key does not follow serial, then label")
	}
}

func TestPartialModuleFailure(t *testing.T) {
	soft := softToken("aaaa", "alpha")
	yk := yubiToken("1234")
	ykErr := &ModuleError{ModulePath: yk.ModulePath, Err: errors.New("CKR_DEVICE_ERROR")}
	evs := runSteps(t, Config{InsertAfter: 1, RemoveAfter: 2}, []step{
		{toks: []TokenState{soft, yk}, want: []EventKind{Inserted, Inserted}, present: []string{"aaaa", "1234"}},
		// ykcs11 fails and the soft token is gone: only the soft token may go
		{toks: nil, err: errors.Join(ykErr), want: []EventKind{SourceError}, present: []string{"aaaa", "1234"}},
		{toks: nil, err: fmt.Errorf("polling: %w", ykErr), want: []EventKind{Removed}, present: []string{"1234"}},
		{toks: nil, err: errors.Join(ykErr), present: []string{"1234"}},
		// ykcs11 answers again, without the token
		{toks: []TokenState{}, want: []EventKind{SourceRecovered}, present: []string{"1234"}},
		{toks: []TokenState{}, want: []EventKind{Removed}},
	})
	if evs[2].ModulePath != yk.ModulePath || evs[2].Source != SourceTokens {
		t.Fatalf("module error event = %+v", evs[2])
	}
	if evs[3].Token.Serial != "aaaa" {
		t.Fatalf("removed %+v, want the soft token", evs[3].Token)
	}
}

func TestModuleErrors(t *testing.T) {
	m1 := &ModuleError{ModulePath: "/a.so", Err: errors.New("x")}
	m2 := &ModuleError{ModulePath: "/b.so", Err: errors.New("y")}
	other := errors.New("C_Initialize failed")
	tests := []struct {
		name    string
		err     error
		partial bool
		mods    []string
	}{
		{"single", m1, true, []string{"/a.so"}},
		{"wrapped", fmt.Errorf("poll: %w", m1), true, []string{"/a.so"}},
		{"joined", errors.Join(m1, m2), true, []string{"/a.so", "/b.so"}},
		{"joined and wrapped", fmt.Errorf("poll: %w", errors.Join(m1, fmt.Errorf("again: %w", m2))), true, []string{"/a.so", "/b.so"}},
		{"other", other, false, nil},
		{"module and other", errors.Join(m1, other), false, []string{"/a.so"}},
		{"multi %w with other", fmt.Errorf("%w; %w", m1, other), false, []string{"/a.so"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mods, partial := moduleErrors(tc.err)
			var got []string
			for p := range mods {
				got = append(got, p)
			}
			slices.Sort(got)
			if partial != tc.partial || !slices.Equal(got, tc.mods) {
				t.Fatalf("moduleErrors = %v, %v; want %v, %v", got, partial, tc.mods, tc.partial)
			}
		})
	}
	if !strings.Contains(m1.Error(), "/a.so") || !errors.Is(fmt.Errorf("w: %w", m1), m1.Err) {
		t.Fatal("ModuleError does not name the module or unwrap")
	}
}

func TestUSBHintsAndTie(t *testing.T) {
	bus := &fakeUSB{}
	src := &fakeTokens{}
	w := newWatcher(t, Config{InsertAfter: 2, RemoveAfter: 2}, bus, src)

	// A YubiKey and a keyboard are plugged in; the PKCS#11 module does not show the
	// token yet (middleware still starting).
	bus.set(yubiDev, keyboardDev)
	pollN(w, 1)
	if evs := drain(w); len(evs) != 0 {
		t.Fatalf("events before debounce: %+v", evs)
	}
	pollN(w, 1)
	evs := drain(w)
	if len(evs) != 1 || evs[0].Kind != DeviceAttached || !evs[0].Pending || evs[0].Device.Model.Name != "YubiKey 4/5 OTP+FIDO+CCID" {
		t.Fatalf("want one pending DeviceAttached for the YubiKey, got %+v", evs)
	}
	if devs := w.Devices(); len(devs) != 1 || devs[0].Device != yubiDev {
		t.Fatalf("Devices() = %+v", devs)
	}

	// The token shows up: tied to the device by its serial.
	src.set(yubiToken("12345678"), softToken("aaaa", "alpha"))
	pollN(w, 2)
	evs = drain(w)
	if got := kinds(evs); !slices.Equal(got, []EventKind{Inserted, Inserted}) {
		t.Fatalf("events %v", got)
	}
	for _, ev := range evs {
		switch ev.Token.Serial {
		case "12345678":
			if ev.Token.USB == nil || ev.Token.USB.Device != yubiDev || ev.Token.USB.Model.Family != "yubikey-ccid" {
				t.Fatalf("YubiKey token not tied to its device: %+v", ev.Token.USB)
			}
		case "aaaa":
			if ev.Token.USB != nil {
				t.Fatalf("soft token tied to a USB device: %+v", ev.Token.USB)
			}
		}
	}

	// Unplugged: the USB device and the token go.
	bus.set(keyboardDev)
	src.set(softToken("aaaa", "alpha"))
	pollN(w, 2)
	evs = drain(w)
	if got := kinds(evs); !slices.Equal(got, []EventKind{DeviceDetached, Removed}) {
		t.Fatalf("events %v", got)
	}
	if evs[1].Token.Serial != "12345678" || evs[1].Token.USB == nil {
		t.Fatalf("removed token %+v", evs[1].Token)
	}
	if len(w.Devices()) != 0 {
		t.Fatalf("Devices() after detach: %+v", w.Devices())
	}
}

func TestTieByManufacturer(t *testing.T) {
	rutoken := TokenState{ModulePath: "/usr/lib/librtpkcs11ecp.so", Serial: "3a7c10f2", Label: "Rutoken ECP <no label>",
		Manufacturer: "Aktiv Co.", Model: "Rutoken ECP", Initialized: true}
	tests := []struct {
		name   string
		devs   []usb.Device
		toks   []TokenState
		tiedTo map[string]*usb.Device // serial -> device
	}{
		{"one device one token of the vendor", []usb.Device{rutokenDev, yubiDev},
			[]TokenState{rutoken, softToken("aaaa", "a")},
			map[string]*usb.Device{"3a7c10f2": &rutokenDev, "aaaa": nil}},
		{"two devices of the vendor: ambiguous", []usb.Device{rutokenDev, {VID: 0x0a89, PID: 0x0030, Bus: 2, Address: 9}},
			[]TokenState{rutoken},
			map[string]*usb.Device{"3a7c10f2": nil}},
		{"two tokens of the vendor: ambiguous", []usb.Device{rutokenDev},
			[]TokenState{rutoken, func() TokenState { r := rutoken; r.Serial = "0000beef"; return r }()},
			map[string]*usb.Device{"3a7c10f2": nil, "0000beef": nil}},
		{"serial wins over vendor", []usb.Device{yubiDev, {VID: 0x1050, PID: 0x0404, Bus: 3, Address: 1, Serial: "999"}},
			[]TokenState{yubiToken("999")},
			map[string]*usb.Device{"999": {VID: 0x1050, PID: 0x0404, Bus: 3, Address: 1, Serial: "999"}}},
		{"no usb device", nil, []TokenState{rutoken}, map[string]*usb.Device{"3a7c10f2": nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bus := &fakeUSB{}
			bus.set(tc.devs...)
			src := &fakeTokens{}
			src.set(tc.toks...)
			w := newWatcher(t, Config{InsertAfter: 1, RemoveAfter: 1}, bus, src)
			pollN(w, 1)
			snap := w.Snapshot()
			if len(snap) != len(tc.toks) {
				t.Fatalf("snapshot %+v", snap)
			}
			for _, tok := range snap {
				want := tc.tiedTo[tok.Serial]
				switch {
				case want == nil && tok.USB != nil:
					t.Errorf("%s tied to %s, want none", tok.Serial, tok.USB.Device)
				case want != nil && (tok.USB == nil || tok.USB.Device != *want):
					t.Errorf("%s tied to %+v, want %s", tok.Serial, tok.USB, want)
				}
			}
		})
	}
}

// A token seen before its USB device (USB polled late or libusb slow) gets tied later.
func TestTieAfterInsert(t *testing.T) {
	bus := &fakeUSB{}
	src := &fakeTokens{}
	src.set(yubiToken("12345678"))
	w := newWatcher(t, Config{InsertAfter: 1, RemoveAfter: 1}, bus, src)
	pollN(w, 1)
	if s := w.Snapshot(); len(s) != 1 || s[0].USB != nil {
		t.Fatalf("snapshot %+v", s)
	}
	bus.set(yubiDev)
	pollN(w, 1)
	evs := drain(w)
	if got := kinds(evs); !slices.Equal(got, []EventKind{Inserted, DeviceAttached}) {
		t.Fatalf("events %v", got)
	}
	if evs[1].Pending || evs[1].Token.Serial != "12345678" {
		t.Fatalf("DeviceAttached should name the visible token: %+v", evs[1])
	}
	if s := w.Snapshot(); s[0].USB == nil || s[0].USB.Device != yubiDev {
		t.Fatalf("token not tied after its device appeared: %+v", s[0].USB)
	}
}

func TestUSBFailureKeepsTokensGoing(t *testing.T) {
	bus := &fakeUSB{}
	bus.set(yubiDev)
	src := &fakeTokens{}
	src.set(yubiToken("12345678"))
	w := newWatcher(t, Config{InsertAfter: 1, RemoveAfter: 1}, bus, src)
	pollN(w, 1)
	if got := kinds(drain(w)); !slices.Equal(got, []EventKind{DeviceAttached, Inserted}) {
		t.Fatalf("events %v", got)
	}
	bus.fail(errors.New("libusb: LIBUSB_ERROR_IO"))
	src.set(yubiToken("12345678"), softToken("aaaa", "alpha"))
	pollN(w, 3)
	evs := drain(w)
	if got := kinds(evs); !slices.Equal(got, []EventKind{SourceError, Inserted}) {
		t.Fatalf("events %v", got)
	}
	if evs[0].Source != SourceUSB || evs[0].Err == nil {
		t.Fatalf("usb error event %+v", evs[0])
	}
	// the device is held as attached while USB cannot be read
	if len(w.Devices()) != 1 {
		t.Fatalf("Devices() = %+v", w.Devices())
	}
	bus.set()
	pollN(w, 1)
	if got := kinds(drain(w)); !slices.Equal(got, []EventKind{SourceRecovered, DeviceDetached}) {
		t.Fatalf("events %v", got)
	}
}

func TestNoUSBSource(t *testing.T) {
	src := &fakeTokens{}
	src.set(softToken("aaaa", "alpha"))
	w := newWatcher(t, Config{InsertAfter: 1}, nil, src)
	pollN(w, 1)
	if got := kinds(drain(w)); !slices.Equal(got, []EventKind{Inserted}) {
		t.Fatalf("events %v", got)
	}
}

// A full buffer drops the oldest events and never blocks the poll loop.
func TestEventBufferDropsOldest(t *testing.T) {
	src := &fakeTokens{}
	w := newWatcher(t, Config{InsertAfter: 1, RemoveAfter: 1, EventBuffer: 2}, nil, src)
	for i := range 4 {
		src.set(softToken(fmt.Sprintf("s%d", i), "t"))
		pollN(w, 1) // each poll: Removed (previous) + Inserted (new), the first only Inserted
	}
	evs := drain(w)
	if len(evs) != 2 {
		t.Fatalf("buffer holds %d events, want 2", len(evs))
	}
	if evs[0].Kind != Removed || evs[0].Token.Serial != "s2" || evs[1].Kind != Inserted || evs[1].Token.Serial != "s3" {
		t.Fatalf("kept %+v, want the newest two", evs)
	}
	if got := w.Dropped(); got != 5 {
		t.Fatalf("Dropped() = %d, want 5", got)
	}
}

func TestConfig(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	err := Config{PollInterval: -time.Second, InsertAfter: -1, RemoveAfter: -2, EventBuffer: -3, PollTimeout: -1}.Validate()
	for _, want := range []string{"poll interval -1s", "insert_after -1", "remove_after -2", "event buffer -3", "poll timeout -1ns"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %v does not mention %q", err, want)
		}
	}
	d := Config{InsertAfter: -1}.withDefaults()
	if d.PollInterval != DefaultPollInterval || d.InsertAfter != DefaultInsertAfter || d.RemoveAfter != DefaultRemoveAfter ||
		d.EventBuffer != DefaultEventBuffer || d.PollTimeout != DefaultPollTimeout || d.NewTicker == nil || d.Now == nil {
		t.Fatalf("defaults not applied: %+v", d)
	}
	w := New(Config{EventBuffer: 7}, nil, &fakeTokens{}, testLogger(t))
	if cap(w.events) != 7 {
		t.Fatalf("event buffer %d, want 7", cap(w.events))
	}
}

func TestFingerprint(t *testing.T) {
	base := softToken("s", "l")
	tests := []struct {
		name   string
		mutate func(*TokenState)
		same   bool
	}{
		{"identical", func(*TokenState) {}, true},
		{"usb tie is not a change", func(t *TokenState) { t.USB = &usb.Identified{} }, true},
		{"label", func(t *TokenState) { t.Label = "m" }, false},
		{"initialised", func(t *TokenState) { t.Initialized = false }, false},
		{"user pin initialised", func(t *TokenState) { t.Flags.UserPINInitialized = false }, false},
		{"user pin count low", func(t *TokenState) { t.Flags.UserPIN.CountLow = true }, false},
		{"user pin final try", func(t *TokenState) { t.Flags.UserPIN.FinalTry = true }, false},
		{"user pin locked", func(t *TokenState) { t.Flags.UserPIN.Locked = true }, false},
		{"user pin to be changed", func(t *TokenState) { t.Flags.UserPIN.ToBeChanged = true }, false},
		{"so pin locked", func(t *TokenState) { t.Flags.SOPIN.Locked = true }, false},
		{"write protected", func(t *TokenState) { t.Flags.WriteProtected = true }, false},
		{"label with separator", func(t *TokenState) { t.Label = `l"|"x` }, false},
	}
	for _, tc := range tests {
		m := base
		tc.mutate(&m)
		if got := m.Fingerprint() == base.Fingerprint(); got != tc.same {
			t.Errorf("%s: same fingerprint = %v, want %v", tc.name, got, tc.same)
		}
	}
}
