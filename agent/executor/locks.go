package executor

import (
	"context"
	"errors"
	"sync"
)

// locks serialises jobs on one token: two jobs on the same token would fight over its
// login state, and initialising a token needs every other session on it closed. Blank
// tokens, which have no serial yet, share one key.
type locks struct {
	mu sync.Mutex // guards m
	m  map[string]chan struct{}
}

const blankLockKey = "\x00blank"

func newLocks() *locks { return &locks{m: map[string]chan struct{}{}} }

func (l *locks) sem(key string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.m[key]
	if s == nil {
		s = make(chan struct{}, 1)
		l.m[key] = s
	}
	return s
}

// errWoken: the wait for a lock was interrupted by a wake-up, not by ctx.
var errWoken = errors.New("woken while waiting")

// acquire takes the lock for key, giving up when ctx ends or wake fires. The returned
// function releases it; calling it twice is harmless.
func (l *locks) acquire(ctx context.Context, key string, wake <-chan struct{}) (func(), error) {
	s := l.sem(key)
	select {
	case s <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-wake:
		return nil, errWoken
	}
	var once sync.Once
	return func() { once.Do(func() { <-s }) }, nil
}

// tryAcquire takes the lock for key if nobody holds it; ok says whether it did.
func (l *locks) tryAcquire(key string) (release func(), ok bool) {
	s := l.sem(key)
	select {
	case s <- struct{}{}:
	default:
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { <-s }) }, true
}
