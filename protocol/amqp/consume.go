package amqp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Headers of a message dead-lettered by a consumer (publish-then-ack).
const (
	HeaderErrorCode          = "x-tokenfleet-error-code"
	HeaderError              = "x-tokenfleet-error"
	HeaderOriginalExchange   = "x-tokenfleet-original-exchange"
	HeaderOriginalRoutingKey = "x-tokenfleet-original-routing-key"
	HeaderOriginalQueue      = "x-tokenfleet-original-queue"
	HeaderOriginalUserID     = "x-tokenfleet-original-user-id"
	HeaderDeadLetteredBy     = "x-tokenfleet-dead-lettered-by"
)

// Consumer defaults.
const (
	DefaultPrefetch   = 32
	DefaultMaxRetries = 5
	DefaultRetryDelay = time.Second
)

// SenderCheck says what a consumer checks about who sent a message, after
// decoding it and before the handler sees it. A message that fails is
// dead-lettered with forged_sender (or bad_request).
type SenderCheck int

const (
	// SenderAgentUsers is for the coordinator's events and heartbeats
	// queues when every agent has its own broker user: the message must
	// come from an agent, its user_id must be the envelope's agent's broker
	// user, and its routing key "<type>.<agent>" (protocol.CheckSender).
	SenderAgentUsers SenderCheck = iota + 1
	// SenderSharedUser is for development setups where agents share one
	// broker user (guest/guest): direction and routing key are checked, but
	// any client with that user's password can publish as any agent. The
	// Conn logs that once.
	SenderSharedUser
	// SenderCoordinator is for an agent's own command queue: the message
	// must be coordinator → agent and addressed to ConsumeOptions.AgentID,
	// and, if ConsumeOptions.CoordinatorUsers is set, come from one of
	// those broker users.
	SenderCoordinator
	// SenderAgentRecordedUsers is for the coordinator's queues when every agent has its
	// own broker user under a name the coordinator records per agent (not necessarily
	// protocol.AgentUser): direction and routing key are checked here, as with
	// SenderSharedUser, and the handler compares Delivery.UserID, which RabbitMQ
	// validated against the publishing connection, with the agent's recorded user.
	SenderAgentRecordedUsers
)

// DeadLetterMode says how a consumer dead-letters a message.
type DeadLetterMode int

const (
	// DeadLetterPublish publishes the message to protocol.DeadLetterExchange
	// with the reason in headers (HeaderErrorCode, HeaderError, the original
	// exchange, routing key, queue and user), waits for the confirm, then
	// acks it. The reason travels with the message, which a plain nack
	// cannot do: the broker's own dead-lettering only records "rejected".
	// If that publish fails, the message is nacked as with DeadLetterNack.
	DeadLetterPublish DeadLetterMode = iota
	// DeadLetterNack nacks the message without requeueing, so the queue's
	// own dead-lettering (x-dead-letter-exchange) moves it; the reason is
	// only logged. For broker users that may not write to
	// protocol.DeadLetterExchange (agents, under protocol.AgentPermissions).
	DeadLetterNack
)

// ConsumeOptions configures Consume.
type ConsumeOptions struct {
	// Prefetch bounds the unacknowledged messages the broker hands this
	// consumer (1 to 65535). Default DefaultPrefetch.
	Prefetch int
	// Exclusive asks for an exclusive consumer: the broker refuses any
	// other consumer on the queue (ErrQueueInUse), and refuses this one if
	// the queue already has a consumer.
	Exclusive bool
	// ConsumerTag names the consumer on the broker; empty lets the client
	// choose a unique one.
	ConsumerTag string
	// Senders is the sender check. Required: there is no safe default.
	Senders SenderCheck
	// AgentID is the agent whose command queue this is (SenderCoordinator).
	AgentID string
	// CoordinatorUsers, if set, are the broker users commands may come from
	// (SenderCoordinator).
	CoordinatorUsers []string
	// MaxRetries bounds how often a message the handler wants to retry is
	// requeued; the next Retry dead-letters it. Default DefaultMaxRetries.
	MaxRetries int
	// RetryDelay is how long the consumer pauses before requeueing a
	// message, times the number of retries so far (jittered). Default
	// DefaultRetryDelay.
	RetryDelay time.Duration
	// DeadLetter is how messages are dead-lettered.
	DeadLetter DeadLetterMode
	// OnRefused, if set, hears of every message dead-lettered before the handler saw it
	// (undecodable, or failing the sender check), so that the refusal can be audited.
	// It runs on the consumer's goroutine before the message is dead-lettered and must
	// return quickly.
	OnRefused func(ctx context.Context, r Refusal)
}

