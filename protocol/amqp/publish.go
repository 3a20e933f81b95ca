package amqp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Buffers of the confirm and return notifications. The reader drains them
// at once, so they only absorb bursts; amqp091-go drops a notification
// nobody takes within 5 s, which would leave a publish waiting forever.
const (
	confirmBuffer = 256
	returnBuffer  = 16
)

// errNotSent is a publish that never left: the channel was gone before the
// message could be handed to it. Publish retries those on a new channel.
var errNotSent = fmt.Errorf("%w: the channel closed before the message was sent", ErrUnconfirmed)

// Publish sends env, encoded with protocol.Encode, to exchange with routing
// key key, and returns once the broker has confirmed it. While the Conn is
// not connected it waits for a connection, as long as ctx allows.
//
// Properties: message_id = env.ID, correlation_id = env.JobID, type,
// user_id = UserID() (RabbitMQ refuses a user_id that is not the
// connection's user, which is what lets receivers trust it), timestamp,
// content type protocol.ContentType, delivery mode persistent for types
// that are (MessageType.Persistent), and for heartbeats an expiration of
// protocol.HeartbeatTTL. Every publish is mandatory.
//
// Errors:
//   - a *protocol.Error: env is not valid; nothing was sent. Do not retry.
//   - ErrReturned (*ReturnedError): no queue takes the routing key (for a
//     command: the agent's queue does not exist).
//   - ErrNacked: the broker refused the message; republish later.
//   - ErrUnconfirmed: the confirm is unknown (connection or channel lost,
//     or ctx ended while waiting). The message may have been delivered:
//     republish it unchanged; receivers dedupe on the message ID.
//   - ErrClosed, or ctx's error while waiting for a connection or for the
//     broker to lift a resource alarm: nothing was sent.
//
// Publish is safe for concurrent use; concurrent publishes share one
// channel in confirm mode and wait for their confirms in parallel.
func (c *Conn) Publish(ctx context.Context, exchange, key string, env *protocol.Envelope) error {
	msg, err := c.publishing(env)
	if err != nil {
		return err
	}
	ex, rk, err := protocol.CommandRoute(exchange, key)
	if err != nil {
		return err
	}
	if err := c.publish(ctx, ex, rk, msg); err != nil {
		return fmt.Errorf("publishing %s %s to exchange %q with key %q: %w", env.Type, env.ID, exchange, key, err)
	}
	return nil
}

// PublishEvent publishes an agent → coordinator message to the events
// exchange with routing key "<type>.<agentID>".
func (c *Conn) PublishEvent(ctx context.Context, env *protocol.Envelope) error {
	if env == nil {
		return protocol.NewError(protocol.CodeBadRequest, "envelope: nil")
	}
	key, err := protocol.EventRoutingKey(env.Type, env.AgentID)
	if err != nil {
		return err
	}
	return c.Publish(ctx, protocol.EventsExchange, key, env)
}

// PublishEvents publishes agent → coordinator messages as PublishEvent does, in their
// order on one channel with their confirms in flight together (PublishBatch): a burst
// costs about one round trip to the broker instead of one a message. errs[i] is the
// outcome of envs[i], with PublishBatch's errors.
func (c *Conn) PublishEvents(ctx context.Context, envs []*protocol.Envelope) []error {
	errs := make([]error, len(envs))
	msgs := make([]Outgoing, 0, len(envs))
	at := make([]int, 0, len(envs)) // index in envs of each of msgs
	for i, env := range envs {
		if env == nil {
			errs[i] = protocol.NewError(protocol.CodeBadRequest, "envelope: nil")
			continue
		}
		key, err := protocol.EventRoutingKey(env.Type, env.AgentID)
		if err != nil {
			errs[i] = err
			continue
		}
		msgs, at = append(msgs, Outgoing{Exchange: protocol.EventsExchange, Key: key, Env: env}), append(at, i)
	}
	for k, err := range c.PublishBatch(ctx, msgs) {
		errs[at[k]] = err
	}
	return errs
}

