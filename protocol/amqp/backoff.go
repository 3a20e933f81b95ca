package amqp

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is a jittered exponential backoff: the n-th consecutive failure
// waits a random time in [d/2, d], d = Min·2ⁿ capped at Max. The jitter
// keeps thousands of agents that lost the broker at the same instant from
// coming back at the same instant; the fixed half keeps the wait from
// collapsing to nothing.
type Backoff struct {
	Min time.Duration
	Max time.Duration
}

// defaultBackoff is used when Config.Backoff is zero.
var defaultBackoff = Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}

// Delay returns how long to wait after the failure numbered attempt
// (0 for the first).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Max
	if attempt < 32 {
		if x := b.Min << attempt; x > 0 && x < b.Max {
			d = x
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

func (b Backoff) valid() bool { return b.Min > 0 && b.Max >= b.Min }

// sleep waits d or until ctx ends; it reports whether the full time passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
