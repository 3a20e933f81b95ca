package amqp

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestPublishProperties publishes each kind of message with a confirm and
// reads it back with a plain client to check every property.
func TestPublishProperties(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	const agent = "ws-01"
	if err := c.Declare(ctx, func(ch Declarer) error { return DeclareAgent(ch, agent) }); err != nil {
		t.Fatal(err)
	}
	raw := rawChannel(t, b.URL)

	tests := []struct {
		name       string
		env        *protocol.Envelope
		publish    func(context.Context, *protocol.Envelope) error
		queue      string
		routingKey string
		persistent bool
		expiration string
	}{
		{"progress", progressEnv(t, agent), c.PublishEvent, protocol.EventsQueue, "progress." + agent, true, ""},
		{"heartbeat", heartbeatEnv(t, agent), c.PublishEvent, protocol.HeartbeatsQueue, "heartbeat." + agent, false, strconv.FormatInt(protocol.HeartbeatTTL.Milliseconds(), 10)},
		// Commands reach the agent's queue through the default exchange, by its name.
		{"cancel", cancelEnv(t, agent), c.PublishCommand, protocol.AgentQueuePrefix + agent, protocol.AgentQueuePrefix + agent, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.publish(ctx, tc.env); err != nil {
				t.Fatalf("publish: %v", err)
			}
			d := getN(t, raw, tc.queue, 1)[0]
			if d.MessageId != tc.env.ID || d.Type != string(tc.env.Type) || d.CorrelationId != tc.env.JobID {
				t.Errorf("message_id %q type %q correlation_id %q; envelope %s %s %q", d.MessageId, d.Type, d.CorrelationId, tc.env.ID, tc.env.Type, tc.env.JobID)
			}
			if d.UserId != "guest" || d.ContentType != protocol.ContentType || d.RoutingKey != tc.routingKey {
				t.Errorf("user_id %q content_type %q routing key %q", d.UserId, d.ContentType, d.RoutingKey)
			}
			if (d.DeliveryMode == amqp091.Persistent) != tc.persistent {
				t.Errorf("delivery mode %d, persistent want %v", d.DeliveryMode, tc.persistent)
			}
			if d.Expiration != tc.expiration {
				t.Errorf("expiration %q, want %q", d.Expiration, tc.expiration)
			}
			if !d.Timestamp.Equal(tc.env.Time.Truncate(time.Second)) {
				t.Errorf("timestamp %v, envelope time %v", d.Timestamp, tc.env.Time)
			}
			env, err := protocol.Decode(d.Body)
			if err != nil || env.ID != tc.env.ID {
				t.Errorf("body decodes to %+v, %v", env, err)
			}
		})
	}
}

// TestPublishReturned: a command for an agent without a queue is returned
// (mandatory) and Publish says so, instead of the broker dropping it.
func TestPublishReturned(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	env := cancelEnv(t, "ws-nobody")
	err := c.PublishCommand(ctx, env)
	var re *ReturnedError
	if !errors.Is(err, ErrReturned) || !errors.As(err, &re) {
		t.Fatalf("publish to a missing agent queue: %v, want ErrReturned", err)
	}
	if re.MessageID != env.ID || re.Exchange != protocol.DefaultExchange || re.RoutingKey != protocol.AgentQueuePrefix+"ws-nobody" || re.ReplyCode != amqp091.NoRoute {
		t.Errorf("returned error %+v", re)
	}
	// Returns among concurrent publishes reach the right callers.
	if err := c.Declare(ctx, func(ch Declarer) error { return DeclareAgent(ch, "ws-02") }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Go(func() {
			agent := "ws-02"
			if i%2 == 1 {
				agent = "ws-nobody"
			}
			errs[i] = c.PublishCommand(ctx, cancelEnv(t, agent))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 0 && err != nil {
			t.Errorf("publish %d to an enrolled agent: %v", i, err)
		}
		if i%2 == 1 && !errors.Is(err, ErrReturned) {
			t.Errorf("publish %d to a missing agent: %v, want ErrReturned", i, err)
		}
	}
	waitDepth(t, b, protocol.AgentQueuePrefix+"ws-02", 20, 0)
}

// TestPublishInvalidEnvelope: Encode's verdict, with its protocol code,
// before anything is sent.
func TestPublishInvalidEnvelope(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	env := progressEnv(t, "ws-01")
	env.AgentID = "WS.01"
	err := c.PublishEvent(ctx, env)
	if protocol.CodeOf(err) != protocol.CodeBadRequest {
		t.Errorf("publishing a bad agent ID: %v, want bad_request", err)
	}
	env = progressEnv(t, "ws-01")
	env.Version = 99
	if err := c.Publish(ctx, protocol.EventsExchange, "progress.ws-01", env); !errors.Is(err, protocol.ErrUnsupportedVersion) {
		t.Errorf("publishing version 99: %v", err)
	}
	if err := c.PublishCommand(ctx, progressEnv(t, "ws-01")); protocol.CodeOf(err) != protocol.CodeBadRequest {
		t.Errorf("publishing an event as a command: %v", err)
	}
	// A valid message published afterwards is the first in the queue.
	good := progressEnv(t, "ws-01")
	if err := c.PublishEvent(ctx, good); err != nil {
		t.Fatal(err)
	}
	raw := rawChannel(t, b.URL)
	if d := getN(t, raw, protocol.EventsQueue, 1)[0]; d.MessageId != good.ID {
		t.Errorf("first message in the events queue is %s, want %s", d.MessageId, good.ID)
	}
}

// TestPublishChannelRefusal: publishing to a missing exchange makes the
// broker close the channel; that publish fails, later ones go through a
// new channel.
func TestPublishChannelRefusal(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	err := c.Publish(ctx, "tokenfleet.nowhere", "x", progressEnv(t, "ws-01"))
	if !errors.Is(err, ErrUnconfirmed) || brokerCode(err) != amqp091.NotFound {
		t.Fatalf("publish to a missing exchange: %v, want ErrUnconfirmed with NOT_FOUND", err)
	}
	if err := c.PublishEvent(ctx, progressEnv(t, "ws-01")); err != nil {
		t.Fatalf("publish after the refusal: %v", err)
	}
	if st := c.Status(); st.State != StateConnected {
		t.Errorf("status %+v: a channel refusal must not cost the connection", st)
	}
}

// TestPublishConcurrent: many publishes in flight on one channel, each
// settled by its own confirm.
func TestPublishConcurrent(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	const workers, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				if err := c.PublishEvent(ctx, progressEnv(t, "ws-01")); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("publish: %v", err)
	}
	waitDepth(t, b, protocol.EventsQueue, workers*each, 0)
}

// TestPublishContextEnds: a caller that stops waiting gets ErrUnconfirmed
// (the message may still arrive), never a hang.
func TestPublishContextEnds(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := c.PublishEvent(ctx, progressEnv(t, "ws-01"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("publish with an ended context: %v", err)
	}
}
