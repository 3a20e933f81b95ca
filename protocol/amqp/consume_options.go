package amqp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenfleet/tokenfleet/protocol"
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
	// OnDeadLettered, if set, hears of every message the consumer dead-lettered (refused,
	// rejected by the handler, or retried too often), with its code, for metrics. It runs
	// on the consumer's goroutine and must return quickly.
	OnDeadLettered func(queue string, code protocol.ErrorCode)
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
