package amqp

import (
	"context"
	"strings"

	amqp091 "github.com/rabbitmq/amqp091-go"

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
			cons.deadLettered(code)
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
		return
	}
	cons.deadLettered(code)
}

func (cons *Consumer) deadLettered(code protocol.ErrorCode) {
	if cons.opts.OnDeadLettered != nil {
		cons.opts.OnDeadLettered(cons.queue, code)
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
