package agent

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// outboxBatch is how many outbox messages one read of the journal takes.
const outboxBatch = 64

// publisher is what the sender needs of the connection.
type publisher interface {
	Ready(ctx context.Context) error
	PublishEvent(ctx context.Context, env *protocol.Envelope) error
}

// sender is the agent's only publisher of persistent messages: the hello on every
// connection and on token changes, then the journal's outbox, oldest first. One goroutine
// publishes one message at a time, so messages leave in the order they were made.
type sender struct {
	conn    publisher
	journal *journal.Journal
	log     zerolog.Logger
	// hello makes a hello with the current inventory.
	hello func(ctx context.Context) (*protocol.Envelope, []protocol.Token, error)
	// generation counts connections; connected receives a value after each.
	generation    *atomic.Uint64
	connected     <-chan struct{}
	tokensChanged <-chan struct{}
	backoff       amqp.Backoff
}

// run sends until ctx ends.
func (s *sender) run(ctx context.Context) {
	var (
		helloGen   uint64           // the connection the last hello went out on
		lastTokens []protocol.Token // what it said
		tokens     bool             // the watcher reported a change since
		failures   int
	)
	for {
		err := func() error {
			if s.generation.Load() != helloGen || tokens {
				// Wait for the connection first, so that the hello says what is there when
				// it goes out and names the connection it goes out on.
				if err := s.conn.Ready(ctx); err != nil {
					return err
				}
				gen := s.generation.Load()
				env, toks, err := s.hello(ctx)
				if err != nil {
					return fmt.Errorf("taking stock of the tokens for the hello: %w", err)
				}
				if gen != helloGen || !reflect.DeepEqual(toks, lastTokens) {
					if err := s.conn.PublishEvent(ctx, env); err != nil {
						return fmt.Errorf("hello: %w", err)
					}
					s.log.Info().Int("tokens", len(toks)).Msg("hello sent")
				}
				// A reconnection during the publish leaves generation ahead of gen: the
				// next round says hello on the new connection too.
				helloGen, lastTokens, tokens = gen, toks, false
			}
			return s.drain(ctx, func() bool { return s.generation.Load() != helloGen })
		}()
		var retry *time.Timer
		switch {
		case err == nil:
			failures = 0
			if s.generation.Load() != helloGen {
				continue // reconnected meanwhile: hello first
			}
		case ctx.Err() != nil:
			return
		default:
			delay := s.backoff.Delay(failures)
			failures++
			s.log.Warn().Err(err).Dur("retry_in_ms", delay).Msg("sending to the broker failed; retrying")
			retry = time.NewTimer(delay)
		}
		select {
		case <-ctx.Done():
		case <-s.connected:
		case <-s.tokensChanged:
			tokens = true
		case <-s.journal.Notify():
		case <-timerC(retry):
		}
		if retry != nil {
			retry.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// timerC is t's channel, or nil (never ready) for no timer.
func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

// drain publishes the outbox until it is empty, stop says to stop (a new connection wants
// its hello first), or a publish fails.
func (s *sender) drain(ctx context.Context, stop func() bool) error {
	for {
		batch, err := s.journal.Unsent(ctx, outboxBatch)
		if err != nil {
			return fmt.Errorf("reading the outbox: %w", err)
		}
		if len(batch) == 0 {
			return nil
		}
		for _, o := range batch {
			if stop != nil && stop() {
				return nil
			}
			if err := s.publish(ctx, o); err != nil {
				return err
			}
		}
	}
}

// publish sends one outbox message and marks it sent once the broker confirmed it. An
// unconfirmed message stays in the outbox and is published again with the same ID; the
// coordinator dedupes on it.
func (s *sender) publish(ctx context.Context, o journal.Outgoing) error {
	log := s.log.With().Str("message_id", o.ID).Str("type", string(o.Type)).Str("job", o.JobID).Uint32("attempt", o.Attempt).Logger()
	env, err := protocol.Decode(o.Data)
	if err == nil {
		log.Debug().Msg("publishing")
		err = s.conn.PublishEvent(ctx, env)
	}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		// The message itself is invalid: no broker will ever take it, and keeping it would
		// hold back every message after it.
		log.Error().Err(err).Msg("dropping an invalid message from the outbox")
	} else if err != nil {
		return fmt.Errorf("publishing %s %s: %w", o.Type, o.ID, err)
	}
	if err := s.journal.MarkSent(ctx, o.ID); err != nil {
		// It was confirmed: sending it again is harmless, the coordinator dedupes.
		return fmt.Errorf("marking %s sent: %w", o.ID, err)
	}
	log.Debug().Msg("sent")
	return nil
}

// flush publishes what is left in the outbox at shutdown, retrying until ctx ends.
func (s *sender) flush(ctx context.Context) error {
	for failures := 0; ; failures++ {
		err := s.drain(ctx, nil)
		if err == nil {
			return nil
		}
		t := time.NewTimer(s.backoff.Delay(failures))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}
