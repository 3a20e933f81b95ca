package rollout

import (
	"math"
	"time"
)

// ETA from the rate over a recent span: remaining targets / (done in span / span). Zero rate
// (or nothing remaining, or no span) → 0, which callers show as unknown (or done). Very long
// estimates are capped rather than overflowing.
func ETA(remaining, doneInSpan int, span time.Duration) time.Duration {
	if remaining <= 0 || doneInSpan <= 0 || span <= 0 {
		return 0
	}
	eta := float64(span) * float64(remaining) / float64(doneInSpan)
	if eta >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	d := time.Duration(eta)
	if d > time.Second {
		d = d.Round(time.Second)
	}
	return d
}

// RatePerMinute is the rate over a recent span in targets per minute; 0 without a span.
func RatePerMinute(doneInSpan int, span time.Duration) float64 {
	if doneInSpan <= 0 || span <= 0 {
		return 0
	}
	return float64(doneInSpan) / span.Minutes()
}
