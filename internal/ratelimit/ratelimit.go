// Package ratelimit lets an event through once per key and window, for audit entries and
// log lines that would otherwise repeat: the first event of a key passes and opens a
// window, the ones inside it are held back and counted, the first one after it passes with
// that count.
//
// The table of keys is bounded, because keys often come from outside (a source address, an
// agent ID in a refused message). When a new key finds it full, the keys whose window has
// passed are dropped first (their next event would pass anyway; a count they held is lost);
// if it is still full, the new key shares one window with every other key past the bound,
// so a flood of distinct keys costs one event per window, not one per key.
package ratelimit

import (
	"sync"
	"time"
)

// overflow is the key shared by the keys past the bound; no caller's key holds a NUL.
const overflow = "\x00overflow"

// Limiter is a keyed once-per-window limiter. Create with New; safe for concurrent use.
type Limiter struct {
	window  time.Duration
	maxKeys int

	mu   sync.Mutex // guards keys
	keys map[string]*entry
}

type entry struct {
	start time.Time // when the last event passed
	held  int       // events held back since
}

// New returns a Limiter of window that tracks at most maxKeys keys (at least 1) besides the
// shared one.
func New(window time.Duration, maxKeys int) *Limiter {
	return &Limiter{window: window, maxKeys: max(maxKeys, 1), keys: map[string]*entry{}}
}

// Allow reports whether an event for key passes at now; if it does, the key's window starts
// at now.
func (l *Limiter) Allow(key string, now time.Time) bool {
	_, ok := l.AllowCount(key, now)
	return ok
}

// AllowCount is Allow that also returns, when the event passes, how many events of its key
// were held back since the last one passed.
func (l *Limiter) AllowCount(key string, now time.Time) (held int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.keys[key]
	if !found && len(l.keys) >= l.maxKeys {
		for k, e := range l.keys {
			if now.Sub(e.start) >= l.window {
				delete(l.keys, k)
			}
		}
		if len(l.keys) >= l.maxKeys {
			key = overflow
			e, found = l.keys[key]
		}
	}
	if !found {
		l.keys[key] = &entry{start: now}
		return 0, true
	}
	if now.Sub(e.start) < l.window {
		e.held++
		return 0, false
	}
	held = e.held
	e.start, e.held = now, 0
	return held, true
}

// Forget drops key, so that its next event passes: for an event that passed but could not
// be acted on.
func (l *Limiter) Forget(key string) {
	l.mu.Lock()
	delete(l.keys, key)
	l.mu.Unlock()
}
