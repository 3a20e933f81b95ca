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

// sender is the agent's only publisher of persistent messages: a hello first on every
// connection, the journal's outbox oldest first, and a hello again when the stock of
// tokens changed. One goroutine publishes one message at a time, so messages leave in the
// order they were made.
//
// It never waits for the tokens: the stock takes stock in a goroutine of its own and the
// sender says hello with the latest stocktaking, so a CSR or a result leaves within
// milliseconds of being journalled however long a scan of the tokens takes. The one wait
// is at start, for the first stocktaking: the first hello must say what is there.
type sender struct {
	conn    publisher
	journal *journal.Journal
	log     zerolog.Logger
	stock   *stock
	// hello makes a hello that carries the tokens.
	hello func(toks []protocol.Token) (*protocol.Envelope, error)
	// generation counts connections; connected receives a value after each.
	generation *atomic.Uint64
	connected  <-chan struct{}
	backoff    amqp.Backoff
}

// said is what the last hello said, and on which connection.
type said struct {
	gen    uint64           // the connection it went out on
	stock  uint64           // the stocktaking it was made from
	tokens []protocol.Token // what it said
}

// run sends until ctx ends.
func (s *sender) run(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-s.stock.have:
	}
	var (
		last     said
		failures int
	)
	for {
		err := func() error {
			if s.generation.Load() != last.gen {
				// The protocol's order: hello first on a new connection, so that the
				// coordinator's view of this agent is rebuilt before anything else.
				if err := s.sayHello(ctx, &last); err != nil {
					return err
				}
			}
			if err := s.drain(ctx, func() bool { return s.generation.Load() != last.gen }); err != nil {
				return err
			}
			// A change of tokens waits for the outbox: what jobs journalled goes first.
			if _, v := s.stock.latest(); v != last.stock && s.generation.Load() == last.gen {
				return s.sayHello(ctx, &last)
			}
			return nil
		}()
		var retry *time.Timer
		switch {
		case err == nil:
			failures = 0
			if s.generation.Load() != last.gen {
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
		case <-s.stock.updated:
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

// sayHello publishes a hello with the latest stocktaking, unless this connection already
// heard one saying the same.
func (s *sender) sayHello(ctx context.Context, last *said) error {
	// Wait for the connection first, so that the hello names the connection it goes out
	// on.
	if err := s.conn.Ready(ctx); err != nil {
		return err
	}
	gen := s.generation.Load()
	toks, v := s.stock.latest()
	if gen != last.gen || !reflect.DeepEqual(toks, last.tokens) {
		env, err := s.hello(toks)
		if err != nil {
			return fmt.Errorf("making the hello: %w", err)
		}
		if err := s.conn.PublishEvent(ctx, env); err != nil {
			return fmt.Errorf("hello: %w", err)
		}
		s.log.Info().Int("tokens", len(toks)).Msg("hello sent")
	}
	// A reconnection during the publish leaves generation ahead of gen: the next round
	// says hello on the new connection too.
	*last = said{gen: gen, stock: v, tokens: toks}
	return nil
}

// timerC is t's channel, or nil (never ready) for no timer.
func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

// drain publishes the outbox until it is empty, stop says to stop (a new connection wants
// its hello first), or a publish fails. The messages of a read are marked sent together,
// after the last one confirmed (or the first failure): one journal commit a read, not one
// a message, and no commit between two messages that leave together (a step's progress
// and the result). A crash before the mark sends them again; the coordinator dedupes.
func (s *sender) drain(ctx context.Context, stop func() bool) error {
	for {
		batch, err := s.journal.Unsent(ctx, outboxBatch)
		if err != nil {
			return fmt.Errorf("reading the outbox: %w", err)
		}
		if len(batch) == 0 {
			return nil
		}
		sent := make([]string, 0, len(batch))
		var perr error
		stopped := false
		for _, o := range batch {
			if stop != nil && stop() {
				stopped = true
				break
			}
			if perr = s.publish(ctx, o); perr != nil {
				break
			}
			sent = append(sent, o.ID)
		}
		if err := s.journal.MarkSent(context.WithoutCancel(ctx), sent...); err != nil {
			// They were confirmed: sending them again is harmless, the coordinator dedupes.
			return errors.Join(perr, fmt.Errorf("marking %d messages sent: %w", len(sent), err))
		}
		for _, o := range batch[:len(sent)] {
			s.log.Debug().Str("message_id", o.ID).Str("type", string(o.Type)).Str("job", o.JobID).Uint32("attempt", o.Attempt).Msg("sent")
		}
		if perr != nil || stopped {
			return perr
		}
	}
}

// publish sends one outbox message; the caller marks it sent once the broker confirmed
// it. An unconfirmed message stays in the outbox and is published again with the same
// ID; the coordinator dedupes on it. An invalid message is dropped: it counts as sent.
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