// Refusal is a message a consumer refused before its handler saw it.
type Refusal struct {
	Queue      string
	MessageID  string // the message_id property, possibly empty
	RoutingKey string
	UserID     string // the user_id property, possibly empty
	// Envelope is the decoded envelope, nil when the message could not be decoded.
	Envelope *protocol.Envelope
	// Err says why; protocol.CodeOf gives its code.
	Err error
}

// Delivery is a decoded, checked message handed to a Handler.
type Delivery struct {
	Envelope *protocol.Envelope
	// Queue is the queue it was consumed from; Exchange and RoutingKey are
	// those it was published with.
	Queue      string
	Exchange   string
	RoutingKey string
	// UserID is the user_id property: for SenderAgentUsers, the broker user
	// RabbitMQ checked it against.
	UserID string
	// Redelivered is the broker's redelivered flag: this message may have
	// been handled before (dedupe on Envelope.ID).
	Redelivered bool
	// DeliveryCount is how often the broker delivered this message before
	// (quorum queues' x-delivery-count; 0 on classic queues).
	DeliveryCount int
	// Timestamp is the timestamp property (whole seconds).
	Timestamp time.Time
}

// Outcome is what a handler decided about a delivery.
type Outcome struct {
	kind outcomeKind
	err  error
}

type outcomeKind int

const (
	outcomeAck outcomeKind = iota
	outcomeRetry
	outcomeReject
)

// Ack: the message is handled (or safely stored) and leaves the queue.
func Ack() Outcome { return Outcome{kind: outcomeAck} }

// Retry: the message could not be handled now (a dependency failed) and is
// requeued after a pause; after ConsumeOptions.MaxRetries it is
// dead-lettered with err's code.
func Retry(err error) Outcome { return Outcome{kind: outcomeRetry, err: err} }

// Reject: the message can never be handled; it is dead-lettered with the
// code of err (protocol.CodeOf: a *protocol.Error keeps its code, anything
// else is internal).
func Reject(err error) Outcome { return Outcome{kind: outcomeReject, err: err} }

// Handler handles one delivery. It runs on the consumer's goroutine, one
// delivery at a time; ctx ends when the consumer stops.
type Handler func(ctx context.Context, d *Delivery) Outcome

// Consumer is a subscription to a queue that survives reconnections.
type Consumer struct {
	c      *Conn
	queue  string
	opts   ConsumeOptions
	h      Handler
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
	if err := opts.fill(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("consume: nil handler")
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

func (o *ConsumeOptions) fill() error {
	if o.Prefetch == 0 {
		o.Prefetch = DefaultPrefetch
	}
	if o.Prefetch < 1 || o.Prefetch > 65535 {
		return fmt.Errorf("consume: prefetch %d: want 1 to 65535", o.Prefetch)
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = DefaultMaxRetries
	}
	if o.MaxRetries < 0 {
		return fmt.Errorf("consume: max retries %d is negative", o.MaxRetries)
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = DefaultRetryDelay
	}
	if o.RetryDelay < 0 {
		return fmt.Errorf("consume: retry delay %v is negative", o.RetryDelay)
	}
	switch o.Senders {
	case SenderAgentUsers, SenderSharedUser, SenderAgentRecordedUsers:
	case SenderCoordinator:
		if err := protocol.ValidateAgentID(o.AgentID); err != nil {
			return fmt.Errorf("consume: SenderCoordinator needs the agent ID: %w", err)
		}
	default:
		return errors.New("consume: Senders must be set (SenderAgentUsers, SenderAgentRecordedUsers, SenderSharedUser or SenderCoordinator)")
	}
	switch o.DeadLetter {
	case DeadLetterPublish, DeadLetterNack:
	default:
		return fmt.Errorf("consume: unknown dead-letter mode %d", o.DeadLetter)
	}
	return nil
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
			cons.log.Error().Err(err).Dur("retry_in", delay).Msg("cannot consume; retrying")
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
			cons.handle(ctx, sub, d)
		}
	}
}

