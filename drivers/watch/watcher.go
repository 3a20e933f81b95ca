package watch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

// Defaults for zero Config fields.
const (
	DefaultPollInterval = 2 * time.Second
	DefaultInsertAfter  = 2
	DefaultRemoveAfter  = 2
	DefaultEventBuffer  = 64
	DefaultPollTimeout  = 15 * time.Second
)

// Ticker drives polling; *time.Ticker adapted by the default NewTicker is one, tests
// inject their own to step time.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Config tunes a Watcher. Zero fields take the defaults above.
type Config struct {
	// PollInterval between polls. PKCS#11 modules answer slot listing in milliseconds;
	// 1-2 s is the dependable baseline since most modules do not support slot events.
	PollInterval time.Duration
	// InsertAfter is how many consecutive polls must see a token before Inserted (and
	// see a new fingerprint before Changed); the debounce time is about
	// InsertAfter × PollInterval. 1 disables debouncing.
	InsertAfter int
	// RemoveAfter is how many consecutive successful polls must miss a token before
	// Removed. Failed polls neither count as seen nor as missing.
	RemoveAfter int
	// EventBuffer is the capacity of the Events channel. When the consumer falls that far
	// behind, the oldest event is dropped (and logged) so polling never stalls.
	EventBuffer int
	// PollTimeout bounds one call to a source (passed as the context deadline).
	PollTimeout time.Duration
	// Registry identifies USB devices; nil means usb.DefaultRegistry().
	Registry *usb.Registry
	// NewTicker makes the poll ticker; nil means a time.Ticker.
	NewTicker func(time.Duration) Ticker
	// Now stamps events; nil means time.Now.
	Now func() time.Time
}

