package amqp

import (
	"context"
	"time"

	"github.com/tokenfleet/tokenfleet/protocol"
)

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

// BatchHandler handles deliveries received together (ConsumeBatch) and returns one
// outcome for each, outs[i] for ds[i]. It runs on the consumer's goroutine, one batch at
// a time; ds is never empty.
type BatchHandler func(ctx context.Context, ds []*Delivery) []Outcome
