//go:build cgo

package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	p11 "github.com/miekg/pkcs11"
	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/uri"
)

// library is one loaded PKCS#11 library. C_Initialize and C_Finalize act on the whole
// process, so every Module on the same library file shares one library and the last Close
// finalizes it.
type library struct {
	ctx      *p11.Ctx    // nil for a Module over a Backend (OpenBackend)
	backend  Backend     // what OpenBackend was given; nil for a loaded library
	key      string      // key in libraries
	file     os.FileInfo // the library file, to recognise it under a hard link; nil for a bare name
	refs     int
	finalize bool // we called C_Initialize, so C_Finalize is ours to call

	// use is the library's gate: every call into the module holds one unit of it
	// (Module.enter), reseat holds all of them, so that no call runs while the module is
	// finalized and initialised again. It serves in arrival order: a reload waiting for
	// the calls in flight holds back the calls that come after it, so it cannot starve,
	// and either side gives up waiting when its context ends.
	use *semaphore.Weighted
	// seat counts reseats that ended the module's sessions (guarded by use): a session
	// opened before the last one is gone, and its handle may name another token's
	// session now.
	seat uint64

	downMu sync.Mutex // guards down
	// down is why the module is not initialised: a reseat finalized it and its
	// C_Initialize failed. The next call tries C_Initialize again (Module.upLocked); nil
	// while the module is up.
	down error

	mu sync.Mutex // guards turns and open
	// turns holds, per token serial, the 1-slot semaphore every Token on that token holds
	// while it calls the module, whichever Module of this library it came from: see Token.
	turns map[string]chan struct{}
	// open holds, per token serial, the Tokens on it not closed yet, whichever Module of
	// this library they came from: initialising a token must first end their sessions.
	open map[string]map[*Token]struct{}
}

// useAll is the size of a library's gate: what reseat takes, and more calls than can be
// in flight.
const useAll = math.MaxInt64

func newLibrary(key string) *library {
	return &library{key: key, use: semaphore.NewWeighted(useAll)}
}

// track notes t as open, or (open false) closed.
func (l *library) track(t *Token, open bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !open {
		delete(l.open[t.serial], t)
		if len(l.open[t.serial]) == 0 {
			delete(l.open, t.serial)
		}
		return
	}
	if l.open == nil {
		l.open = map[string]map[*Token]struct{}{}
	}
	if l.open[t.serial] == nil {
		l.open[t.serial] = map[*Token]struct{}{}
	}
	l.open[t.serial][t] = struct{}{}
}

// others returns the other open Tokens on t's token.
func (l *library) others(t *Token) []*Token {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*Token, 0, len(l.open[t.serial]))
	for o := range l.open[t.serial] {
		if o != t {
			out = append(out, o)
		}
	}
	return out
}

// turn returns the semaphore of the token with the serial.
func (l *library) turn(serial string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.turns == nil {
		l.turns = map[string]chan struct{}{}
	}
	s := l.turns[serial]
	if s == nil {
		s = make(chan struct{}, 1)
		l.turns[serial] = s
	}
	return s
}

// errNoReseat says why a library cannot be reseated.
var errNoReseat = errors.New("the module was not initialised by this package (another part of the process did, or it is a backend in this process), so it cannot be reloaded here")

// reloader is what reseat and upLocked call C_Finalize and C_Initialize through: b, the
// Module's wrapped backend, if it takes them, else the library itself.
func (l *library) reloader(b Backend) Reloader {
	if r, ok := b.(Reloader); ok {
		return r
	}
	return l.ctx
}

