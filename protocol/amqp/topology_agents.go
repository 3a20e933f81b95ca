package amqp

import (
	"errors"
	"fmt"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// closeReasonWait bounds the wait for the reason of a channel the broker closed.
const closeReasonWait = 2 * time.Second

// closeNotifier is the part of *amqp091.Channel that says why the broker closed it.
type closeNotifier interface {
	NotifyClose(c chan *amqp091.Error) chan *amqp091.Error
}

// notifyClose returns where ch says why the broker closed it, or nil when ch cannot say.
func notifyClose(ch Declarer) chan *amqp091.Error {
	if cn, ok := ch.(closeNotifier); ok {
		return cn.NotifyClose(make(chan *amqp091.Error, 1))
	}
	return nil
}

// closeReason adds to err, a call's failure on a channel, why the broker closed the
// channel, from closed (notifyClose), when it did. A call sent after the one the broker
// refused fails with "channel not open" before the close reason, which names what was
// refused, has reached closed: it waits a moment for it, so that the error says what was
// wrong. It comes at once in practice, or the channel closes without one.
func closeReason(closed chan *amqp091.Error, err error) error {
	if closed == nil || err == nil {
		return err
	}
	because := func(reason *amqp091.Error, ok bool) error {
		if ok && reason != nil {
			return fmt.Errorf("%w (the broker closed the channel: %w)", err, reason)
		}
		return err
	}
	var ae *amqp091.Error
	if errors.As(err, &ae) && ae.Code == amqp091.ChannelError { // amqp091.ErrClosed among them
		t := time.NewTimer(closeReasonWait)
		defer t.Stop()
		select {
		case reason, ok := <-closed:
			return because(reason, ok)
		case <-t.C:
			return err
		}
	}
	select {
	case reason, ok := <-closed:
		return because(reason, ok)
	default:
		return err
	}
}

// DeclareAgents declares the command queues of many agents, as
// DeclareAgent does, pipelined on one channel: every method but the last is sent without
// waiting for its answer (nowait), and the last one's answer, which the broker sends
// after all before it, confirms them all. A refusal of any of them closes the channel;
// the error then says why, when the channel can tell. Creating a queue costs the broker
// milliseconds: callers with thousands of agents spread them over a few channels.
func DeclareAgents(ch Declarer, agentIDs []string) error {
	specs := make([]protocol.QueueSpec, len(agentIDs))
	for i, id := range agentIDs {
		q, err := protocol.AgentQueueSpec(id)
		if err != nil {
			return err
		}
		specs[i] = q
	}
	closed := notifyClose(ch)
	why := func(err error) error { return closeReason(closed, err) }
	for i, q := range specs {
		last := i == len(specs)-1
		if _, err := ch.QueueDeclare(q.Name, q.Durable, false, false, !last || len(q.Bindings) > 0, amqp091.Table(q.Args)); err != nil {
			return why(declareError("queue", q.Name, err))
		}
		for j, b := range q.Bindings {
			wait := last && j == len(q.Bindings)-1
			if err := ch.QueueBind(q.Name, b.RoutingKey, b.Exchange, !wait, nil); err != nil {
				return why(fmt.Errorf("binding queue %s to exchange %s with key %q (%d agents declared together): %w",
					q.Name, b.Exchange, b.RoutingKey, len(specs), err))
			}
		}
	}
	return nil
}
