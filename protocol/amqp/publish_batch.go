package amqp

import (
	"context"
	"errors"
	"fmt"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Outgoing is one message of PublishBatch: env, encoded with protocol.Encode,
// to exchange with routing key Key (a command's address, CommandsExchange and
// the agent's ID, goes to the agent's queue: protocol.CommandRoute).
type Outgoing struct {
	Exchange string
	Key      string
	Env      *protocol.Envelope
	// Body, if set, is Env as protocol.Encode encoded it earlier (an outbox row's
	// stored body), sent as is: a republished message is then byte for byte the
	// one first sent, and is not encoded again. The properties still come from Env.
	Body []byte
}

// PublishBatch publishes msgs in their order on one channel with every
// confirm in flight at once, then waits for the confirms: a batch costs about
// one round trip to the broker where Publish costs one per message. It
// returns one outcome per message, errs[i] for msgs[i], with the errors
// Publish documents; the properties are Publish's.
//
// Order: the messages leave in the order of msgs, on one channel, so a queue
// receives those routed to it in that order. A message the broker refuses
// (ErrNacked, ErrReturned) does not stop the later ones: a caller that needs
// a route's messages in order sends one message per route in a batch.
//
// A message that does not encode gets its *protocol.Error and is not sent;
// the others go on. When the channel or the connection is lost, or ctx ends,
// the messages still without a confirm get ErrUnconfirmed (they may have been
// delivered: republish them unchanged), and the messages not yet sent get
// ErrUnconfirmed as well, so that none of them overtakes an earlier one.
// While the Conn is not connected, PublishBatch waits for a connection before
// sending the first message, as long as ctx allows.
func (c *Conn) PublishBatch(ctx context.Context, msgs []Outgoing) []error {
	errs := make([]error, len(msgs))
	pubs := make([]amqp091.Publishing, len(msgs))
	routes := make([][2]string, len(msgs)) // exchange and key on the broker (protocol.CommandRoute)
	var todo []int
	for i, m := range msgs {
		if m.Env == nil {
			errs[i] = protocol.NewError(protocol.CodeBadRequest, "envelope: nil")
			continue
		}
		p, err := c.publishingBody(m.Env, m.Body)
		if err != nil {
			errs[i] = err
			continue
		}
		ex, key, err := protocol.CommandRoute(m.Exchange, m.Key)
		if err != nil {
			errs[i] = err
			continue
		}
		pubs[i], routes[i] = p, [2]string{ex, key}
		todo = append(todo, i)
	}
	sent := make([]inFlight, len(msgs))
	var waiting []int
	var s *session
	var cc *confirmChannel
	tries := 0
	for k := 0; k < len(todo); k++ {
		i := todo[k]
		var err error
		if cc == nil {
			s, cc, err = c.batchChannel(ctx)
		}
		if err == nil {
			err = s.waitUnblocked(ctx)
		}
		if err == nil {
			sent[i], err = cc.send(ctx, routes[i][0], routes[i][1], pubs[i])
		}
		if err == nil {
			waiting = append(waiting, i)
			continue
		}
		// Nothing of the batch is in flight yet: a message that never left is
		// tried again on a new channel (and connection), as Publish does.
		if errors.Is(err, errNotSent) && len(waiting) == 0 && ctx.Err() == nil && (s == nil || !s.alive() || tries < 2) {
			if s != nil && s.alive() {
				tries++
			}
			cc = nil
			k--
			continue
		}
		// The rest would overtake what is in flight if sent on another channel:
		// none of it is sent.
		for _, j := range todo[k:] {
			errs[j] = c.batchError(msgs[j], err)
		}
		break
	}
	for _, i := range waiting {
		if err := sent[i].wait(ctx); err != nil {
			errs[i] = c.batchError(msgs[i], err)
		}
	}
	return errs
}

// batchChannel waits for a session and returns its confirm-mode channel.
func (c *Conn) batchChannel(ctx context.Context) (*session, *confirmChannel, error) {
	s, err := c.session(ctx)
	if err != nil {
		return nil, nil, err
	}
	cc, err := s.publisher(c)
	if err != nil {
		return s, nil, err
	}
	return s, cc, nil
}

func (c *Conn) batchError(m Outgoing, err error) error {
	return fmt.Errorf("publishing %s %s to exchange %q with key %q: %w", m.Env.Type, m.Env.ID, m.Exchange, m.Key, err)
}