// reseat finalizes the library and initialises it again, as unplugging a token and
// plugging it back makes a module read it afresh. Some modules keep a token's state in
// memory and do not read it again by themselves: SoftHSM2 lists a token's objects once,
// so when C_InitToken fails on an object whose files a write cut short left incomplete
// (it removes the object's file, then fails on its missing lock file), every later
// C_InitToken in the process fails on that object again, though its file is gone.
//
// It waits for the calls in flight on any token of the library to end and holds new ones
// back meanwhile; when ctx ends first it gives up, having finalized nothing, and the
// calls held back go on. Once C_Finalize ends the module's sessions, each Token opens a
// new one at its next call, and one the user was logged in through logs in again (see
// Token.sessionLocked); a C_Finalize that fails ended nothing, and every session stays.
// A C_Initialize that fails leaves the module down: each later call tries it again.
func (l *library) reseat(ctx context.Context, b Backend) error {
	if l.ctx == nil || !l.finalize {
		return errNoReseat
	}
	if err := l.use.Acquire(ctx, useAll); err != nil {
		return fmt.Errorf("gave up waiting for the calls in flight on the module to end: %w", err)
	}
	defer l.use.Release(useAll)
	// Close finalizes under libraries.mu: never reseat a library being closed. Nobody
	// takes use holding libraries.mu, so taking it after use cannot deadlock.
	libraries.mu.Lock()
	defer libraries.mu.Unlock()
	if l.refs == 0 {
		return errNoReseat
	}
	l.downMu.Lock()
	defer l.downMu.Unlock()
	r := l.reloader(b)
	if err := r.Finalize(); err != nil && rvOf(err) != p11.CKR_CRYPTOKI_NOT_INITIALIZED {
		return fmt.Errorf("C_Finalize (nothing was finalized; every session stays): %w", err)
	}
	l.seat++ // every session ended
	if err := r.Initialize(); err != nil && rvOf(err) != p11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
		l.down = err
		return fmt.Errorf("C_Initialize after C_Finalize (the module stays uninitialised; each call tries again): %w", err)
	}
	l.down = nil
	return nil
}

// libraries mirrors the process-wide state of the C libraries; it is global because
// that state is.
var libraries = struct {
	mu sync.Mutex // guards m, backends and every library's refs
	m  map[string]*library
	// backends are the libraries of OpenBackend, by the backend they stand for.
	backends map[Backend]*library
}{m: map[string]*library{}, backends: map[Backend]*library{}}

// libraryFile names the library file at path the same way whatever path leads to it:
// absolute, with symbolic links resolved (Debian's /usr/lib/softhsm/libsofthsm2.so is a
// link to /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so). The dynamic loader hands out
// one copy of a file under all its names, so two library entries for one file would share
// its state anyway: the second C_Initialize would find it initialised, the first
// Module's Close would finalize it under the second, and calls on one token through the
// two would no longer take turns. A bare name, which the loader searches for, is its own
// key.
func libraryFile(path string) (string, os.FileInfo) {
	if !strings.ContainsRune(path, os.PathSeparator) {
		return path, nil
	}
	key := filepath.Clean(path)
	if abs, err := filepath.Abs(key); err == nil {
		key = abs
	}
	if resolved, err := filepath.EvalSymlinks(key); err == nil {
		key = resolved
	}
	fi, err := os.Stat(key)
	if err != nil {
		return key, nil
	}
	return key, fi
}

// findLibraryLocked returns the loaded library of the file, by its key or, for a hard
// link to a loaded file, by its identity. libraries.mu must be held.
func findLibraryLocked(key string, fi os.FileInfo) *library {
	if lib := libraries.m[key]; lib != nil {
		return lib
	}
	if fi == nil {
		return nil
	}
	for _, lib := range libraries.m {
		if lib.file != nil && os.SameFile(lib.file, fi) {
			return lib
		}
	}
	return nil
}

// Module is a loaded PKCS#11 module. Open it once and share it; it is safe for
// concurrent use.
type Module struct {
	path string
	lib  *library // shared with every Module on the same library file
	b    Backend
	log  zerolog.Logger

	mu     sync.Mutex // guards the fields below
	closed bool
	tokens map[*Token]struct{} // open tokens, closed with the module
}

