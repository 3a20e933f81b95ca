package amqp

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// TestPublishBatch: one batch mixing what Publish meets one at a time: each
// message gets its own outcome (confirmed, returned, refused before sending),
// a refusal does not stop the later messages, and a queue receives its
// messages in the batch's order.
func TestPublishBatch(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	const agent = "ws-b1"
	if err := c.Declare(ctx, func(ch Declarer) error { return DeclareAgent(ch, agent) }); err != nil {
		t.Fatal(err)
	}
	raw := rawChannel(t, b.URL)
	cmd := func(agentID string) Outgoing {
		return Outgoing{Exchange: protocol.CommandsExchange, Key: agentID, Env: cancelEnv(t, agentID)}
	}
	bad := progressEnv(t, agent)
	bad.AgentID = "WS.01"
	// A stored encoding goes as it is, byte for byte (here with a trailing newline
	// Encode would not write).
	stored := cmd(agent)
	body, err := protocol.Encode(stored.Env)
	if err != nil {
		t.Fatal(err)
	}
	stored.Body = append(body, '\n')
	msgs := []Outgoing{
		cmd(agent),
		cmd("ws-nobody"),
		{Exchange: protocol.EventsExchange, Key: "progress.ws-b1", Env: bad},
		cmd(agent),
		{Exchange: protocol.EventsExchange, Key: "progress.ws-b1"}, // no envelope
		stored,
	}
	errs := c.PublishBatch(ctx, msgs)
	if len(errs) != len(msgs) {
		t.Fatalf("%d outcomes for %d messages", len(errs), len(msgs))
	}
	for _, i := range []int{0, 3, 5} {
		if errs[i] != nil {
			t.Errorf("message %d: %v, want confirmed", i, errs[i])
		}
	}
	var re *ReturnedError
	if !errors.As(errs[1], &re) || re.MessageID != msgs[1].Env.ID || re.Exchange != protocol.DefaultExchange || re.RoutingKey != protocol.AgentQueuePrefix+"ws-nobody" {
		t.Errorf("message to a missing agent queue: %v, want ErrReturned for %s", errs[1], msgs[1].Env.ID)
	}
	if protocol.CodeOf(errs[2]) != protocol.CodeBadRequest || protocol.CodeOf(errs[4]) != protocol.CodeBadRequest {
		t.Errorf("invalid envelopes: %v / %v, want bad_request", errs[2], errs[4])
	}
	got := getN(t, raw, protocol.AgentQueuePrefix+agent, 3)
	for k, i := range []int{0, 3, 5} {
		if got[k].MessageId != msgs[i].Env.ID {
			t.Errorf("agent queue message %d is %s, want %s (batch order)", k, got[k].MessageId, msgs[i].Env.ID)
		}
	}
	if !bytes.Equal(got[2].Body, stored.Body) {
		t.Errorf("a message given its encoding arrived as %q, want %q", got[2].Body, stored.Body)
	}
}

// TestPublishBatchChannelRefusal: a message that makes the broker close the
// channel fails, and so does every later one of the batch, unsent, so that
// none of them overtakes it; the next batch goes through a new channel.
func TestPublishBatchChannelRefusal(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	ev := func(exchange string) Outgoing {
		return Outgoing{Exchange: exchange, Key: "progress.ws-01", Env: progressEnv(t, "ws-01")}
	}
	msgs := []Outgoing{ev(protocol.EventsExchange), ev("tokenfleet.nowhere"), ev(protocol.EventsExchange), ev(protocol.EventsExchange)}
	errs := c.PublishBatch(ctx, msgs)
	if errs[0] != nil && !errors.Is(errs[0], ErrUnconfirmed) {
		t.Errorf("message before the refused one: %v, want confirmed or ErrUnconfirmed", errs[0])
	}
	for i, err := range errs[1:] {
		if !errors.Is(err, ErrUnconfirmed) {
			t.Errorf("message %d, at or after the refused one: %v, want ErrUnconfirmed", i+1, err)
		}
	}
	for i, err := range c.PublishBatch(ctx, []Outgoing{ev(protocol.EventsExchange), ev(protocol.EventsExchange)}) {
		if err != nil {
			t.Errorf("batch after the refusal, message %d: %v", i, err)
		}
	}
}

// TestPublishBatchContextEnds: a batch whose caller stops waiting reports
// every message unconfirmed, never a hang.
func TestPublishBatchContextEnds(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	msgs := []Outgoing{{Exchange: protocol.EventsExchange, Key: "progress.ws-01", Env: progressEnv(t, "ws-01")}}
	for _, err := range c.PublishBatch(ctx, msgs) {
		if !errors.Is(err, context.Canceled) && !errors.Is(err, ErrUnconfirmed) {
			t.Errorf("batch with an ended context: %v", err)
		}
	}
}
