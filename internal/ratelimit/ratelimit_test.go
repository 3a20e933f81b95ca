package ratelimit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestAllowCount(t *testing.T) {
	steps := []struct {
		key  string
		at   time.Duration
		ok   bool
		held int
	}{
		{"a", 0, true, 0},
		{"a", time.Second, false, 0},
		{"b", time.Second, true, 0},
		{"a", 30 * time.Second, false, 0},
		{"a", 60 * time.Second, true, 2}, // the window is half-open: at its end, the next one starts
		{"a", 62 * time.Second, false, 0},
		{"a", 3 * time.Minute, true, 1},
		{"b", 3 * time.Minute, true, 0},
	}
	l := New(time.Minute, 100)
	for i, st := range steps {
		held, ok := l.AllowCount(st.key, t0.Add(st.at))
		if ok != st.ok || held != st.held {
			t.Fatalf("step %d: ok %v held %d, want %v %d", i, ok, held, st.ok, st.held)
		}
	}
}

func TestForget(t *testing.T) {
	l := New(time.Hour, 100)
	if !l.Allow("t1", t0) {
		t.Fatal("first event held back")
	}
	if l.Allow("t1", t0.Add(time.Minute)) {
		t.Fatal("second event within the window passed")
	}
	l.Forget("t1")
	if !l.Allow("t1", t0.Add(2*time.Minute)) {
		t.Fatal("a forgotten key is not free again")
	}
	l.Forget("never seen") // no effect, no panic
}

func TestBoundedFlood(t *testing.T) {
	const maxKeys = 1000
	l := New(time.Minute, maxKeys)
	passed := 0
	for i := range maxKeys + 500 {
		if l.Allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256), t0) {
			passed++
		}
	}
	// Past the bound the remaining keys share one window: one more event, not 500.
	if passed != maxKeys+1 || len(l.keys) != maxKeys+1 {
		t.Fatalf("passed %d, tracking %d", passed, len(l.keys))
	}
	held, ok := l.AllowCount("another", t0.Add(30*time.Second))
	if ok || held != 0 {
		t.Fatalf("a new key past the bound within the shared window: ok %v held %d", ok, held)
	}
}

func TestBoundDropsPassedWindows(t *testing.T) {
	l := New(time.Minute, 3)
	for _, k := range []string{"a", "b", "c"} {
		l.Allow(k, t0)
	}
	l.Allow("a", t0.Add(10*time.Second)) // held back: a holds a count
	// A new key after the windows passed: the stale keys make room, count or not.
	if !l.Allow("d", t0.Add(2*time.Minute)) {
		t.Fatal("a new key was held back though every window had passed")
	}
	if len(l.keys) != 1 {
		t.Fatalf("tracking %d keys, want 1", len(l.keys))
	}
	if held, ok := l.AllowCount("a", t0.Add(2*time.Minute)); !ok || held != 0 {
		t.Fatalf("a dropped key: ok %v held %d, want true 0", ok, held)
	}
}

func TestConcurrentOnePasses(t *testing.T) {
	l := New(time.Hour, 100)
	var wg sync.WaitGroup
	var mu sync.Mutex
	passed := 0
	for range 50 {
		wg.Go(func() {
			if l.Allow("k", t0) {
				mu.Lock()
				passed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if passed != 1 {
		t.Fatalf("%d concurrent events passed, want 1", passed)
	}
}
