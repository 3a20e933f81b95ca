//go:build cgo

package e2e_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// tapQueue is the queue in the test's vhost that gets a copy of every message: everything
// on the events exchange ("#"), the dead letters, and the commands to the agents. Commands
// go through the default exchange to each agent's queue by its name, which no binding can
// copy: the vhost traces (RabbitMQ's firehose), and the tap takes the copies of what was
// published to the default exchange.
const tapQueue = "e2e.tap"

// tracedDefault is the routing key of the firehose's copy of a message published to the
// default exchange ("publish." + the exchange's name, which is empty).
const tracedDefault = "publish."

// tap reads what crosses the broker with a plain AMQP client, not the project's transport.
// It holds no connection between uses: tests close every connection of the vhost.
type tap struct {
	url string

	mu   sync.Mutex // guards msgs
	msgs []tapped
}

// tapped is one message as the broker held it.
type tapped struct {
	exchange, routingKey string
	messageID, typ       string
	userID               string // the broker user the publisher connected as (validated by RabbitMQ when set)
	body                 []byte
	properties           string // headers and the other properties, rendered
}

// newTap declares the shared exchanges (as the coordinator does, with the same
// parameters) and the tap queue with its bindings, before anything runs in the vhost.
func newTap(t *testing.T, b *testenv.Broker) *tap {
	t.Helper()
	tp := &tap{url: b.URL}
	tp.with(t, func(ch *amqp091.Channel) error {
		for _, x := range protocol.SharedTopology().Exchanges {
			if err := ch.ExchangeDeclare(x.Name, x.Kind, x.Durable, false, false, false, nil); err != nil {
				return fmt.Errorf("declaring exchange %s: %w", x.Name, err)
			}
		}
		if _, err := ch.QueueDeclare(tapQueue, true, false, false, false, amqp091.Table{"x-queue-type": "classic"}); err != nil {
			return err
		}
		if err := ch.QueueBind(tapQueue, "#", protocol.EventsExchange, false, nil); err != nil {
			return err
		}
		if err := ch.QueueBind(tapQueue, tracedDefault, testenv.TraceExchange, false, nil); err != nil {
			return err
		}
		return ch.QueueBind(tapQueue, "", protocol.DeadLetterExchange, false, nil)
	})
	b.Trace(t)
	return tp
}

// consumers is how many consumers the queue has.
func (tp *tap) consumers(t testing.TB, queue string) int {
	t.Helper()
	var n int
	tp.with(t, func(ch *amqp091.Channel) error {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		n = q.Consumers
		return err
	})
	return n
}

// waitNoConsumer waits until the broker has dropped every consumer of the queue (after an
// agent was killed, it sees the socket close).
func (tp *tap) waitNoConsumer(t testing.TB, queue string) {
	t.Helper()
	eventually(t, "no consumer on "+queue, func() (bool, string) {
		n := tp.consumers(t, queue)
		return n == 0, fmt.Sprintf("%d consumers", n)
	})
}

// messages drains the tap queue and returns every message it ever held, oldest first.
func (tp *tap) messages(t testing.TB) []tapped {
	t.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.with(t, func(ch *amqp091.Channel) error {
		for {
			d, ok, err := ch.Get(tapQueue, true)
			if err != nil || !ok {
				return err
			}
			if d.Exchange == testenv.TraceExchange {
				m, ok := traced(d)
				if ok {
					tp.msgs = append(tp.msgs, m)
				}
				continue
			}
			tp.msgs = append(tp.msgs, tapped{exchange: d.Exchange, routingKey: d.RoutingKey, messageID: d.MessageId,
				typ: d.Type, userID: d.UserId, body: d.Body, properties: fmt.Sprintf("%v %s %s %s %s", d.Headers, d.CorrelationId, d.UserId, d.AppId, d.ReplyTo)})
		}
	})
	return append([]tapped(nil), tp.msgs...)
}

// traced is the message a firehose copy stands for, as published: the firehose puts the
// exchange, the routing keys and the publisher's properties in its headers. Only commands
// are kept (published to the default exchange for an agent's queue): the other copies
// are what the coordinator's start sends to check its permissions.
func traced(d amqp091.Delivery) (tapped, bool) {
	ex, _ := d.Headers["exchange_name"].(string)
	keys, _ := d.Headers["routing_keys"].([]any)
	props, _ := d.Headers["properties"].(amqp091.Table)
	if ex != protocol.DefaultExchange || len(keys) != 1 {
		return tapped{}, false
	}
	key, _ := keys[0].(string)
	if !strings.HasPrefix(key, protocol.AgentQueuePrefix) {
		return tapped{}, false
	}
	str := func(name string) string { v, _ := props[name].(string); return v }
	return tapped{exchange: ex, routingKey: key, messageID: str("message_id"), typ: str("type"), userID: str("user_id"),
		body: d.Body, properties: fmt.Sprintf("%v %s %s %s %s", props["headers"], str("correlation_id"), str("user_id"), str("app_id"), str("reply_to"))}, true
}

// with runs fn on a fresh channel of a fresh connection.
func (tp *tap) with(t testing.TB, fn func(ch *amqp091.Channel) error) {
	t.Helper()
	conn, err := amqp091.DialConfig(tp.url, amqp091.Config{Heartbeat: 10 * time.Second, Properties: amqp091.Table{"connection_name": "e2e tap"}})
	if err != nil {
		t.Fatalf("tap: connecting: %v", err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("tap: channel: %v", err)
	}
	if err := fn(ch); err != nil {
		t.Fatalf("tap: %v", err)
	}
}

// distinct counts the distinct messages (by message ID) of a type on the events exchange
// for a job, as the coordinator dedupes them.
func distinct(msgs []tapped, typ protocol.MessageType, jobID string, match func(*protocol.Envelope) bool) int {
	seen := map[string]bool{}
	for _, m := range msgs {
		if m.typ != string(typ) {
			continue
		}
		env, err := protocol.Decode(m.body)
		if err != nil || env.JobID != jobID || (match != nil && !match(env)) {
			continue
		}
		seen[env.ID] = true
	}
	return len(seen)
}