// Validate reports settings that make no sense (negative values). Zero values are fine:
// they select the defaults.
func (c Config) Validate() error {
	var errs []error
	if c.PollInterval < 0 {
		errs = append(errs, fmt.Errorf("poll interval %v is negative", c.PollInterval))
	}
	if c.InsertAfter < 0 {
		errs = append(errs, fmt.Errorf("insert_after %d is negative", c.InsertAfter))
	}
	if c.RemoveAfter < 0 {
		errs = append(errs, fmt.Errorf("remove_after %d is negative", c.RemoveAfter))
	}
	if c.EventBuffer < 0 {
		errs = append(errs, fmt.Errorf("event buffer %d is negative", c.EventBuffer))
	}
	if c.PollTimeout < 0 {
		errs = append(errs, fmt.Errorf("poll timeout %v is negative", c.PollTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.InsertAfter <= 0 {
		c.InsertAfter = DefaultInsertAfter
	}
	if c.RemoveAfter <= 0 {
		c.RemoveAfter = DefaultRemoveAfter
	}
	if c.EventBuffer <= 0 {
		c.EventBuffer = DefaultEventBuffer
	}
	if c.PollTimeout <= 0 {
		c.PollTimeout = DefaultPollTimeout
	}
	if c.NewTicker == nil {
		c.NewTicker = func(d time.Duration) Ticker { return timeTicker{time.NewTicker(d)} }
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

type timeTicker struct{ t *time.Ticker }

func (t timeTicker) C() <-chan time.Time { return t.t.C }
func (t timeTicker) Stop()               { t.t.Stop() }

// Watcher polls a USBSource and a TokenSource and emits Events. Create with New, start
// with Run; read Events until it is closed.
type Watcher struct {
	cfg    Config
	usb    USBSource // nil: PKCS#11 only
	tokens TokenSource
	reg    *usb.Registry // nil when the registry failed to load: USB hints are off
	log    zerolog.Logger

	events  chan Event
	dropped atomic.Uint64
	running atomic.Bool

	// Poll state, touched only by the poll loop.
	tracks    map[string]*tokenTrack
	devTracks map[string]*deviceTrack
	lastUSB   []usb.Identified // latest successful USB poll, known devices only
	failing   map[string]bool  // source or module -> currently failing
	afterPoll func()           // test hook, called after each poll

	mu       sync.Mutex // guards the fields below, read by Snapshot and Devices
	present  map[string]TokenState
	attached map[string]usb.Identified
}

type tokenTrack struct {
	present     bool // Inserted was emitted
	seen        int  // consecutive polls seen while not yet present
	missing     int  // consecutive polls missed while present
	reported    TokenState
	pendingFP   string // fingerprint waiting to be confirmed as a change
	pendingSeen int
}

type deviceTrack struct {
	present bool
	seen    int
	missing int
	dev     usb.Identified
}

// New returns a Watcher. usbSrc may be nil (no USB bus, no libusb): tokens are still
// watched through PKCS#11. A negative Config value is logged and replaced by its default;
// call Config.Validate first to refuse it instead.
func New(cfg Config, usbSrc USBSource, tokens TokenSource, log zerolog.Logger) *Watcher {
	if err := cfg.Validate(); err != nil {
		log.Warn().Err(err).Msg("watch: invalid settings replaced by defaults")
	}
	cfg = cfg.withDefaults()
	reg := cfg.Registry
	if reg == nil {
		var err error
		if reg, err = usb.DefaultRegistry(); err != nil {
			log.Error().Err(err).Msg("watch: token registry unavailable, USB devices will not be identified")
			reg = nil
		}
	}
	return &Watcher{
		cfg:       cfg,
		usb:       usbSrc,
		tokens:    tokens,
		reg:       reg,
		log:       log,
		events:    make(chan Event, cfg.EventBuffer),
		tracks:    map[string]*tokenTrack{},
		devTracks: map[string]*deviceTrack{},
		failing:   map[string]bool{},
		present:   map[string]TokenState{},
		attached:  map[string]usb.Identified{},
	}
}

// Events delivers what the watcher observes. The channel is closed when Run returns. It
// never blocks polling: when EventBuffer events are waiting, the oldest is dropped.
func (w *Watcher) Events() <-chan Event { return w.events }

// Dropped returns how many events were dropped because the consumer fell behind.
func (w *Watcher) Dropped() uint64 { return w.dropped.Load() }

// Run polls at once and then every PollInterval until ctx is done; it returns nil then.
// It may be called once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer close(w.events)
	t := w.cfg.NewTicker(w.cfg.PollInterval)
	defer t.Stop()
	w.log.Info().Dur("interval", w.cfg.PollInterval).Int("insert_after", w.cfg.InsertAfter).
		Int("remove_after", w.cfg.RemoveAfter).Bool("usb", w.usb != nil && w.reg != nil).
		Msg("watch: watching tokens")
	for {
		w.poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// Snapshot returns the tokens currently present (debounced), ordered by module and
// serial, with their USB tie where known.
func (w *Watcher) Snapshot() []TokenState {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]TokenState, 0, len(w.present))
	for _, t := range w.present {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Devices returns the known token devices currently attached (debounced).
func (w *Watcher) Devices() []usb.Identified {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]usb.Identified, 0, len(w.attached))
	for _, d := range w.attached {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return deviceKey(out[i].Device) < deviceKey(out[j].Device) })
	return out
}

func (w *Watcher) poll(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	w.pollUSB(ctx)
	w.pollTokens(ctx)
	if w.afterPoll != nil {
		w.afterPoll()
	}
}

func deviceKey(d usb.Device) string {
	return fmt.Sprintf("%03d:%03d:%s", d.Bus, d.Address, d.ID())
}

func (w *Watcher) pollUSB(ctx context.Context) {
	if w.usb == nil || w.reg == nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, w.cfg.PollTimeout)
	devs, err := w.usb.Devices(pctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			w.sourceFailed(SourceUSB, "", err)
		}
		return // hold attached devices as they were
	}
	w.sourceOK(SourceUSB, "")

	var ids []usb.Identified
	seen := map[string]bool{}
	for _, d := range devs {
		m, ok := w.reg.Match(d)
		k := deviceKey(d)
		if !ok || seen[k] {
			continue
		}
		seen[k] = true
		ids = append(ids, usb.Identified{Device: d, Model: m})
	}
	w.lastUSB = ids

	// Detachments first, so a swap reads "detached, then attached".
	for _, k := range sortedKeys(w.devTracks) {
		tr := w.devTracks[k]
		if seen[k] {
			continue
		}
		if !tr.present {
			delete(w.devTracks, k) // not consecutive: start over next time
			continue
		}
		tr.missing++
		if tr.missing >= w.cfg.RemoveAfter {
			delete(w.devTracks, k)
			w.mu.Lock()
			delete(w.attached, k)
			w.mu.Unlock()
			d := tr.dev
			w.log.Info().Str("device", d.Device.String()).Str("model", d.Model.Name).Msg("watch: token device detached")
			w.emit(Event{Kind: DeviceDetached, Device: &d})
		}
	}
	for _, id := range ids {
		k := deviceKey(id.Device)
		tr := w.devTracks[k]
		if tr == nil {
			tr = &deviceTrack{}
			w.devTracks[k] = tr
		}
		tr.dev, tr.missing = id, 0
		if tr.present {
			continue
		}
		tr.seen++
		if tr.seen >= w.cfg.InsertAfter {
			tr.present = true
			w.mu.Lock()
			w.attached[k] = id
			w.mu.Unlock()
			w.deviceAttached(id)
		}
	}
}

func (w *Watcher) deviceAttached(id usb.Identified) {
	ev := Event{Kind: DeviceAttached, Device: &id, Pending: true}
	w.mu.Lock()
	for _, t := range w.present {
		if tied := w.tieLocked(t, w.present); tied != nil && deviceKey(tied.Device) == deviceKey(id.Device) {
			ev.Token, ev.Pending = t, false
			ev.Token.USB = tied
		}
	}
	w.mu.Unlock()
	w.log.Info().Str("device", id.Device.String()).Str("model", id.Model.Name).Bool("token_visible", !ev.Pending).
		Msg("watch: token device attached")
	w.emit(ev)
}

func (w *Watcher) pollTokens(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, w.cfg.PollTimeout)
	toks, err := w.tokens.Tokens(pctx)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: neither an error nor evidence of removal
	}
	failedModules := map[string]bool{}
	if err != nil {
		mods, partial := moduleErrors(err)
		if !partial {
			w.sourceFailed(SourceTokens, "", err)
			return
		}
		for path, merr := range mods {
			failedModules[path] = true
			w.sourceFailed(SourceTokens, path, merr)
		}
	}
	w.sourceOK(SourceTokens, "")
	for k := range w.failing {
		if path, ok := strings.CutPrefix(k, SourceTokens+"\x00"); ok && path != "" && !failedModules[path] {
			w.sourceOK(SourceTokens, path)
		}
	}

	// Removals first, so a swap of tokens reads "removed, then inserted".
	seen := map[string]bool{}
	var fresh []TokenState
	for _, t := range toks {
		t.USB = nil // the watcher owns the tie
		k := t.Key()
		if seen[k] {
			w.log.Warn().Stringer("token", t).Msg("watch: token listed twice in one poll, keeping the first")
			continue
		}
		seen[k] = true
		fresh = append(fresh, t)
	}
	for _, k := range sortedKeys(w.tracks) {
		tr := w.tracks[k]
		if seen[k] {
			continue
		}
		if failedModules[tr.reported.ModulePath] {
			continue // its module did not answer: no evidence either way
		}
		if !tr.present {
			delete(w.tracks, k)
			continue
		}
		tr.missing++
		tr.pendingFP, tr.pendingSeen = "", 0
		if tr.missing >= w.cfg.RemoveAfter {
			delete(w.tracks, k)
			w.mu.Lock()
			last := w.present[k]
			delete(w.present, k)
			w.mu.Unlock()
			w.log.Info().Stringer("token", last).Msg("watch: token removed")
			w.emit(Event{Kind: Removed, Token: last})
		}
	}
	for _, t := range fresh {
		w.sawToken(t.Key(), t)
	}
	w.retie()
}

