package amqp

import (
	"context"
	"errors"
	"fmt"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Declarer is what topology declaration needs of a channel;
// *amqp091.Channel has it. A broker refusal closes the channel: use a
// fresh one after an error.
type Declarer interface {
	ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp091.Table) error
	QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp091.Table) (amqp091.Queue, error)
	QueueDeclarePassive(name string, durable, autoDelete, exclusive, noWait bool, args amqp091.Table) (amqp091.Queue, error)
	QueueBind(name, key, exchange string, noWait bool, args amqp091.Table) error
}

// DeclareShared declares the exchanges and shared queues of
// protocol.SharedTopology, with their bindings. It is idempotent; a queue
// or exchange that exists with other properties fails with
// ErrTopologyMismatch. Coordinators call it after every connection
// (Config.Topology); on a channel that publishes it also checks that the user
// may write to the default exchange, which commands go through.
func DeclareShared(ch Declarer) error {
	t := protocol.SharedTopology()
	for _, x := range t.Exchanges {
		if err := ch.ExchangeDeclare(x.Name, x.Kind, x.Durable, false, false, false, nil); err != nil {
			return declareError("exchange", x.Name, err)
		}
	}
	for _, q := range t.Queues {
		if err := declareQueue(ch, q); err != nil {
			return err
		}
	}
	if p, ok := ch.(probePublisher); ok {
		return checkCommandRoute(ch, p)
	}
	return nil
}

// probePublisher is the part of *amqp091.Channel that publishes.
type probePublisher interface {
	PublishWithContext(ctx context.Context, exchange, key string, mandatory, immediate bool, msg amqp091.Publishing) error
}

// ErrCommandRouteRefused is DeclareShared's refusal of a broker user that may not write
// to the default exchange, through which commands reach the agents' queues.
var ErrCommandRouteRefused = errors.New("the broker user may not write to the default exchange (" +
	protocol.DefaultExchangePermission + "), through which commands reach the agents' queues")

// checkCommandRoute makes sure the coordinator's broker user may write to the default
// exchange, through which commands reach agents' queues (protocol.CommandRoute): a user
// set up for earlier versions may write to tokenfleet.* only, and would have every
// command refused. An empty message to the default exchange with an empty routing key
// reaches no queue (no queue is named ""); a refusal closes the channel, which the passive
// declare after it reports, or the close's reason when it comes first.
func checkCommandRoute(ch Declarer, p probePublisher) error {
	closed := notifyClose(ch)
	err := p.PublishWithContext(context.Background(), protocol.DefaultExchange, "", false, false, amqp091.Publishing{})
	if err == nil {
		_, err = ch.QueueDeclarePassive(protocol.EventsQueue, true, false, false, false, nil)
	}
	err = closeReason(closed, err)
	if err == nil {
		return nil
	}
	if hasBrokerCode(err, amqp091.AccessRefused) {
		perm := protocol.CoordinatorPermissions()
		return fmt.Errorf("%w: give the coordinator's user rabbitmqctl set_permissions -p VHOST USER '%s' '%s' '%s': %w",
			ErrCommandRouteRefused, perm.Configure, perm.Write, perm.Read, err)
	}
	return fmt.Errorf("checking the route of commands through the default exchange: %w", err)
}

// DeclareAgent declares an agent's command queue (protocol.AgentQueueSpec),
// unbound: commands reach it through the default exchange.
// The coordinator calls it when it enrols an agent; an agent's broker user
// may not configure anything and uses CheckAgentQueue instead.
func DeclareAgent(ch Declarer, agentID string) error {
	q, err := protocol.AgentQueueSpec(agentID)
	if err != nil {
		return err
	}
	return declareQueue(ch, q)
}

// CheckAgentQueue passively declares an agent's command queue: it needs no
// configure permission and fails with ErrNotEnrolled (a *QueueNotFoundError)
// when the queue does not exist. Agents call it after every connection.
func CheckAgentQueue(ch Declarer, agentID string) error {
	name, err := protocol.AgentQueue(agentID)
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclarePassive(name, true, false, false, false, nil); err != nil {
		if ae, ok := brokerError(err); ok && ae.Code == amqp091.NotFound {
			return &QueueNotFoundError{Queue: name, AgentID: agentID, Cause: err}
		}
		return fmt.Errorf("checking queue %s: %w", name, err)
	}
	return nil
}

func declareQueue(ch Declarer, q protocol.QueueSpec) error {
	if _, err := ch.QueueDeclare(q.Name, q.Durable, false, false, false, amqp091.Table(q.Args)); err != nil {
		return declareError("queue", q.Name, err)
	}
	for _, b := range q.Bindings {
		if err := ch.QueueBind(q.Name, b.RoutingKey, b.Exchange, false, nil); err != nil {
			if ae, ok := brokerError(err); ok && ae.Code == amqp091.NotFound {
				return fmt.Errorf("binding queue %s to exchange %s (declare the shared topology first): %w", q.Name, b.Exchange, err)
			}
			return fmt.Errorf("binding queue %s to exchange %s with key %q: %w", q.Name, b.Exchange, b.RoutingKey, err)
		}
	}
	return nil
}

func declareError(kind, name string, err error) error {
	if ae, ok := brokerError(err); ok && ae.Code == amqp091.PreconditionFailed {
		return fmt.Errorf("%w: %s %s exists with other properties; migrate it by hand: %w", ErrTopologyMismatch, kind, name, err)
	}
	return fmt.Errorf("declaring %s %s: %w", kind, name, err)
}

// hasBrokerCode says whether any broker error in err's tree has the code: a call that
// found the channel closed (504) carries the close's reason (a 403, say) beside it, which
// errors.As, stopping at the first, would not reach.
func hasBrokerCode(err error, code int) bool {
	// The tree is walked by hand: errors.As would stop at the first broker error.
	if ae, ok := err.(*amqp091.Error); ok && ae.Code == code { //nolint:errorlint // one node of the walk
		return true
	}
	switch u := err.(type) { //nolint:errorlint // the walk's own unwrapping
	case interface{ Unwrap() error }:
		return hasBrokerCode(u.Unwrap(), code)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if hasBrokerCode(e, code) {
				return true
			}
		}
	}
	return false
}