// Open loads the PKCS#11 library at path and initializes it. A library that cannot be
// loaded gives CodeModuleLoadFailed saying why: missing, unreadable, not a shared
// library, built for another architecture, no C_GetFunctionList, or refused by the loader.
func Open(path string, opts Options) (*Module, error) {
	const op = "open module"
	if path == "" {
		return nil, invalidf(op, "empty module path")
	}
	if err := checkModuleFile(path); err != nil {
		return nil, &Error{Op: op, Code: CodeModuleLoadFailed, Err: err}
	}
	key, file := libraryFile(path)

	libraries.mu.Lock()
	defer libraries.mu.Unlock()
	lib := findLibraryLocked(key, file)
	if lib == nil {
		ctx := p11.New(path)
		if ctx == nil {
			return nil, &Error{Op: op, Code: CodeModuleLoadFailed, Err: explainLoadFailure(path)}
		}
		lib = newLibrary(key)
		lib.ctx, lib.file, lib.finalize = ctx, file, true
		if err := ctx.Initialize(); err != nil {
			if rvOf(err) != p11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
				ctx.Destroy()
				return nil, &Error{Op: op, Code: CodeModuleLoadFailed, RV: rvOf(err),
					Err: fmt.Errorf("C_Initialize of %s failed (for SoftHSM2: is SOFTHSM2_CONF readable and its tokendir present?): %w", path, err)}
			}
			// Someone else in this process initialized it: C_Finalize is theirs.
			lib.finalize = false
		}
		libraries.m[key] = lib
	}
	lib.refs++

	var b Backend = lib.ctx
	if opts.Wrap != nil {
		b = opts.Wrap(b)
	}
	opts.Logger.Debug().Str("module", path).Int("users", lib.refs).Msg("pkcs11 module opened")
	return &Module{path: path, lib: lib, b: b, log: opts.Logger, tokens: map[*Token]struct{}{}}, nil
}

// OpenBackend makes a Module over b, PKCS#11 implemented in this process (a simulated
// token, see the simtoken package) rather than a library to load. name is what Path and
// errors call it. Nothing is loaded or initialised, so Close finalizes nothing. Modules
// over the same b share it as Modules on one library file do: calls on one token take
// turns whichever of them they go through. (A b of a type that cannot be a map key, such
// as a func, gets a library per Module.)
func OpenBackend(name string, b Backend, opts Options) (*Module, error) {
	const op = "open module"
	if name == "" {
		return nil, invalidf(op, "empty module name: give the backend a name to report it by")
	}
	if b == nil {
		return nil, invalidf(op, "module %s: no backend", name)
	}
	shared := reflect.TypeOf(b).Comparable()
	libraries.mu.Lock()
	var lib *library
	if shared {
		lib = libraries.backends[b]
	}
	if lib == nil {
		lib = newLibrary(name)
		lib.backend = b
		if shared {
			libraries.backends[b] = lib
		}
	}
	lib.refs++
	users := lib.refs
	libraries.mu.Unlock()

	if opts.Wrap != nil {
		b = opts.Wrap(b)
	}
	opts.Logger.Debug().Str("module", name).Int("users", users).Msg("pkcs11 backend opened")
	return &Module{path: name, lib: lib, b: b, log: opts.Logger, tokens: map[*Token]struct{}{}}, nil
}

// Close closes the module's tokens (which logs them out) and, when no other Module in the
// process uses the library, finalizes and unloads it. Calling it twice is harmless.
func (m *Module) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	tokens := make([]*Token, 0, len(m.tokens))
	for t := range m.tokens {
		tokens = append(tokens, t)
	}
	m.tokens = nil
	m.mu.Unlock()

	for _, t := range tokens {
		t.closeSession()
	}

	libraries.mu.Lock()
	defer libraries.mu.Unlock()
	lib := m.lib
	lib.refs--
	if lib.ctx == nil { // OpenBackend: nothing to finalize
		if lib.refs == 0 && reflect.TypeOf(lib.backend).Comparable() && libraries.backends[lib.backend] == lib {
			delete(libraries.backends, lib.backend)
		}
		return nil
	}
	m.log.Debug().Str("module", m.path).Int("users", lib.refs).Msg("pkcs11 module closed")
	if lib.refs > 0 {
		return nil
	}
	delete(libraries.m, lib.key)
	lib.downMu.Lock()
	down := lib.down != nil // a reload left it uninitialised: nothing to finalize
	lib.downMu.Unlock()
	var err error
	if lib.finalize && !down {
		if ferr := lib.ctx.Finalize(); ferr != nil {
			err = &Error{Op: "close module", Code: CodeGeneralError, RV: rvOf(ferr), Err: ferr}
		}
	}
	lib.ctx.Destroy()
	return err
}

// Path is the library path the module was opened with.
func (m *Module) Path() string { return m.path }

func (m *Module) check(ctx context.Context, op string) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return &Error{Op: op, Code: CodeGeneralError, Err: fmt.Errorf("module %s is closed", m.path)}
	}
	if err := ctx.Err(); err != nil {
		return ctxErr(op, err)
	}
	return nil
}