func (w *Watcher) sawToken(k string, t TokenState) {
	tr := w.tracks[k]
	if tr == nil {
		tr = &tokenTrack{}
		w.tracks[k] = tr
	}
	tr.missing = 0
	if !tr.present {
		tr.reported = t
		tr.seen++
		if tr.seen < w.cfg.InsertAfter {
			return
		}
		tr.present = true
		t.USB = w.tie(t)
		tr.reported = t
		w.mu.Lock()
		w.present[k] = t
		w.mu.Unlock()
		w.log.Info().Stringer("token", t).Bool("initialized", t.Initialized).Msg("watch: token inserted")
		w.emit(Event{Kind: Inserted, Token: t})
		return
	}
	fp := t.Fingerprint()
	if fp == tr.reported.Fingerprint() {
		tr.pendingFP, tr.pendingSeen = "", 0
		return
	}
	if fp != tr.pendingFP {
		tr.pendingFP, tr.pendingSeen = fp, 0
	}
	tr.pendingSeen++
	if tr.pendingSeen < w.cfg.InsertAfter {
		return
	}
	prev := tr.reported
	t.USB = prev.USB
	tr.reported, tr.pendingFP, tr.pendingSeen = t, "", 0
	w.mu.Lock()
	w.present[k] = t
	w.mu.Unlock()
	w.log.Info().Stringer("token", t).Str("was", prev.Fingerprint()).Str("now", t.Fingerprint()).Msg("watch: token changed")
	w.emit(Event{Kind: Changed, Token: t, Previous: &prev})
}