// PublishCommand publishes a coordinator → agent message to env.AgentID's
// queue, through the default exchange (protocol.CommandRoute). A missing agent
// queue makes it fail with ErrReturned.
func (c *Conn) PublishCommand(ctx context.Context, env *protocol.Envelope) error {
	if env == nil {
		return protocol.NewError(protocol.CodeBadRequest, "envelope: nil")
	}
	if env.Type.Direction() != protocol.ToAgent {
		return protocol.NewError(protocol.CodeBadRequest, "type %q is not sent to agents", env.Type)
	}
	key, err := protocol.CommandRoutingKey(env.AgentID)
	if err != nil {
		return err
	}
	return c.Publish(ctx, protocol.CommandsExchange, key, env)
}

func (c *Conn) publishing(env *protocol.Envelope) (amqp091.Publishing, error) {
	return c.publishingBody(env, nil)
}

// publishingBody is publishing with env's encoding given, when body is not nil.
func (c *Conn) publishingBody(env *protocol.Envelope, body []byte) (amqp091.Publishing, error) {
	if body == nil {
		var err error
		if body, err = protocol.Encode(env); err != nil {
			return amqp091.Publishing{}, err
		}
	}
	msg := amqp091.Publishing{
		ContentType:   protocol.ContentType,
		DeliveryMode:  amqp091.Transient,
		MessageId:     env.ID,
		CorrelationId: env.JobID,
		Type:          string(env.Type),
		UserId:        c.userID,
		Timestamp:     env.Time,
		Body:          body,
	}
	if env.Type.Persistent() {
		msg.DeliveryMode = amqp091.Persistent
	}
	if env.Type == protocol.TypeHeartbeat {
		msg.Expiration = strconv.FormatInt(protocol.HeartbeatTTL.Milliseconds(), 10)
	}
	return msg, nil
}

// publish waits for a session and publishes on it. A message that never
// left (errNotSent) because the connection went away is tried again on the
// next connection.
func (c *Conn) publish(ctx context.Context, exchange, key string, msg amqp091.Publishing) error {
	for {
		s, err := c.session(ctx)
		if err != nil {
			return err
		}
		err = c.publishOn(ctx, s, exchange, key, msg)
		if errors.Is(err, errNotSent) && !s.alive() {
			continue
		}
		return err
	}
}

// publishOn publishes on one session, reopening its channel if a broker
// refusal closed it.
func (c *Conn) publishOn(ctx context.Context, s *session, exchange, key string, msg amqp091.Publishing) error {
	for tries := 0; ; tries++ {
		if err := s.waitUnblocked(ctx); err != nil {
			return err
		}
		cc, err := s.publisher(c)
		if err != nil {
			return err
		}
		err = cc.publish(ctx, exchange, key, msg)
		if errors.Is(err, errNotSent) && tries < 2 && s.alive() {
			continue
		}
		return err
	}
}

// publisher returns the session's channel in confirm mode, opening one if
// there is none or the last one was closed.
func (s *session) publisher(c *Conn) (*confirmChannel, error) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if s.pub != nil && s.pub.usable() {
		return s.pub, nil
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("%w: opening a channel: %w", errNotSent, err)
	}
	closes := ch.NotifyClose(make(chan *amqp091.Error, 1))
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, confirmBuffer))
	returns := ch.NotifyReturn(make(chan amqp091.Return, returnBuffer))
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("%w: confirm mode: %w", errNotSent, err)
	}
	cc := &confirmChannel{ch: ch, pending: make(map[uint64]*waiter)}
	if !c.goroutine(func() { cc.read(confirms, returns, closes) }) {
		_ = ch.Close()
		return nil, ErrClosed
	}
	s.pub = cc
	return cc, nil
}

// confirmChannel is a channel in confirm mode shared by concurrent
// publishes: each registers a waiter under the sequence number the broker
// will confirm, and one goroutine (read) settles the waiters.
type confirmChannel struct {
	ch *amqp091.Channel

	// sendMu serialises taking a sequence number with sending the message,
	// so that numbers match the order the broker sees. The reader never
	// takes it: a publish blocked on the socket cannot stall confirms.
	sendMu sync.Mutex

	mu      sync.Mutex // guards the fields below
	pending map[uint64]*waiter
	gone    error // why the channel ended; nil while it is open
}

type waiter struct {
	messageID string
	returned  *amqp091.Return
	done      chan error // buffered: settled exactly once, without blocking
}

func (cc *confirmChannel) usable() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.gone == nil && !cc.ch.IsClosed()
}

