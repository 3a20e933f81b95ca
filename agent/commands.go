package agent

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// Prefetch bounds the commands the broker hands the agent before it acks: each is
// journalled in a millisecond, so a few suffice.
const Prefetch = 8

// queueCheck makes sure of the agent's queue after every connection, per its mode.
type queueCheck struct {
	mode    QueueMode
	agentID string
	log     zerolog.Logger
	// refused: in QueueAuto, the broker refused a declaration for lack of the configure
	// permission; only passive checks from then on.
	refused atomic.Bool
}

// declare is the connection's topology step.
func (q *queueCheck) declare(ch amqp.Declarer) error {
	if q.mode == QueueCheck || (q.mode == QueueAuto && q.refused.Load()) {
		return amqp.CheckAgentQueue(ch, q.agentID)
	}
	err := amqp.DeclareAgent(ch, q.agentID)
	var ae *amqp091.Error
	if q.mode == QueueAuto && errors.As(err, &ae) && ae.Code == amqp091.AccessRefused {
		q.refused.Store(true)
		q.log.Info().Msg("the broker user may not declare queues, as expected of an enrolled agent: checking the agent's queue passively from now on")
		// The refusal closed the channel; the next attempt checks on a fresh one.
		return fmt.Errorf("declaring the agent's queue: %w", err)
	}
	return err
}

// jobs is what the consumer needs of the executor.
type jobs interface {
	Submit(ctx context.Context, env *protocol.Envelope) (journal.Receipt, error)
	DeliverCertificate(ctx context.Context, env *protocol.Envelope, d protocol.CertificateDelivery) (journal.Receipt, error)
	Cancel(ctx context.Context, env *protocol.Envelope) (journal.Receipt, error)
}

// consume consumes the agent's queue exclusively until ctx ends, calling subscribed once
// the broker granted the first subscription. It fails only when that first subscription is
// refused because another agent holds the queue: the agent ID is taken. A refusal after a
// reconnection is retried by the transport (most often the broker has not yet noticed that
// this agent's previous connection is dead).
func (a *Agent) consume(ctx context.Context, conn Transport, ex jobs, subscribed func()) error {
	queue, err := protocol.AgentQueue(a.cfg.ID)
	if err != nil {
		return err
	}
	opts := amqp.ConsumeOptions{
		Prefetch: Prefetch, Exclusive: true,
		Senders: amqp.SenderCoordinator, AgentID: a.cfg.ID, CoordinatorUsers: a.cfg.Broker.CoordinatorUsers,
		// Agents may not publish to the dead-letter exchange: the queue's own
		// dead-lettering moves what they reject.
		DeadLetter: amqp.DeadLetterNack,
	}
	backoff := retryBackoff(a.cfg.Broker.Backoff)
	for failures := 0; ; failures++ {
		cons, err := conn.Consume(ctx, queue, opts, a.handler(ex))
		if err == nil {
			a.log.Info().Str("queue", queue).Msg("consuming the agent's queue")
			subscribed()
			<-ctx.Done()
			cons.Close()
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, amqp.ErrClosed) {
			return nil //nolint:nilerr // shutting down is not a failure to consume
		}
		if errors.Is(err, amqp.ErrQueueInUse) {
			return &DuplicateIDError{AgentID: a.cfg.ID, Broker: a.endpoint, Err: err}
		}
		// Before the first subscription nothing suggests the refusal will pass; the
		// connection's refusals once connected are the refusalWatch's to judge.
		if e := a.broker.consumeRefusal(err); e != nil && failures == 0 {
			return e
		}
		delay := backoff.Delay(failures)
		a.log.Error().Err(err).Dur("retry_in_ms", delay).Msg("cannot consume the agent's queue; retrying")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// handler hands each command to the executor, which journals it and returns at once;
// the delivery is acked then, whatever the executor made of it (a duplicate or stale
// message is safely dropped). A message the executor refuses as bad is dead-lettered;
// one it could not journal is requeued, to be journalled later.
func (a *Agent) handler(ex jobs) amqp.Handler {
	return func(ctx context.Context, d *amqp.Delivery) amqp.Outcome {
		env := d.Envelope
		var err error
		switch env.Type {
		case protocol.TypeDispatch:
			_, err = ex.Submit(ctx, env)
		case protocol.TypeCertificate:
			body, derr := protocol.DecodeBody[protocol.CertificateDelivery](env)
			if derr != nil {
				return amqp.Reject(derr)
			}
			_, err = ex.DeliverCertificate(ctx, env, body)
		case protocol.TypeCancel:
			_, err = ex.Cancel(ctx, env)
		default:
			return amqp.Reject(protocol.NewError(protocol.CodeUnknownType, "%s messages are not for agents", env.Type))
		}
		if err == nil {
			return amqp.Ack()
		}
		log := a.log.With().Str("message_id", env.ID).Str("type", string(env.Type)).Str("job", env.JobID).Uint32("attempt", env.Attempt).Logger()
		if badMessage(err) {
			log.Warn().Err(err).Msg("refusing a bad command: dead-lettered")
			return amqp.Reject(err)
		}
		if ctx.Err() == nil {
			log.Error().Err(err).Msg("cannot journal a command; it goes back to the queue")
		}
		return amqp.Retry(err)
	}
}

// badMessage: the executor's error says the message itself is wrong (a protocol error with
// a client code), so retrying cannot help.
func badMessage(err error) bool {
	var pe *protocol.Error
	return errors.As(err, &pe) && pe.Code != protocol.CodeInternal
}
