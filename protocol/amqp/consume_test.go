package amqp

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// mutate decodes an encoded envelope into a map, lets fn change it, and
// encodes it again: a message Encode would never produce.
func mutate(t *testing.T, body []byte, fn func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestConsumeDeadLettersBadMessages: what cannot be decoded or does not
// match its properties goes to the dead-letter queue with its reason,
// without reaching the handler, and the consumer goes on.
func TestConsumeDeadLettersBadMessages(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	rec := &recorder{}
	cons, err := c.Consume(ctx, protocol.EventsQueue, ConsumeOptions{Senders: SenderSharedUser}, rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()

	raw := rawChannel(t, b.URL)
	good := encode(t, progressEnv(t, "ws-01"))
	bad := []struct {
		name string
		body []byte
		id   string // message_id property
		code protocol.ErrorCode
	}{
		{"malformed", []byte(`{"version":1,"id":`), "", protocol.CodeMalformed},
		{"unknown type", mutate(t, good, func(m map[string]any) { m["type"] = "exfiltrate" }), "", protocol.CodeUnknownType},
		{"future version", mutate(t, good, func(m map[string]any) { m["version"] = 99 }), "", protocol.CodeUnsupportedVersion},
		{"oversized", append(append([]byte(`{"version":1,"pad":"`), bytes.Repeat([]byte("a"), protocol.MaxMessageSize)...), `"}`...), "", protocol.CodeTooLarge},
		{"message_id differs", good, protocol.NewMessageID(), protocol.CodeBadRequest},
		{"command on the events exchange", encode(t, cancelEnv(t, "ws-01")), "", protocol.CodeForgedSender},
	}
	for _, m := range bad {
		if err := raw.PublishWithContext(ctx, protocol.EventsExchange, "progress.ws-01", false, false, amqp091.Publishing{
			Body: m.body, MessageId: m.id, Headers: amqp091.Table{"x-test": m.name},
		}); err != nil {
			t.Fatal(err)
		}
	}
	env := progressEnv(t, "ws-01")
	if err := c.PublishEvent(ctx, env); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the good message", func() bool { return rec.count() >= 1 })
	if seen := rec.all(); len(seen) != 1 || seen[0].Envelope.ID != env.ID {
		t.Fatalf("handler saw %d messages, want only %s", len(seen), env.ID)
	}

	dead := getN(t, rawChannel(t, b.URL), protocol.DeadLetterQueue, len(bad))
	for i, m := range bad {
		d := dead[i]
		if got := headerString(t, d, "x-test"); got != m.name {
			t.Fatalf("dead letter %d is %q, want %q (order)", i, got, m.name)
		}
		if code := headerString(t, d, HeaderErrorCode); code != string(m.code) {
			t.Errorf("%s: code %s, want %s (%s)", m.name, code, m.code, headerString(t, d, HeaderError))
		}
		if msg := headerString(t, d, HeaderError); msg == "" || len(msg) > protocol.MaxTextLen {
			t.Errorf("%s: error header %q", m.name, msg)
		}
		if headerString(t, d, HeaderOriginalRoutingKey) != "progress.ws-01" || d.RoutingKey != "progress.ws-01" ||
			headerString(t, d, HeaderOriginalExchange) != protocol.EventsExchange ||
			headerString(t, d, HeaderOriginalQueue) != protocol.EventsQueue {
			t.Errorf("%s: origin headers %v, routing key %q", m.name, d.Headers, d.RoutingKey)
		}
		if !bytes.Equal(d.Body, m.body) {
			t.Errorf("%s: body changed on the way to the dead-letter queue", m.name)
		}
		t.Logf("%s → %s: %s", m.name, headerString(t, d, HeaderErrorCode), headerString(t, d, HeaderError))
	}

	// And it goes on.
	env2 := progressEnv(t, "ws-01")
	if err := c.PublishEvent(ctx, env2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the next message", func() bool { return rec.count() >= 2 })
	waitDepth(t, b, protocol.EventsQueue, 0, 0)
}

// TestConsumeRetryBounded: a handler that always asks to retry gets the
// message MaxRetries+1 times, then it is dead-lettered with the reason,
// on a quorum queue (x-delivery-count) and on a classic one (counted by
// the consumer).
func TestConsumeRetryBounded(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	const agent = "ws-01"
	if err := c.Declare(ctx, func(ch Declarer) error { return DeclareAgent(ch, agent) }); err != nil {
		t.Fatal(err)
	}
	dead := rawChannel(t, b.URL)
	tests := []struct {
		name    string
		queue   string
		opts    ConsumeOptions
		publish func(context.Context, *protocol.Envelope) error
		env     *protocol.Envelope
		quorum  bool
	}{
		{"events quorum queue", protocol.EventsQueue, ConsumeOptions{Senders: SenderSharedUser}, c.PublishEvent, progressEnv(t, agent), true},
		{"agent classic queue", protocol.AgentQueuePrefix + agent, ConsumeOptions{Senders: SenderCoordinator, AgentID: agent, Exclusive: true}, c.PublishCommand, cancelEnv(t, agent), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const maxRetries = 3
			rec := &recorder{fn: func(*Delivery) Outcome {
				return Retry(protocol.NewError(protocol.CodeInternal, "journal disk full"))
			}}
			opts := tc.opts
			opts.MaxRetries = maxRetries
			opts.RetryDelay = time.Millisecond
			cons, err := c.Consume(ctx, tc.queue, opts, rec.handle)
			if err != nil {
				t.Fatal(err)
			}
			defer cons.Close()
			if err := tc.publish(ctx, tc.env); err != nil {
				t.Fatal(err)
			}
			d := getN(t, dead, protocol.DeadLetterQueue, 1)[0]
			if d.MessageId != tc.env.ID || headerString(t, d, HeaderErrorCode) != string(protocol.CodeInternal) ||
				!strings.Contains(headerString(t, d, HeaderError), "gave up after 3 retries") ||
				!strings.Contains(headerString(t, d, HeaderError), "journal disk full") {
				t.Errorf("dead letter %s: %v", d.MessageId, d.Headers)
			}
			waitDepth(t, b, tc.queue, 0, 0)
			seen := rec.all()
			if len(seen) != maxRetries+1 {
				t.Fatalf("handler saw the message %d times, want %d", len(seen), maxRetries+1)
			}
			for i, s := range seen {
				if s.Redelivered != (i > 0) {
					t.Errorf("delivery %d: redelivered %v", i, s.Redelivered)
				}
				if tc.quorum && s.DeliveryCount != i {
					t.Errorf("delivery %d: delivery count %d", i, s.DeliveryCount)
				}
			}
		})
	}
}

// TestConsumeRetryHoldsUpNothing: while a message waits for its retry (here for an
// hour), the consumer goes on with the next ones; closing the consumer hands the waiting
// message back to the queue.
func TestConsumeRetryHoldsUpNothing(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	stuck := progressEnv(t, "ws-01")
	rec := &recorder{fn: func(d *Delivery) Outcome {
		if d.Envelope.ID == stuck.ID {
			return Retry(protocol.NewError(protocol.CodeInternal, "database away"))
		}
		return Ack()
	}}
	cons, err := c.Consume(ctx, protocol.EventsQueue, ConsumeOptions{Senders: SenderSharedUser, RetryDelay: time.Hour}, rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PublishEvent(ctx, stuck); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		env := progressEnv(t, "ws-01")
		if err := c.PublishEvent(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 60*time.Second, "the messages after the one waiting for its retry", func() bool { return rec.count() >= 4 })
	for _, d := range rec.all()[1:] {
		if d.Envelope.ID == stuck.ID {
			t.Fatalf("the waiting message came back before its retry delay")
		}
	}
	// Only the waiting message is left, unacknowledged; closing gives it back.
	waitDepth(t, b, protocol.EventsQueue, 0, 1)
	cons.Close()
	waitDepth(t, b, protocol.EventsQueue, 1, 0)
}

// TestConsumeHandlerOutcomes: Reject dead-letters with the handler's code;
// a panicking handler is retried and then dead-lettered, the process lives.
func TestConsumeHandlerOutcomes(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	stale := progressEnv(t, "ws-01")
	crash := progressEnv(t, "ws-01")
	fine := progressEnv(t, "ws-01")
	rec := &recorder{fn: func(d *Delivery) Outcome {
		switch d.Envelope.ID {
		case stale.ID:
			return Reject(protocol.NewError(protocol.CodeStaleAttempt, "attempt 1, current attempt 2"))
		case crash.ID:
			panic("nil map in the result handler")
		}
		return Ack()
	}}
	cons, err := c.Consume(ctx, protocol.EventsQueue, ConsumeOptions{Senders: SenderSharedUser, MaxRetries: 1, RetryDelay: time.Millisecond}, rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	for _, env := range []*protocol.Envelope{stale, crash, fine} {
		if err := c.PublishEvent(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	dead := getN(t, rawChannel(t, b.URL), protocol.DeadLetterQueue, 2)
	codes := map[string]string{}
	for _, d := range dead {
		codes[d.MessageId] = headerString(t, d, HeaderErrorCode) + ": " + headerString(t, d, HeaderError)
	}
	if !strings.HasPrefix(codes[stale.ID], "stale_attempt: ") {
		t.Errorf("rejected message: %q", codes[stale.ID])
	}
	if !strings.HasPrefix(codes[crash.ID], "internal: gave up after 1 retries: handler panicked: nil map") {
		t.Errorf("panicking message: %q", codes[crash.ID])
	}
	waitFor(t, 60*time.Second, "all deliveries", func() bool { return rec.count() == 4 }) // stale, crash ×2, fine
	waitDepth(t, b, protocol.EventsQueue, 0, 0)
}

// TestConsumeOptions: a consumer without a sender rule, or with a bad one,
// is refused before anything starts; shared-user mode says once what it
// does not check.
func TestConsumeOptions(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	var logBuf syncBuffer
	c := openConnLogged(t, Config{URL: b.URL, Topology: DeclareShared, Backoff: fastBackoff, Logger: zerolog.New(&logBuf)})
	h := func(context.Context, *Delivery) Outcome { return Ack() }
	for range 2 {
		cons, err := c.Consume(ctx, protocol.EventsQueue, ConsumeOptions{Senders: SenderSharedUser}, h)
		if err != nil {
			t.Fatal(err)
		}
		cons.Close()
	}
	if n := strings.Count(logBuf.String(), "sender checks rely on the shared broker user only"); n != 1 {
		t.Errorf("shared-user warning logged %d times, want once:\n%s", n, logBuf.String())
	}

	for _, opts := range []ConsumeOptions{
		{},
		{Senders: SenderCoordinator},
		{Senders: SenderSharedUser, Prefetch: 70000},
		{Senders: SenderSharedUser, MaxRetries: -1},
	} {
		if _, err := c.Consume(ctx, protocol.EventsQueue, opts, h); err == nil {
			t.Errorf("Consume with %+v: accepted", opts)
		}
	}
	_, err := c.Consume(ctx, "tokenfleet.agent.ws-nobody", ConsumeOptions{Senders: SenderCoordinator, AgentID: "ws-nobody"}, h)
	if !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("consuming a missing agent queue: %v, want ErrNotEnrolled", err)
	}
}

// TestExclusiveConsumer: a second agent with the same ID, on another
// connection, is refused with a clear error; it gets the queue once the
// first one leaves.
func TestExclusiveConsumer(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	coord := coordinatorConn(t, b, "tokenfleet-coordinator test")
	const agent = "ws-01"
	if err := coord.Declare(ctx, func(ch Declarer) error { return DeclareAgent(ch, agent) }); err != nil {
		t.Fatal(err)
	}
	agentCfg := func(host string) Config {
		return Config{URL: b.URL, Name: "tokenfleet-agent " + agent + "@" + host,
			Topology: func(ch Declarer) error { return CheckAgentQueue(ch, agent) }}
	}
	opts := ConsumeOptions{Senders: SenderCoordinator, AgentID: agent, Exclusive: true}
	first := openConn(t, agentCfg("host-a"))
	second := openConn(t, agentCfg("host-b"))
	rec1, rec2 := &recorder{}, &recorder{}
	cons1, err := first.Consume(ctx, protocol.AgentQueuePrefix+agent, opts, rec1.handle)
	if err != nil {
		t.Fatal(err)
	}
	_, err = second.Consume(ctx, protocol.AgentQueuePrefix+agent, opts, rec2.handle)
	var inUse *QueueInUseError
	if !errors.Is(err, ErrQueueInUse) || !errors.As(err, &inUse) || brokerCode(err) != amqp091.AccessRefused {
		t.Fatalf("second consumer: %v, want ErrQueueInUse", err)
	}
	if !strings.Contains(err.Error(), "agent ID ws-01 is already in use by another connected agent") || inUse.AgentID != agent {
		t.Errorf("error %q", err)
	}
	if second.Status().State != StateConnected {
		t.Errorf("the refusal cost the second agent its connection: %+v", second.Status())
	}

	env := cancelEnv(t, agent)
	if err := coord.PublishCommand(ctx, env); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the first agent's delivery", func() bool { return rec1.count() == 1 })

	cons1.Close()
	cons1.Close() // twice is fine
	var cons2 *Consumer
	waitFor(t, 60*time.Second, "the queue to be free", func() bool {
		cons2, err = second.Consume(ctx, protocol.AgentQueuePrefix+agent, opts, rec2.handle)
		return err == nil
	})
	defer cons2.Close()
	env2 := cancelEnv(t, agent)
	if err := coord.PublishCommand(ctx, env2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the second agent's delivery", func() bool { return rec2.count() == 1 })
	if got := rec2.all()[0]; got.Envelope.ID != env2.ID || got.UserID != "guest" || got.RoutingKey != protocol.AgentQueuePrefix+agent {
		t.Errorf("second agent got %+v", got)
	}
}

// TestSenderChecks runs agents with their own broker users and
// protocol.AgentPermissions: the broker refuses a forged user_id and a
// routing key of another agent; the consumer dead-letters an envelope that
// claims another agent or lacks user_id.
func TestSenderChecks(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	coord := coordinatorConn(t, b, "tokenfleet-coordinator test")
	agent, victim := randomAgentID(t), randomAgentID(t)
	agentURL := addAgentUser(t, b, agent)
	addAgentUser(t, b, victim)
	for _, id := range []string{agent, victim} {
		if err := coord.Declare(ctx, func(ch Declarer) error { return DeclareAgent(ch, id) }); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	cons, err := coord.Consume(ctx, protocol.EventsQueue, ConsumeOptions{Senders: SenderAgentUsers}, rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()

	ac := openConn(t, Config{URL: agentURL, Name: "tokenfleet-agent " + agent + "@test",
		Topology: func(ch Declarer) error { return CheckAgentQueue(ch, agent) }})
	agentUser, _ := protocol.AgentUser(agent)
	if ac.UserID() != agentUser {
		t.Fatalf("user_id %q, want %q", ac.UserID(), agentUser)
	}

	// The genuine article.
	genuine := progressEnv(t, agent)
	if err := ac.PublishEvent(ctx, genuine); err != nil {
		t.Fatalf("agent publishing as itself: %v", err)
	}
	waitFor(t, 60*time.Second, "the genuine event", func() bool { return rec.count() == 1 })
	if d := rec.all()[0]; d.UserID != agentUser || d.Envelope.ID != genuine.ID {
		t.Errorf("genuine event delivered as %+v", d)
	}

	// Claiming the victim with the victim's routing key: the broker's
	// topic permissions refuse it.
	err = ac.PublishEvent(ctx, progressEnv(t, victim))
	if !errors.Is(err, ErrUnconfirmed) || brokerCode(err) != amqp091.AccessRefused {
		t.Errorf("publishing with another agent's routing key: %v, want ACCESS_REFUSED", err)
	}

	// Claiming the victim under its own routing key: the broker lets it
	// through (it checks user_id and routing key, not the body); the
	// consumer's CheckSender dead-letters it.
	forged := progressEnv(t, victim)
	if err := ac.Publish(ctx, protocol.EventsExchange, "progress."+agent, forged); err != nil {
		t.Fatalf("publishing a forged envelope: %v", err)
	}

	// A user_id that is not the connection's user: RabbitMQ refuses it.
	victimUser, _ := protocol.AgentUser(victim)
	liar := openConn(t, Config{URL: agentURL, Name: "tokenfleet-agent liar", UserID: victimUser})
	// Its own routing key, so that the topic permissions (checked first)
	// let it through to the user_id check.
	err = liar.Publish(ctx, protocol.EventsExchange, "progress."+agent, progressEnv(t, victim))
	if !errors.Is(err, ErrUnconfirmed) || brokerCode(err) != amqp091.PreconditionFailed || !strings.Contains(err.Error(), "user_id") {
		t.Errorf("publishing with a forged user_id: %v, want PRECONDITION_FAILED", err)
	}

	// No user_id at all (a client that does not set it): RabbitMQ checks
	// nothing, so the consumer must refuse it.
	raw := rawChannel(t, b.URL)
	noUser := progressEnv(t, agent)
	if err := raw.PublishWithContext(ctx, protocol.EventsExchange, "progress."+agent, false, false,
		amqp091.Publishing{MessageId: noUser.ID, Body: encode(t, noUser)}); err != nil {
		t.Fatal(err)
	}

	dead := getN(t, rawChannel(t, b.URL), protocol.DeadLetterQueue, 2)
	byID := map[string]amqp091.Delivery{}
	for _, d := range dead {
		byID[d.MessageId] = d
	}
	for id, want := range map[string]string{forged.ID: "but the broker user is", noUser.ID: "user_id property missing"} {
		d, ok := byID[id]
		if !ok {
			t.Errorf("message %s not dead-lettered", id)
			continue
		}
		if headerString(t, d, HeaderErrorCode) != string(protocol.CodeForgedSender) || !strings.Contains(headerString(t, d, HeaderError), want) {
			t.Errorf("message %s: %v", id, d.Headers)
		}
	}
	if got := headerString(t, byID[forged.ID], HeaderOriginalUserID); got != agentUser {
		t.Errorf("original user header %q, want %q", got, agentUser)
	}
	if rec.count() != 1 {
		t.Errorf("handler saw %d messages, want only the genuine one", rec.count())
	}

	// After the refusals the agent's connection still publishes, and it
	// consumes its own queue.
	if err := ac.PublishEvent(ctx, progressEnv(t, agent)); err != nil {
		t.Errorf("publishing after refusals: %v", err)
	}
	cmds := &recorder{}
	ccons, err := ac.Consume(ctx, protocol.AgentQueuePrefix+agent, ConsumeOptions{
		Senders: SenderCoordinator, AgentID: agent, Exclusive: true, CoordinatorUsers: []string{"guest"},
		DeadLetter: DeadLetterNack, // an agent may not write to the dead-letter exchange
	}, cmds.handle)
	if err != nil {
		t.Fatalf("agent consuming its queue: %v", err)
	}
	defer ccons.Close()
	if err := coord.PublishCommand(ctx, cancelEnv(t, agent)); err != nil {
		t.Fatal(err)
	}
	// A command for the victim, misrouted into this agent's queue.
	misrouted := cancelEnv(t, victim)
	if err := coord.Publish(ctx, protocol.CommandsExchange, agent, misrouted); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the command", func() bool { return cmds.count() == 1 })
	d := getN(t, rawChannel(t, b.URL), protocol.DeadLetterQueue, 1)[0]
	if d.MessageId != misrouted.ID {
		t.Errorf("dead letter %s, want the misrouted command %s", d.MessageId, misrouted.ID)
	}
	if _, ok := d.Headers["x-death"]; !ok {
		t.Errorf("misrouted command dead-lettered without x-death: %v", d.Headers)
	}
}

// addAgentUser creates an agent's broker user with exactly the permissions
// protocol.AgentPermissions gives it.
func addAgentUser(t *testing.T, b *testenv.Broker, agentID string) string {
	t.Helper()
	user, err := protocol.AgentUser(agentID)
	if err != nil {
		t.Fatal(err)
	}
	p, err := protocol.AgentPermissions(agentID)
	if err != nil {
		t.Fatal(err)
	}
	url := b.AddUser(t, user, p.Configure, p.Write, p.Read)
	b.SetTopicPermissions(t, user, p.TopicExchange, p.TopicWrite, p.TopicRead)
	return url
}

// syncBuffer is a log destination goroutines may share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestOpenConfig: configurations that cannot work are refused at Open.
func TestOpenConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"bad URL":          {URL: "http://example.org/"},
		"TLS over amqp://": {URL: "amqp://guest:guest@127.0.0.1:5672/", TLS: &tls.Config{MinVersion: tls.VersionTLS12}},
		"backoff max<min":  {URL: "amqp://127.0.0.1/", Backoff: Backoff{Min: time.Second, Max: time.Millisecond}},
	} {
		if c, err := Open(context.Background(), cfg); err == nil {
			_ = c.Close()
			t.Errorf("%s: accepted", name)
		}
	}
	c, err := Open(context.Background(), Config{URL: "amqps://agent-ws-01:pw@127.0.0.1:1/fleet", TLS: &tls.Config{MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatalf("amqps with TLS: %v", err)
	}
	defer func() { _ = c.Close() }()
	if c.UserID() != "agent-ws-01" || strings.Contains(c.endpoint, "pw") {
		t.Errorf("user %q, endpoint %q", c.UserID(), c.endpoint)
	}
}

// TestDeadLetterErrorHeaderCutWhole: a long non-ASCII reason is cut to
// MaxTextLen without splitting a character, so the header stays valid text.
func TestDeadLetterErrorHeaderCutWhole(t *testing.T) {
	cons := &Consumer{c: &Conn{}, queue: protocol.EventsQueue}
	why := protocol.NewError(protocol.CodeBadRequest, "%s", "x"+strings.Repeat("é", protocol.MaxTextLen))
	p := cons.deadLetterMessage(amqp091.Delivery{MessageId: protocol.NewMessageID()}, protocol.CodeBadRequest, why)
	msg, _ := p.Headers[HeaderError].(string)
	if len(msg) > protocol.MaxTextLen || len(msg) < protocol.MaxTextLen-1 || !utf8.ValidString(msg) {
		t.Fatalf("error header of %d bytes, valid UTF-8 %v", len(msg), utf8.ValidString(msg))
	}
}
