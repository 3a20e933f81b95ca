package watch

import (
	"context"
	"errors"
	"testing"
	"time"
)

// deadline bounds every wait in these tests; reaching it is a failure, not a pass.
const deadline = 60 * time.Second // generous: a busy machine stalls goroutines for seconds

type harness struct {
	t      *testing.T
	w      *Watcher
	ticker *fakeTicker
	polled chan struct{}
	done   chan error
	cancel context.CancelFunc
}

// startRun runs w.Run in the background with a ticker the test steps by hand.
func startRun(t *testing.T, cfg Config, u USBSource, tok TokenSource) *harness {
	t.Helper()
	ft := newFakeTicker()
	cfg.NewTicker = func(d time.Duration) Ticker {
		if d != cfg.withDefaults().PollInterval {
			t.Errorf("ticker interval %v, want %v", d, cfg.withDefaults().PollInterval)
		}
		return ft
	}
	w := newWatcher(t, cfg, u, tok)
	h := &harness{t: t, w: w, ticker: ft, polled: make(chan struct{}, 100), done: make(chan error, 1)}
	w.afterPoll = func() { h.polled <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(deadline):
			t.Error("Run did not return after cancel")
		}
	})
	h.waitPoll() // Run polls once at start, before the first tick
	return h
}

func (h *harness) waitPoll() {
	h.t.Helper()
	select {
	case <-h.polled:
	case <-time.After(deadline):
		h.t.Fatal("no poll within the deadline")
	}
}

// tick delivers one tick (the loop must be free to take it) and waits for its poll.
func (h *harness) tick() {
	h.t.Helper()
	select {
	case h.ticker.c <- fixedTime:
	case <-time.After(deadline):
		h.t.Fatal("poll loop did not take a tick: it is blocked")
	}
	h.waitPoll()
}

func (h *harness) next() Event {
	h.t.Helper()
	select {
	case ev, ok := <-h.w.Events():
		if !ok {
			h.t.Fatal("events closed")
		}
		return ev
	case <-time.After(deadline):
		h.t.Fatal("no event within the deadline")
	}
	return Event{}
}

func TestRunLifecycle(t *testing.T) {
	src := &fakeTokens{}
	src.set(softToken("aaaa", "alpha"))
	h := startRun(t, Config{InsertAfter: 2, RemoveAfter: 2, EventBuffer: 1, PollInterval: time.Second}, nil, src)

	h.tick()
	if ev := h.next(); ev.Kind != Inserted || ev.Token.Serial != "aaaa" {
		t.Fatalf("first event %+v", ev)
	}
	if err := h.w.Run(context.Background()); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Run: %v", err)
	}

	// Nobody reads events for a while: ticks must still be taken (the loop never blocks
	// on a full channel) and the newest event must be the one kept.
	for i := range 6 {
		if i%2 == 0 {
			src.set()
		} else {
			src.set(softToken("aaaa", "alpha"))
		}
		h.tick()
		h.tick()
	}
	if h.w.Dropped() == 0 {
		t.Fatal("no event was dropped although the buffer holds one")
	}
	if ev := h.next(); ev.Kind != Inserted {
		t.Fatalf("kept event %+v, want the latest (inserted)", ev)
	}

	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(deadline):
		t.Fatal("Run did not return after cancel")
	}
	h.done <- nil // for the cleanup
	if _, ok := <-h.w.Events(); ok {
		t.Fatal("Events not closed after Run returned")
	}
	if !h.ticker.isStopped() {
		t.Fatal("ticker not stopped")
	}
}

// Shutting down while a source is slow is neither an error nor a removal.
func TestRunCancelDuringPoll(t *testing.T) {
	src := &blockingTokens{entered: make(chan struct{}, 1)}
	ft := newFakeTicker()
	w := newWatcher(t, Config{InsertAfter: 1, RemoveAfter: 1, NewTicker: func(time.Duration) Ticker { return ft }}, nil, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-src.entered:
	case <-time.After(deadline):
		t.Fatal("source never called")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(deadline):
		t.Fatal("Run did not return")
	}
	for ev := range w.Events() {
		t.Fatalf("event on shutdown: %+v", ev)
	}
}

// blockingTokens answers only when its context ends, like a module call that honours ctx.
type blockingTokens struct{ entered chan struct{} }

func (b *blockingTokens) Tokens(ctx context.Context) ([]TokenState, error) {
	b.entered <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

// A source slower than PollTimeout fails that poll and is reported, without removals.
func TestPollTimeout(t *testing.T) {
	src := &fakeTokens{}
	src.set(softToken("aaaa", "alpha"))
	w := newWatcher(t, Config{InsertAfter: 1, RemoveAfter: 1}, nil, src)
	pollN(w, 1)
	drain(w)
	// Only now the short timeout: on a busy machine a millisecond can pass before even the
	// quick first poll reads the token.
	w.cfg.PollTimeout = time.Millisecond
	w.tokens = &blockingTokens{entered: make(chan struct{}, 1)}
	pollN(w, 1)
	evs := drain(w)
	if len(evs) != 1 || evs[0].Kind != SourceError || !errors.Is(evs[0].Err, context.DeadlineExceeded) {
		t.Fatalf("events %+v", evs)
	}
	if len(w.Snapshot()) != 1 {
		t.Fatal("token dropped on a timed-out poll")
	}
}
