package watch

import (
	"errors"
	"fmt"
	"time"

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