// enter waits for the library's gate (see library.use), or for ctx to end, and brings the
// module up again if a reload left it down. Every call into the module is between enter
// and leave.
func (m *Module) enter(ctx context.Context, op string) error {
	if err := m.lib.use.Acquire(ctx, 1); err != nil {
		return ctxErr(op, fmt.Errorf("waiting to call the module (calls wait while a reload of it is pending or running): %w", err))
	}
	if err := m.upLocked(op); err != nil {
		m.lib.use.Release(1)
		return err
	}
	return nil
}

// leave ends what enter began.
func (m *Module) leave() { m.lib.use.Release(1) }

// upLocked tries C_Initialize again if a reload left the module down, once: a module
// that cannot be initialised again stays down until the process loads it afresh. Call it
// holding a unit of the gate: no call is in the module while it is down, since only a
// reseat, holding the whole gate, takes it down.
func (m *Module) upLocked(op string) error {
	l := m.lib
	l.downMu.Lock()
	defer l.downMu.Unlock()
	if l.down == nil {
		return nil
	}
	err := l.reloader(m.b).Initialize()
	if err == nil || rvOf(err) == p11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
		l.down = nil
		m.log.Info().Str("module", m.path).Msg("pkcs11: the module, down since a reload, was initialised again")
		return nil
	}
	l.down = err
	return &Error{Op: op, Code: CodeModuleLoadFailed, RV: rvOf(err),
		Err: fmt.Errorf("the PKCS#11 module %s could not be initialised again after a reload, and C_Initialize failed again now (%w); restart the process (the agent) to load it afresh", m.path, err)}
}

// Info describes the library.
func (m *Module) Info(ctx context.Context) (ModuleInfo, error) {
	const op = "module info"
	if err := m.check(ctx, op); err != nil {
		return ModuleInfo{}, err
	}
	if err := m.enter(ctx, op); err != nil {
		return ModuleInfo{}, err
	}
	in, err := m.b.GetInfo()
	m.leave()
	if err != nil {
		return ModuleInfo{}, wrapErr(op, err)
	}
	return ModuleInfo{
		Path:            m.path,
		Manufacturer:    trim(in.ManufacturerID),
		Description:     trim(in.LibraryDescription),
		CryptokiVersion: version(in.CryptokiVersion),
		LibraryVersion:  version(in.LibraryVersion),
	}, nil
}

// Slots lists every slot, with the token in it when there is one. Poll it to watch tokens
// come and go (C_WaitForSlotEvent is not dependable across modules).
func (m *Module) Slots(ctx context.Context) ([]Slot, error) {
	const op = "list slots"
	if err := m.check(ctx, op); err != nil {
		return nil, err
	}
	if err := m.enter(ctx, op); err != nil {
		return nil, err
	}
	defer m.leave()
	ids, err := m.b.GetSlotList(false)
	if err != nil {
		return nil, wrapErr(op, err)
	}
	slots := make([]Slot, 0, len(ids))
	for _, id := range ids {
		si, err := m.b.GetSlotInfo(id)
		if err != nil {
			if codeForRV(rvOf(err)) == CodeNotPresent {
				continue // the slot went away between the two calls (a reader unplugged)
			}
			return nil, wrapErr(op, err)
		}
		s := Slot{
			ID:           id,
			Description:  trim(si.SlotDescription),
			Manufacturer: trim(si.ManufacturerID),
			TokenPresent: si.Flags&p11.CKF_TOKEN_PRESENT != 0,
			Removable:    si.Flags&p11.CKF_REMOVABLE_DEVICE != 0,
			Hardware:     si.Flags&p11.CKF_HW_SLOT != 0,
		}
		if s.TokenPresent {
			ti, err := m.b.GetTokenInfo(id)
			switch {
			case err == nil:
				info := tokenInfo(id, ti)
				s.Token = &info
				s.Free = !info.Initialized
			case rvOf(err) == p11.CKR_TOKEN_NOT_RECOGNIZED:
				// present but unusable: Token stays nil
			case codeForRV(rvOf(err)) == CodeNotPresent || codeForRV(rvOf(err)) == CodeDeviceRemoved:
				s.TokenPresent = false // pulled out between the two calls
			default:
				return nil, wrapErr(op, err)
			}
		}
		slots = append(slots, s)
	}
	return slots, nil
}

