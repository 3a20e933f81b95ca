package watch

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

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
	w.log.Info().Dur("interval_ms", w.cfg.PollInterval).Int("insert_after", w.cfg.InsertAfter).
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

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
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