func (cons *Consumer) handle(ctx context.Context, sub *subscription, d amqp091.Delivery) {
	del, err := cons.check(d)
	if err != nil {
		if cons.opts.OnRefused != nil {
			env, _ := protocol.Decode(d.Body) // nil when it does not decode: that is the refusal
			cons.opts.OnRefused(ctx, Refusal{Queue: cons.queue, MessageID: d.MessageId, RoutingKey: d.RoutingKey,
				UserID: d.UserId, Envelope: env, Err: err})
		}
		cons.deadLetter(ctx, sub, d, err)
		return
	}
	out := cons.call(ctx, del)
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
		cons.log.Warn().Err(out.err).Str("message_id", id).Int("retries", n+1).Dur("retry_in", delay).Msg("handler asked to retry the message")
		sub.after(delay, func() {
			if err := d.Nack(false, true); err != nil {
				cons.log.Debug().Err(err).Msg("requeue lost with the channel; the broker redelivers the message")
			}
		})
	}
}

// call runs the handler; a panic is a retry, so a message that crashes the
// handler every time ends in the dead-letter queue instead of the process
// dying on it in a loop.
func (cons *Consumer) call(ctx context.Context, d *Delivery) (out Outcome) {
	defer func() {
		if p := recover(); p != nil {
			cons.log.Error().Str("message_id", d.Envelope.ID).Str("stack", string(debug.Stack())).Msgf("handler panicked: %v", p)
			out = Retry(fmt.Errorf("handler panicked: %v", p))
		}
	}()
	return cons.h(ctx, d)
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

// check decodes a delivery and checks it against its properties and the
// sender rule. Errors are *protocol.Error, whose code dead-letters it.
func (cons *Consumer) check(d amqp091.Delivery) (*Delivery, error) {
	env, err := protocol.Decode(d.Body)
	if err != nil {
		return nil, err
	}
	if d.MessageId != "" && d.MessageId != env.ID {
		return nil, protocol.NewError(protocol.CodeBadRequest, "message_id property %q differs from the envelope's id %s", d.MessageId, env.ID)
	}
	if d.Type != "" && d.Type != string(env.Type) {
		return nil, protocol.NewError(protocol.CodeBadRequest, "type property %q differs from the envelope's type %s", d.Type, env.Type)
	}
	switch cons.opts.Senders {
	case SenderAgentUsers:
		if err := protocol.CheckSender(env, d.UserId, d.RoutingKey); err != nil {
			return nil, err
		}
	case SenderSharedUser, SenderAgentRecordedUsers:
		if env.Type.Direction() != protocol.ToCoordinator {
			return nil, protocol.NewError(protocol.CodeForgedSender, "type %s is never sent by agents", env.Type)
		}
		key, err := protocol.EventRoutingKey(env.Type, env.AgentID)
		if err != nil {
			return nil, err
		}
		if d.RoutingKey != key {
			return nil, protocol.NewError(protocol.CodeForgedSender, "routing key %q does not match %s from agent %s (want %q)", d.RoutingKey, env.Type, env.AgentID, key)
		}
	case SenderCoordinator:
		if env.Type.Direction() != protocol.ToAgent {
			return nil, protocol.NewError(protocol.CodeForgedSender, "type %s is never sent by the coordinator", env.Type)
		}
		if env.AgentID != cons.opts.AgentID {
			return nil, protocol.NewError(protocol.CodeBadRequest, "message for agent %s in the queue of agent %s", env.AgentID, cons.opts.AgentID)
		}
		if len(cons.opts.CoordinatorUsers) > 0 && !slices.Contains(cons.opts.CoordinatorUsers, d.UserId) {
			return nil, protocol.NewError(protocol.CodeForgedSender, "user_id %q is not a coordinator's broker user", d.UserId)
		}
	}
	return &Delivery{
		Envelope:      env,
		Queue:         cons.queue,
		Exchange:      d.Exchange,
		RoutingKey:    d.RoutingKey,
		UserID:        d.UserId,
		Redelivered:   d.Redelivered,
		DeliveryCount: deliveryCount(d.Headers),
		Timestamp:     d.Timestamp,
	}, nil
}

// deliveryCount reads the x-delivery-count header quorum queues set on
// redeliveries.
func deliveryCount(h amqp091.Table) int {
	switch v := h["x-delivery-count"].(type) {
	case int64:
		return int(v)
	case int32:
		return int(v)
	case int16:
		return int(v)
	case int8:
		return int(v)
	case int:
		return v
	case uint8:
		return int(v)
	case uint16:
		return int(v)
	case uint32:
		return int(v)
	}
	return 0
}

// deadLetter moves a message to the dead-letter queue with why.
func (cons *Consumer) deadLetter(ctx context.Context, sub *subscription, d amqp091.Delivery, why error) {
	code := protocol.CodeOf(why)
	logDead := func(msg string) {
		cons.log.Warn().Str("message_id", d.MessageId).Str("routing_key", d.RoutingKey).Str("user_id", d.UserId).
			Str("code", string(code)).Err(why).Msg(msg)
	}
	if cons.opts.DeadLetter == DeadLetterPublish {
		err := cons.c.publishOn(ctx, sub.s, protocol.DeadLetterExchange, d.RoutingKey, cons.deadLetterMessage(d, code, why))
		if err == nil {
			logDead("message dead-lettered")
			cons.ack(d)
			return
		}
		if !sub.s.alive() || ctx.Err() != nil {
			// The delivery is void too; it comes back and is judged again.
			cons.log.Debug().Err(err).Str("message_id", d.MessageId).Msg("dead-lettering interrupted; the broker redelivers the message")
			return
		}
		cons.log.Error().Err(err).Str("message_id", d.MessageId).Msg("publishing to the dead-letter exchange failed; rejecting to the queue's own dead-lettering, which keeps no reason")
	}
	logDead("message rejected to the dead-letter queue")
	if err := d.Nack(false, false); err != nil {
		cons.log.Debug().Err(err).Str("message_id", d.MessageId).Msg("reject lost with the channel; the broker redelivers the message")
	}
}

func (cons *Consumer) deadLetterMessage(d amqp091.Delivery, code protocol.ErrorCode, why error) amqp091.Publishing {
	h := make(amqp091.Table, len(d.Headers)+7)
	for k, v := range d.Headers {
		h[k] = v
	}
	// The code has its own header; "malformed: malformed: ..." helps nobody.
	text := protocol.TruncateText(strings.TrimPrefix(why.Error(), string(code)+": "), protocol.MaxTextLen)
	h[HeaderErrorCode] = string(code)
	h[HeaderError] = text
	h[HeaderOriginalExchange] = d.Exchange
	h[HeaderOriginalRoutingKey] = d.RoutingKey
	h[HeaderOriginalQueue] = cons.queue
	h[HeaderDeadLetteredBy] = cons.c.cfg.Name
	if d.UserId != "" {
		// The original user_id cannot stay in the property: RabbitMQ only
		// accepts this connection's own user there.
		h[HeaderOriginalUserID] = d.UserId
	}
	id := d.MessageId
	if id == "" {
		// Returns are matched to publishes by message ID.
		id = protocol.NewMessageID()
	}
	return amqp091.Publishing{
		Headers:         h,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp091.Persistent,
		CorrelationId:   d.CorrelationId,
		MessageId:       id,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		UserId:          cons.c.userID,
		AppId:           d.AppId,
		Body:            d.Body,
	}
}