// FindToken opens the one present token the URI selects, by its token attributes (label,
// serial, manufacturer, model), slot attributes and library attributes; object and query
// attributes are ignored. The Token follows the token by serial number from slot to slot,
// so it must have one: an uninitialised SoftHSM2 token has none, initialise it with
// InitToken. Errors: CodeNotFound listing the tokens present, CodeAmbiguous naming the
// candidates.
func (m *Module) FindToken(ctx context.Context, sel *uri.URI) (*Token, error) {
	const op = "find token"
	if sel == nil {
		return nil, invalidf(op, "no token URI")
	}
	info, err := m.Info(ctx)
	if err != nil {
		return nil, err
	}
	// Library versions beyond a byte cannot match a URI anyway.
	major, minor, _ := uri.ParseVersion(info.LibraryVersion)
	if !sel.MatchesLibrary(info.Manufacturer, info.Description, major, minor) {
		return nil, &Error{Op: op, Code: CodeNotFound,
			Err: fmt.Errorf("%s selects another library than %s (%s %s %s)", sel.Redacted(), m.path, info.Manufacturer, info.Description, info.LibraryVersion)}
	}
	slots, err := m.Slots(ctx)
	if err != nil {
		return nil, err
	}
	var found, seen []TokenInfo
	for _, s := range slots {
		if s.Token == nil {
			continue
		}
		ti := *s.Token
		seen = append(seen, ti)
		if sel.MatchSlot(s.Description, s.Manufacturer, s.ID) && sel.MatchToken(ti.Label, ti.Manufacturer, ti.Serial, ti.Model) {
			found = append(found, ti)
		}
	}
	switch {
	case len(found) == 0:
		return nil, &Error{Op: op, Code: CodeNotFound,
			Err: fmt.Errorf("no present token matches %s; present: %s", sel.Redacted(), describeTokens(seen))}
	case len(found) > 1:
		return nil, &Error{Op: op, Code: CodeAmbiguous,
			Err: fmt.Errorf("%d tokens match %s: %s", len(found), sel.Redacted(), describeTokens(found))}
	}
	ti := found[0]
	if ti.Serial == "" {
		return nil, &Error{Op: op, Code: CodeNotInitialized, Label: ti.Label,
			Err: fmt.Errorf("the token in slot %d has no serial number to follow it by: initialise it first", ti.SlotID)}
	}
	t := &Token{mod: m, serial: ti.Serial, label: ti.Label, slot: ti.SlotID, sem: m.lib.turn(ti.Serial)}
	t.remember(ti)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, &Error{Op: op, Code: CodeGeneralError, Err: fmt.Errorf("module %s is closed", m.path)}
	}
	m.tokens[t] = struct{}{}
	m.lib.track(t, true)
	return t, nil
}

func describeTokens(ts []TokenInfo) string {
	if len(ts) == 0 {
		return "none"
	}
	parts := make([]string, len(ts))
	for i, t := range ts {
		state := ""
		if !t.Initialized {
			state = ", not initialised"
		}
		parts[i] = fmt.Sprintf("%q (serial %q, %s %s, slot %d%s)", t.Label, t.Serial, t.Manufacturer, t.Model, t.SlotID, state)
	}
	return strings.Join(parts, "; ")
}

// InitToken initialises the token in the slot (use a slot Slots lists as Free): it sets
// the SO PIN and the label and erases every object on it. A token already initialised is
// refused with CodeAlreadyInitialized unless opts.Force. Set the user PIN afterwards with
// Token.InitUserPIN (find the token by its new serial or label). When the token answers
// CodeDeviceError, the module is reloaded and the initialisation tried again, as
// Token.Init does.
func (m *Module) InitToken(ctx context.Context, slotID uint, opts InitOptions) (TokenInfo, error) {
	const op = "initialise token"
	return m.initWithReloads(ctx, func(e *zerolog.Event) *zerolog.Event { return e.Uint("slot", slotID) },
		func() (TokenInfo, error) {
			if err := m.check(ctx, op); err != nil {
				return TokenInfo{}, err
			}
			start := time.Now()
			if err := m.enter(ctx, op); err != nil {
				return TokenInfo{}, err
			}
			info, err := initToken(m.b, op, slotID, opts)
			m.leave()
			m.log.Debug().Str("op", op).Uint("slot", slotID).Str("label", opts.Label).Dur("took_ms", time.Since(start)).
				Str("code", string(CodeOf(err))).Msg("pkcs11")
			return info, err
		})
}

