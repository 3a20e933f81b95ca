package amqp

import (
	"slices"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/protocol"
)

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
