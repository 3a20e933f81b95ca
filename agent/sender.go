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
	PublishEvents(ctx context.Context, envs []*protocol.Envelope) []error
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
	// held is the progress held back at the head of the outbox; only run touches it.
	held held
	// onHold, when set (tests), hears each time drain holds progress back.
	onHold func(due time.Time)
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
		due      time.Time // when progress held back is due; zero when none is
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
			// A change of tokens waits for the outbox: what jobs journalled goes first,
			// progress held back included.
			_, v := s.stock.latest()
			var err error
			due, err = s.drain(ctx, func() bool { return s.generation.Load() != last.gen }, v == last.stock)
			if err != nil {
				return err
			}
			if _, v := s.stock.latest(); v != last.stock && s.generation.Load() == last.gen && due.IsZero() {
				return s.sayHello(ctx, &last)
			}
			return nil
		}()
		var retry, linger *time.Timer
		switch {
		case err == nil:
			failures = 0
			if s.generation.Load() != last.gen {
				continue // reconnected meanwhile: hello first
			}
			if !due.IsZero() {
				linger = time.NewTimer(time.Until(due))
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
		case <-timerC(linger):
		}
		for _, t := range []*time.Timer{retry, linger} {
			if t != nil {
				t.Stop()
			}
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

// progressLinger is how long a progress step may wait in the outbox for the message that
// follows it. Steps on a fast token come a millisecond apart, the CSR or the result right
// behind them: sent together they cost the coordinator one transaction instead of one
// each, and the CSR or result waits for none of theirs. A CSR, a result or anything else
// that is not progress never waits, and sends the steps before it with it; a step alone
// (a slow token's key generation) leaves after this long. An operator watching a job sees
// its steps that much later at most.
const progressLinger = 100 * time.Millisecond

// drain publishes the outbox until it is empty, stop says to stop (a new connection wants
// its hello first), or a publish fails. Each read of the outbox is published together,
// its confirms in flight at once, and marked sent together after: one round trip to the
// broker and one journal commit a read, not one a message. A crash before the mark sends
// them again; the coordinator dedupes.
//
// With linger, a read of progress steps alone, none of which waited progressLinger yet,
// is held: drain returns the time it is due, and zero when nothing waits.
func (s *sender) drain(ctx context.Context, stop func() bool, linger bool) (time.Time, error) {
	for {
		batch, err := s.journal.Unsent(ctx, outboxBatch)
		if err != nil {
			return time.Time{}, fmt.Errorf("reading the outbox: %w", err)
		}
		if len(batch) == 0 {
			return time.Time{}, nil
		}
		if linger {
			if due := s.held.due(batch); !due.IsZero() {
				if s.onHold != nil {
					s.onHold(due)
				}
				return due, nil
			}
		}
		if stop != nil && stop() {
			return time.Time{}, nil
		}
		sent, perr := s.publish(ctx, batch)
		if err := s.journal.MarkSent(context.WithoutCancel(ctx), sent...); err != nil {
			// They were confirmed: sending them again is harmless, the coordinator dedupes.
			return time.Time{}, errors.Join(perr, fmt.Errorf("marking %d messages sent: %w", len(sent), err))
		}
		for _, o := range batch[:len(sent)] {
			s.log.Debug().Str("message_id", o.ID).Str("type", string(o.Type)).Str("job", o.JobID).Uint32("attempt", o.Attempt).Msg("sent")
		}
		if perr != nil {
			return time.Time{}, perr
		}
	}
}

// held remembers since when the head of the outbox has been held back, by the sender's
// own clock (the journal's stamps may come from another).
type held struct {
	seq   int64
	since time.Time
}

// due returns when batch, read from the outbox, may leave: zero (now) when it holds
// anything but progress or its first step has waited progressLinger already.
func (h *held) due(batch []journal.Outgoing) time.Time {
	for _, o := range batch {
		if o.Type != protocol.TypeProgress {
			return time.Time{}
		}
	}
	now := time.Now()
	if h.seq != batch[0].Seq {
		*h = held{seq: batch[0].Seq, since: now}
	}
	if due := h.since.Add(progressLinger); now.Before(due) {
		return due
	}
	return time.Time{}
}

// publish sends batch, in its order, with the confirms in flight together, and returns
// the IDs to mark sent: the longest run from the start that the broker confirmed, so that
// nothing is marked sent ahead of a message that is not. An unconfirmed message stays in
// the outbox and is published again with the same ID, with those after it; the
// coordinator dedupes. An invalid message is dropped: it counts as sent.
func (s *sender) publish(ctx context.Context, batch []journal.Outgoing) ([]string, error) {
	envs := make([]*protocol.Envelope, len(batch))
	errs := make([]error, len(batch))
	var out []*protocol.Envelope
	var at []int // index in batch of each of out
	for i, o := range batch {
		envs[i], errs[i] = protocol.Decode(o.Data)
		if errs[i] == nil {
			s.log.Debug().Str("message_id", o.ID).Str("type", string(o.Type)).Str("job", o.JobID).Uint32("attempt", o.Attempt).Msg("publishing")
			out, at = append(out, envs[i]), append(at, i)
		}
	}
	for k, err := range s.conn.PublishEvents(ctx, out) {
		errs[at[k]] = err
	}
	sent := make([]string, 0, len(batch))
	for i, o := range batch {
		var pe *protocol.Error
		switch err := errs[i]; {
		case err == nil:
		case errors.As(err, &pe):
			// The message itself is invalid: no broker will ever take it, and keeping it
			// would hold back every message after it.
			s.log.Error().Err(err).Str("message_id", o.ID).Str("type", string(o.Type)).Str("job", o.JobID).
				Uint32("attempt", o.Attempt).Msg("dropping an invalid message from the outbox")
		default:
			return sent, fmt.Errorf("publishing %s %s: %w", o.Type, o.ID, err)
		}
		sent = append(sent, o.ID)
	}
	return sent, nil
}

// flush publishes what is left in the outbox at shutdown, retrying until ctx ends.
func (s *sender) flush(ctx context.Context) error {
	for failures := 0; ; failures++ {
		_, err := s.drain(ctx, nil, false)
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