// maxReseats bounds the module reloads one initialisation tries: SoftHSM2 gets past one
// incomplete object per reload, and one write cut short leaves at most one.
const maxReseats = 4

// initWithReloads runs try, one C_InitToken of a token (which, for the log, names), and
// while it answers CodeDeviceError reloads the module (library.reseat) and runs it again,
// up to maxReseats times: SoftHSM2 cannot reset a token holding an object a write cut
// short left half-made (the process writing it was killed, as a token pulled out mid-write
// would be) until the module is reloaded, and gets past one such object per reload. A
// token still failing has damaged storage: the error says to re-initialise it with its
// vendor's tool or replace it. A reload gives up when ctx ends while it waits for the
// calls in flight on the module, finalizing nothing: the error is then CodeCancelled and
// wraps ctx's.
func (m *Module) initWithReloads(ctx context.Context, names func(*zerolog.Event) *zerolog.Event, try func() (TokenInfo, error)) (TokenInfo, error) {
	info, err := try()
	reloads := 0
	var reseatErr error
	for ; reloads < maxReseats && CodeOf(err) == CodeDeviceError; reloads++ {
		if reseatErr = m.lib.reseat(ctx, m.b); reseatErr != nil {
			break
		}
		names(m.log.Info()).Int("reload", reloads+1).
			Msg("pkcs11: the token could not be initialised (device error); the module was reloaded to try again")
		info, err = try()
	}
	var e *Error
	if CodeOf(err) != CodeDeviceError || !errors.As(err, &e) {
		return info, err
	}
	if ctx.Err() != nil && errors.Is(reseatErr, ctx.Err()) {
		return info, &Error{Op: e.Op, Code: CodeCancelled, Token: e.Token, Label: e.Label,
			Err: fmt.Errorf("the token could not be reset (%w), and the module reload to try again %w", e.Err, reseatErr)}
	}
	advice := "its storage may be damaged (a write cut short, as when a token is pulled out or the process writing to it stops mid-write): re-initialise it with its vendor's tool, or replace it"
	if reseatErr != nil {
		e.Err = fmt.Errorf("the token could not be reset, and the module could not be reloaded to try again (%w); restarting the process may help, else %s: %w", reseatErr, advice, e.Err)
	} else {
		e.Err = fmt.Errorf("the token could not be reset, even after reloading the module %d times; %s: %w", reloads, advice, e.Err)
	}
	return info, e
}

// initToken checks the request against the token and runs C_InitToken.
func initToken(b Backend, op string, slotID uint, opts InitOptions) (TokenInfo, error) {
	if opts.Label == "" || len(opts.Label) > 32 {
		return TokenInfo{}, invalidf(op, "token label %q: want 1 to 32 bytes", opts.Label)
	}
	ti, err := b.GetTokenInfo(slotID)
	if err != nil {
		return TokenInfo{}, wrapErr(op, err)
	}
	before := tokenInfo(slotID, ti)
	named := func(e *Error) *Error { e.Token, e.Label = before.Serial, before.Label; return e }
	if before.Initialized && !opts.Force {
		return TokenInfo{}, named(&Error{Op: op, Code: CodeAlreadyInitialized,
			Err: errors.New("the token is initialised already; wiping it needs Force")})
	}
	if err := checkPINLen(op, "SO PIN", opts.SOPIN, before.MinPINLen, before.MaxPINLen); err != nil {
		return TokenInfo{}, named(err)
	}
	if err := b.InitToken(slotID, opts.SOPIN, opts.Label); err != nil {
		e := named(wrapErr(op, err))
		if e.Code == CodePINIncorrect || e.Code == CodePINLocked {
			e = pinStatusErr(b, slotID, e, true)
		}
		if e.RV == p11.CKR_SESSION_EXISTS {
			e.Err = fmt.Errorf("sessions are open on the token (close other Tokens on it first): %w", e.Err)
		}
		return TokenInfo{}, e
	}
	ti, err = b.GetTokenInfo(slotID)
	if err != nil {
		return TokenInfo{}, wrapErr(op, err)
	}
	return tokenInfo(slotID, ti), nil
}