func (cc *confirmChannel) publish(ctx context.Context, exchange, key string, msg amqp091.Publishing) error {
	p, err := cc.send(ctx, exchange, key, msg)
	if err != nil {
		return err
	}
	return p.wait(ctx)
}

// inFlight is a message sent on a confirmChannel whose confirm is awaited.
type inFlight struct {
	cc  *confirmChannel
	seq uint64
	w   *waiter
}

// send hands msg to the broker and registers the waiter of its confirm,
// without waiting for it.
func (cc *confirmChannel) send(ctx context.Context, exchange, key string, msg amqp091.Publishing) (inFlight, error) {
	w := &waiter{messageID: msg.MessageId, done: make(chan error, 1)}
	cc.sendMu.Lock()
	cc.mu.Lock()
	if cc.gone != nil {
		cc.mu.Unlock()
		cc.sendMu.Unlock()
		return inFlight{}, errNotSent
	}
	seq := cc.ch.GetNextPublishSeqNo()
	cc.pending[seq] = w
	cc.mu.Unlock()
	err := cc.ch.PublishWithContext(ctx, exchange, key, true, false, msg)
	cc.sendMu.Unlock()
	if err != nil {
		cc.forget(seq)
		if errors.Is(err, amqp091.ErrClosed) {
			return inFlight{}, errNotSent
		}
		return inFlight{}, fmt.Errorf("%w: sending: %w", ErrUnconfirmed, err)
	}
	return inFlight{cc: cc, seq: seq, w: w}, nil
}

// wait returns the outcome of the message's confirm.
func (p inFlight) wait(ctx context.Context) error {
	select {
	case err := <-p.w.done:
		return err
	case <-ctx.Done():
		p.cc.forget(p.seq)
		return fmt.Errorf("%w: stopped waiting: %w", ErrUnconfirmed, ctx.Err())
	}
}

func (cc *confirmChannel) forget(seq uint64) {
	cc.mu.Lock()
	delete(cc.pending, seq)
	cc.mu.Unlock()
}

// read settles waiters until the channel closes, then fails the rest.
func (cc *confirmChannel) read(confirms <-chan amqp091.Confirmation, returns <-chan amqp091.Return, closes <-chan *amqp091.Error) {
	for confirms != nil {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			cc.markReturned(r)
		case cf, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			// RabbitMQ sends a message's basic.return before its ack, and
			// amqp091-go hands them over in that order from one goroutine:
			// a return for this ack is already buffered.
			returns = cc.drainReturns(returns)
			cc.settle(cf)
		}
	}
	// amqp091-go sends the close reason, then closes every notification
	// channel, the confirms last.
	why := errConnectionClosed
	select {
	case e, ok := <-closes:
		if ok && e != nil {
			why = e
		}
	default:
	}
	cc.fail(why)
}

func (cc *confirmChannel) drainReturns(returns <-chan amqp091.Return) <-chan amqp091.Return {
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				return nil
			}
			cc.markReturned(r)
		default:
			return returns
		}
	}
}

// markReturned attaches a return to the oldest pending publish of that
// message ID (the return carries no sequence number); its ack follows.
func (cc *confirmChannel) markReturned(r amqp091.Return) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	var oldest uint64
	for seq, w := range cc.pending {
		if w.messageID == r.MessageId && w.returned == nil && (oldest == 0 || seq < oldest) {
			oldest = seq
		}
	}
	if oldest != 0 {
		cc.pending[oldest].returned = &r
	}
}

func (cc *confirmChannel) settle(cf amqp091.Confirmation) {
	cc.mu.Lock()
	w := cc.pending[cf.DeliveryTag]
	delete(cc.pending, cf.DeliveryTag)
	cc.mu.Unlock()
	switch {
	case w == nil: // its publisher stopped waiting
	case !cf.Ack:
		w.done <- ErrNacked
	case w.returned != nil:
		r := w.returned
		w.done <- &ReturnedError{MessageID: r.MessageId, Exchange: r.Exchange, RoutingKey: r.RoutingKey, ReplyCode: r.ReplyCode, ReplyText: r.ReplyText}
	default:
		w.done <- nil
	}
}

func (cc *confirmChannel) fail(why error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.gone = why
	for seq, w := range cc.pending {
		w.done <- fmt.Errorf("%w: the channel closed before the confirm: %w", ErrUnconfirmed, why)
		delete(cc.pending, seq)
	}
}