// retie refreshes the USB tie of present tokens after a poll: a USB device may show up
// after its token, or leave while the token is held through a failing module.
func (w *Watcher) retie() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, t := range w.present {
		t.USB = w.tieLocked(t, w.present)
		w.present[k] = t
		if tr := w.tracks[k]; tr != nil {
			tr.reported.USB = t.USB
		}
	}
}

func (w *Watcher) tie(t TokenState) *usb.Identified {
	w.mu.Lock()
	defer w.mu.Unlock()
	others := make(map[string]TokenState, len(w.present)+1)
	for k, o := range w.present {
		others[k] = o
	}
	others[t.Key()] = t
	return w.tieLocked(t, others)
}

// tieLocked finds the USB device a token sits on (see usb.Tie).
func (w *Watcher) tieLocked(t TokenState, tokens map[string]TokenState) *usb.Identified {
	refs := make([]usb.TokenRef, 0, len(tokens))
	for _, o := range tokens {
		refs = append(refs, usb.TokenRef{Serial: o.Serial, Manufacturer: o.Manufacturer})
	}
	return usb.Tie(usb.TokenRef{Serial: t.Serial, Manufacturer: t.Manufacturer}, w.candidatesLocked(), refs)
}

// candidatesLocked are the devices a token may sit on: those of the latest USB poll, plus
// those still held as attached (a device being debounced out, or USB failing), so a
// token keeps its tie until its device is reported detached.
func (w *Watcher) candidatesLocked() []usb.Identified {
	out := slices.Clone(w.lastUSB)
	have := map[string]bool{}
	for _, d := range out {
		have[deviceKey(d.Device)] = true
	}
	for _, k := range sortedKeys(w.attached) {
		if !have[k] {
			out = append(out, w.attached[k])
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// moduleErrors splits err into per-module failures. partial is false when err holds
// anything other than *ModuleError (possibly wrapped, possibly joined): the whole poll is
// then void.
func moduleErrors(err error) (mods map[string]error, partial bool) {
	mods = map[string]error{}
	var walk func(error) bool
	walk = func(e error) bool {
		// A type assertion, not errors.As: the walk itself descends through wrappers and
		// joins, and must know whether every branch ends in a module error.
		if me, ok := e.(*ModuleError); ok { //nolint:errorlint // see above
			mods[me.ModulePath] = me
			return true
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			all := true
			for _, c := range j.Unwrap() {
				all = walk(c) && all
			}
			return all
		}
		if u := errors.Unwrap(e); u != nil {
			return walk(u)
		}
		return false
	}
	partial = walk(err) && len(mods) > 0
	return mods, partial
}

func failKey(source, module string) string { return source + "\x00" + module }

func (w *Watcher) sourceFailed(source, module string, err error) {
	k := failKey(source, module)
	if w.failing[k] {
		// Already reported for this streak: keep the log quiet at the poll rate.
		w.log.Debug().Err(err).Str("source", source).Str("module", module).Msg("watch: poll still failing")
		return
	}
	w.log.Warn().Err(err).Str("source", source).Str("module", module).Msg("watch: poll failed, holding the last known state")
	w.failing[k] = true
	w.emit(Event{Kind: SourceError, Source: source, ModulePath: module, Err: err})
}

func (w *Watcher) sourceOK(source, module string) {
	k := failKey(source, module)
	if !w.failing[k] {
		return
	}
	delete(w.failing, k)
	w.log.Info().Str("source", source).Str("module", module).Msg("watch: source recovered")
	w.emit(Event{Kind: SourceRecovered, Source: source, ModulePath: module})
}

// emit never blocks: when the buffer is full the oldest event gives way. The poll loop is
// the only sender, so after one receive there is room.
func (w *Watcher) emit(ev Event) {
	ev.Time = w.cfg.Now()
	for {
		select {
		case w.events <- ev:
			return
		default:
		}
		select {
		case old := <-w.events:
			n := w.dropped.Add(1)
			w.log.Warn().Str("dropped_kind", string(old.Kind)).Uint64("dropped_total", n).
				Msg("watch: event consumer is behind, dropped the oldest event")
		default:
		}
	}
}