// checkPINLen refuses a PIN the token would refuse for its length, before the token sees
// it (a refused PIN may count as a wrong one). Tokens that report no sensible range are
// not checked.
func checkPINLen(op, which, pin string, minLen, maxLen uint) *Error {
	if pin == "" {
		return &Error{Op: op, Code: CodePINLenRange, Err: fmt.Errorf("empty %s", which)}
	}
	if maxLen == 0 || maxLen == unavailable || minLen > maxLen {
		return nil
	}
	if n := uint(len(pin)); n < minLen || n > maxLen {
		return &Error{Op: op, Code: CodePINLenRange,
			Err: fmt.Errorf("%s length out of this token's range of %d to %d characters", which, minLen, maxLen)}
	}
	return nil
}

// pinStatusErr adds the PIN's retry state to a PIN error, and turns "incorrect" into
// "locked" when that wrong PIN was the last try.
func pinStatusErr(b Backend, slotID uint, e *Error, so bool) *Error {
	ti, err := b.GetTokenInfo(slotID)
	if err != nil {
		return e
	}
	info := tokenInfo(slotID, ti)
	st := info.UserPIN
	if so {
		st = info.SOPIN
	}
	e.PIN = &st
	if st.Locked {
		e.Code = CodePINLocked
	}
	return e
}

// wrapErr turns an error of the module into an *Error; an *Error passes unchanged.
func wrapErr(op string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	rv := rvOf(err)
	code := CodeGeneralError
	if rv != 0 {
		code = codeForRV(rv)
	}
	return &Error{Op: op, Code: code, RV: rv, Err: err}
}

func ctxErr(op string, err error) *Error {
	return &Error{Op: op, Code: CodeCancelled, Err: err}
}

// unavailable is CK_UNAVAILABLE_INFORMATION as miekg/pkcs11 hands it over.
const unavailable = ^uint(0)

func memory(v uint) *uint64 {
	if v == unavailable {
		return nil
	}
	m := uint64(v)
	return &m
}

func tokenInfo(slotID uint, ti p11.TokenInfo) TokenInfo {
	f := ti.Flags
	return TokenInfo{
		SlotID:             slotID,
		Label:              trim(ti.Label),
		Manufacturer:       trim(ti.ManufacturerID),
		Model:              trim(ti.Model),
		Serial:             trim(ti.SerialNumber),
		Initialized:        f&p11.CKF_TOKEN_INITIALIZED != 0,
		LoginRequired:      f&p11.CKF_LOGIN_REQUIRED != 0,
		UserPINInitialized: f&p11.CKF_USER_PIN_INITIALIZED != 0,
		UserPIN: PINStatus{
			CountLow:    f&p11.CKF_USER_PIN_COUNT_LOW != 0,
			FinalTry:    f&p11.CKF_USER_PIN_FINAL_TRY != 0,
			Locked:      f&p11.CKF_USER_PIN_LOCKED != 0,
			ToBeChanged: f&p11.CKF_USER_PIN_TO_BE_CHANGED != 0,
		},
		SOPIN: PINStatus{
			CountLow:    f&p11.CKF_SO_PIN_COUNT_LOW != 0,
			FinalTry:    f&p11.CKF_SO_PIN_FINAL_TRY != 0,
			Locked:      f&p11.CKF_SO_PIN_LOCKED != 0,
			ToBeChanged: f&p11.CKF_SO_PIN_TO_BE_CHANGED != 0,
		},
		WriteProtected:     f&p11.CKF_WRITE_PROTECTED != 0,
		ProtectedAuthPath:  f&p11.CKF_PROTECTED_AUTHENTICATION_PATH != 0,
		RNG:                f&p11.CKF_RNG != 0,
		MinPINLen:          ti.MinPinLen,
		MaxPINLen:          ti.MaxPinLen,
		TotalPublicMemory:  memory(ti.TotalPublicMemory),
		FreePublicMemory:   memory(ti.FreePublicMemory),
		TotalPrivateMemory: memory(ti.TotalPrivateMemory),
		FreePrivateMemory:  memory(ti.FreePrivateMemory),
		HardwareVersion:    version(ti.HardwareVersion),
		FirmwareVersion:    version(ti.FirmwareVersion),
		Flags:              f,
	}
}

func trim(s string) string { return strings.TrimRight(s, " \x00") }

func version(v p11.Version) string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }
