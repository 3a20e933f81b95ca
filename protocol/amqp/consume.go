package amqp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Consumer is a subscription to a queue that survives reconnections.
type Consumer struct {
	c      *Conn
	queue  string
	opts   ConsumeOptions
	h      BatchHandler
	batch  int // the most deliveries h gets at once
	log    zerolog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex // guards err
	err error

	// retries counts Retry outcomes per message ID, for queues without
	// x-delivery-count. Only the consumer's goroutine touches it.
	retries map[string]int
}

// maxTrackedRetries bounds Consumer.retries: entries of messages that
// another consumer finished are never removed otherwise.
const maxTrackedRetries = 10_000

// Consume subscribes h to queue with manual acknowledgements and a bounded
// prefetch, waiting while ctx allows for a connection and the first
// subscription. The broker's refusal of that first subscription is
// returned: ErrQueueInUse (*QueueInUseError) for an exclusive consumer
// that another connection holds, ErrQueueNotFound / ErrNotEnrolled.
//
// Afterwards the consumer subscribes again after every reconnection until
// ctx ends or Close is called; a refusal then (for instance the broker
// still holding an exclusive consumer of the connection just lost, until
// its heartbeat times out) is logged, reported by Err, and retried with
// backoff.
//
// Every delivery is decoded with protocol.Decode and checked (properties
// against the envelope, opts.Senders); one that fails is dead-lettered
// without reaching h, and the consumer goes on.
func (c *Conn) Consume(ctx context.Context, queue string, opts ConsumeOptions, h Handler) (*Consumer, error) {
	if h == nil {
		return nil, errors.New("consume: nil handler")
	}
	return c.consume(ctx, queue, opts, 1, func(ctx context.Context, ds []*Delivery) []Outcome {
		return []Outcome{h(ctx, ds[0])}
	})
}

// ConsumeBatch is Consume with a handler that takes the deliveries already received
// together, at most maxBatch of them: the first as soon as it arrives, with those that
// arrived behind it, never waiting for more. A handler that stores what it handles can
// then store a burst of messages in one transaction. Everything else is Consume's.
func (c *Conn) ConsumeBatch(ctx context.Context, queue string, opts ConsumeOptions, maxBatch int, h BatchHandler) (*Consumer, error) {
	if h == nil {
		return nil, errors.New("consume: nil handler")
	}
	if maxBatch < 1 {
		return nil, fmt.Errorf("consume: batch of %d: want at least 1", maxBatch)
	}
	return c.consume(ctx, queue, opts, maxBatch, h)
}

func (c *Conn) consume(ctx context.Context, queue string, opts ConsumeOptions, maxBatch int, h BatchHandler) (*Consumer, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	if opts.Senders == SenderSharedUser {
		c.sharedUserWarning.Do(func() {
			c.log.Warn().Msg("sender checks rely on the shared broker user only: any client holding its password can publish as any agent; use a broker user per agent in production")
		})
	}
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	cons := &Consumer{
		c:       c,
		queue:   queue,
		opts:    opts,
		h:       h,
		batch:   maxBatch,
		log:     c.log.With().Str("queue", queue).Logger(),
		cancel:  cancel,
		done:    make(chan struct{}),
		retries: make(map[string]int),
	}
	ready := make(chan error, 1)
	if !c.goroutine(func() {
		defer close(cons.done)
		defer stop()
		defer cancel()
		cons.run(cctx, ready)
	}) {
		stop()
		cancel()
		return nil, ErrClosed
	}
	if err := <-ready; err != nil {
		<-cons.done
		return nil, err
	}
	return cons, nil
}

// Close stops the consumer and waits for its handler to return.
// Unacknowledged messages go back to the queue. Safe to call twice; not
// from the handler.
func (cons *Consumer) Close() {
	cons.cancel()
	<-cons.done
}

// Done is closed when the consumer has stopped.
func (cons *Consumer) Done() <-chan struct{} { return cons.done }

// Err is why the consumer is not subscribed right now, nil while it is.
func (cons *Consumer) Err() error {
	cons.mu.Lock()
	defer cons.mu.Unlock()
	return cons.err
}

func (cons *Consumer) setErr(err error) {
	cons.mu.Lock()
	cons.err = err
	cons.mu.Unlock()
}

// subscription is one basic.consume on one channel.
type subscription struct {
	s          *session
	ch         *amqp091.Channel
	deliveries <-chan amqp091.Delivery
	closes     chan *amqp091.Error

	mu     sync.Mutex // guards timers
	timers map[*time.Timer]struct{}
}

// after runs fn after d on a timer of the subscription's; stopTimers cancels those that
// have not fired.
func (sub *subscription) after(d time.Duration, fn func()) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.timers == nil {
		sub.timers = make(map[*time.Timer]struct{})
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		sub.mu.Lock()
		_, live := sub.timers[t]
		delete(sub.timers, t)
		sub.mu.Unlock()
		if live {
			fn()
		}
	})
	sub.timers[t] = struct{}{}
}

func (sub *subscription) stopTimers() {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	for t := range sub.timers {
		t.Stop()
	}
	clear(sub.timers)
}

func (cons *Consumer) run(ctx context.Context, ready chan<- error) {
	first := true
	failures := 0
	for {
		s, err := cons.c.session(ctx)
		if err != nil {
			if first {
				ready <- err
			}
			cons.setErr(err)
			return
		}
		sub, err := cons.subscribe(s)
		if err != nil {
			cons.setErr(err)
			if first && refusal(err) {
				ready <- err
				return
			}
			if !s.alive() {
				continue // the next session will do
			}
			delay := cons.c.cfg.Backoff.Delay(failures)
			failures++
			cons.log.Error().Err(err).Dur("retry_in_ms", delay).Msg("cannot consume; retrying")
			if !sleep(ctx, delay) {
				return
			}
			continue
		}
		failures = 0
		cons.setErr(nil)
		if first {
			first = false
			ready <- nil
		}
		err = cons.serve(ctx, sub)
		if ctx.Err() != nil {
			return
		}
		cons.setErr(err)
		cons.log.Warn().Err(err).Msg("consumer interrupted; subscribing again")
	}
}

func (cons *Consumer) subscribe(s *session) (*subscription, error) {
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("opening a channel: %w", err)
	}
	sub := &subscription{s: s, ch: ch, closes: ch.NotifyClose(make(chan *amqp091.Error, 1))}
	if err := ch.Qos(cons.opts.Prefetch, 0, false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("setting prefetch: %w", err)
	}
	sub.deliveries, err = ch.Consume(cons.queue, cons.opts.ConsumerTag, false, cons.opts.Exclusive, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return nil, consumeError(cons.queue, err)
	}
	return sub, nil
}

// serve handles deliveries until the subscription ends or ctx does.
func (cons *Consumer) serve(ctx context.Context, sub *subscription) error {
	// Closing the channel hands unacknowledged messages back to the queue, those waiting
	// for their retry included.
	defer func() { _ = sub.ch.Close() }()
	defer sub.stopTimers()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case d, ok := <-sub.deliveries:
			if !ok {
				select {
				case e := <-sub.closes:
					if e != nil {
						return e
					}
				default:
				}
				if !sub.s.alive() {
					// The connection may be seen closed before the supervisor has recorded
					// why: s.err is written before done is closed, so wait for done.
					select {
					case <-sub.s.done:
						return fmt.Errorf("connection lost: %w", sub.s.err)
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return errors.New("the broker cancelled the consumer (queue deleted?)")
			}
			cons.handle(ctx, sub, cons.gather(sub, d))
		}
	}
}

// gather returns first with the deliveries already received behind it, up to the batch
// size, without waiting for any. A closed deliveries channel is left for serve to find.
func (cons *Consumer) gather(sub *subscription, first amqp091.Delivery) []amqp091.Delivery {
	ds := []amqp091.Delivery{first}
	yielded := false
	for len(ds) < cons.batch {
		select {
		case d, ok := <-sub.deliveries:
			if !ok {
				return ds
			}
			ds = append(ds, d)
			yielded = false
		default:
			if yielded {
				return ds
			}
			// The client library hands deliveries over from a goroutine of its own, which
			// this receive has just made runnable: let it run once before deciding that
			// nothing more is there.
			runtime.Gosched()
			yielded = true
		}
	}
	return ds
}

// handle checks each delivery, dead-letters those refused, hands the others to the
// handler together and settles each with its own outcome, in the order received.
func (cons *Consumer) handle(ctx context.Context, sub *subscription, ds []amqp091.Delivery) {
	raw := make([]amqp091.Delivery, 0, len(ds))
	dels := make([]*Delivery, 0, len(ds))
	for _, d := range ds {
		del, err := cons.check(d)
		if err != nil {
			if cons.opts.OnRefused != nil {
				env, _ := protocol.Decode(d.Body) // nil when it does not decode: that is the refusal
				cons.opts.OnRefused(ctx, Refusal{Queue: cons.queue, MessageID: d.MessageId, RoutingKey: d.RoutingKey,
					UserID: d.UserId, Envelope: env, Err: err})
			}
			cons.deadLetter(ctx, sub, d, err)
			continue
		}
		raw = append(raw, d)
		dels = append(dels, del)
	}
	if len(dels) == 0 {
		return
	}
	outs := cons.call(ctx, dels)
	for i, d := range raw {
		cons.settle(ctx, sub, d, dels[i], outs[i])
	}
}

// settle acks, dead-letters or requeues one handled delivery as out says.
func (cons *Consumer) settle(ctx context.Context, sub *subscription, d amqp091.Delivery, del *Delivery, out Outcome) {
	switch out.kind {
	case outcomeAck:
		delete(cons.retries, del.Envelope.ID)
		cons.ack(d)
	case outcomeReject:
		delete(cons.retries, del.Envelope.ID)
		err := out.err
		if err == nil {
			err = protocol.NewError(protocol.CodeInternal, "rejected by the handler")
		}
		cons.deadLetter(ctx, sub, d, err)
	case outcomeRetry:
		id := del.Envelope.ID
		n := max(del.DeliveryCount, cons.retries[id])
		if n >= cons.opts.MaxRetries {
			delete(cons.retries, id)
			cons.deadLetter(ctx, sub, d, fmt.Errorf("gave up after %d retries: %w", n, orInternal(out.err)))
			return
		}
		if len(cons.retries) >= maxTrackedRetries {
			clear(cons.retries)
		}
		cons.retries[id] = n + 1
		// Pause before requeueing: a requeued message comes straight back,
		// and what failed (a database, a disk) is rarely back that soon. The
		// message waits unacknowledged on a timer while the consumer goes on
		// with the next ones: one message's trouble holds up no other.
		delay := time.Duration(n+1) * cons.opts.RetryDelay
		delay = delay/2 + rand.N(delay/2+1)
		cons.log.Warn().Err(out.err).Str("message_id", id).Int("retries", n+1).Dur("retry_in_ms", delay).Msg("handler asked to retry the message")
		sub.after(delay, func() {
			if err := d.Nack(false, true); err != nil {
				cons.log.Debug().Err(err).Msg("requeue lost with the channel; the broker redelivers the message")
			}
		})
	}
}

// call runs the handler on ds and returns one outcome per delivery. When the handler
// panics on a batch, or answers for another number of deliveries, each delivery is handed
// to it again alone, so that one poisonous message harms no other; a panic on a delivery
// alone is a retry, so a message that crashes the handler every time ends in the
// dead-letter queue instead of the process dying on it in a loop.
func (cons *Consumer) call(ctx context.Context, ds []*Delivery) []Outcome {
	outs, err := cons.try(ctx, ds)
	if err == nil {
		return outs
	}
	if len(ds) == 1 {
		return []Outcome{Retry(err)}
	}
	cons.log.Warn().Err(err).Int("messages", len(ds)).Msg("handling the messages one by one")
	outs = make([]Outcome, len(ds))
	for i := range ds {
		one, err := cons.try(ctx, ds[i:i+1])
		if err != nil {
			outs[i] = Retry(err)
			continue
		}
		outs[i] = one[0]
	}
	return outs
}

// try runs the handler once on ds, turning a panic or a wrong number of outcomes into an
// error.
func (cons *Consumer) try(ctx context.Context, ds []*Delivery) (outs []Outcome, err error) {
	defer func() {
		if p := recover(); p != nil {
			cons.log.Error().Str("message_id", ds[0].Envelope.ID).Int("messages", len(ds)).Str("stack", string(debug.Stack())).
				Msgf("handler panicked: %v", p)
			outs, err = nil, fmt.Errorf("handler panicked: %v", p)
		}
	}()
	outs = cons.h(ctx, ds)
	if len(outs) != len(ds) {
		cons.log.Error().Int("messages", len(ds)).Int("outcomes", len(outs)).Msg("handler answered for another number of messages")
		return nil, fmt.Errorf("handler gave %d outcomes for %d messages", len(outs), len(ds))
	}
	return outs, nil
}

func orInternal(err error) error {
	if err == nil {
		return protocol.NewError(protocol.CodeInternal, "the handler gave no reason")
	}
	return err
}

func (cons *Consumer) ack(d amqp091.Delivery) {
	if err := d.Ack(false); err != nil {
		// Delivery tags die with their channel; the broker redelivers.
		cons.log.Debug().Err(err).Str("message_id", d.MessageId).Msg("ack lost with the channel; the broker redelivers the message")
	}
}
