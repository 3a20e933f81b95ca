package dispatch_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	_ "github.com/tokenfleet/tokenfleet/coordinator/ca/builtin"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch"
	"github.com/tokenfleet/tokenfleet/coordinator/dispatch/dispatchtest"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// harness is a dispatcher of its own over a fresh store, for what the server's defaults
// make slow to watch (the heartbeat timeout).
type harness struct {
	st     store.Store
	d      *dispatch.Dispatcher
	broker *testenv.Broker
}

// fakeClock is the dispatcher's clock in tests of timeouts: it moves only when the test
// moves it, so a busy machine that handles a heartbeat late cannot make an agent look silent.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// newHarness starts a dispatcher whose clock is now (nil: the real one).
func newHarness(t *testing.T, heartbeatTimeout time.Duration, now func() time.Time, agents ...string) *harness {
	t.Helper()
	dir := t.TempDir()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Driver: store.DriverSQLite, DSN: filepath.Join(dir, "c.db")}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	err = st.InTx(ctx, func(tx store.Tx) error {
		for _, id := range agents {
			if _, err := tx.CreateAgent(ctx, store.Agent{ID: id, Hostname: id}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	authority, key := signers(t, ctx, st, dir, log)
	b := testenv.NewBroker(t)
	d, err := dispatch.New(dispatch.Options{Store: st, CA: authority, ResultKey: key, BrokerURL: b.URL, AgentUsers: dispatch.AgentUsersShared,
		Logger: log, HeartbeatTimeout: heartbeatTimeout, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Options{Store: d.Store(st), Logger: log, Dispatcher: d, Issuer: d})
	if err != nil {
		t.Fatal(err)
	}
	d.Bind(svc)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("dispatcher stopped with %v", err)
		}
	})
	return &harness{st: st, d: d, broker: b}
}

// waitAgent polls the agent's record until ok says it is as wanted.
func (h *harness) waitAgent(t *testing.T, id, what string, ok func(store.Agent) bool) store.Agent {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		a, err := h.st.GetAgent(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if ok(a) {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s not %s within %s: %+v", id, what, waitTimeout, a)
		}
		<-tick.C
	}
}

// TestPresence: heartbeats keep an agent online; without them it goes offline after the
// timeout, keeping its last-seen time; a hello records its inventory and seal key, and a
// hello with another key is refused. Heartbeats of an agent nobody enrolled are refused,
// audited once.
func TestPresence(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	h := newHarness(t, 600*time.Millisecond, clk.Now, "ws-live")
	a := dispatchtest.Start(t, h.broker.URL, "ws-live")
	a.Hello(dispatchtest.Token("L1", true), dispatchtest.Token("L2", false))
	ag := h.waitAgent(t, "ws-live", "online after its hello", func(a store.Agent) bool { return a.Online && len(a.PublicKey) > 0 })
	if ag.Hostname != "ws-live.test" || ag.Version != "scripted" || ag.OS != "linux/amd64" {
		t.Errorf("agent record %+v", ag)
	}
	ts, _, err := h.st.ListTokens(context.Background(), store.TokenFilter{AgentID: "ws-live"}, store.Page{})
	if err != nil || len(ts) != 2 || ts[0].Serial != "L1" || !strings.Contains(string(ts[0].Flags), `"initialized":true`) {
		t.Fatalf("tokens %+v, %v", ts, err)
	}

	// An inventory replaces what the tokens look like.
	a.Send(protocol.JobRef{}, protocol.Inventory{Tokens: []protocol.Token{dispatchtest.Token("L2", true), dispatchtest.Token("L3", false)}})
	deadline := time.Now().Add(waitTimeout)
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		t3, err := h.st.GetToken(context.Background(), "L3")
		t2, err2 := h.st.GetToken(context.Background(), "L2")
		if err == nil && err2 == nil && t3.AgentID == "ws-live" && strings.Contains(string(t2.Flags), `"initialized":true`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("inventory not recorded: %+v %v / %+v %v", t3, err, t2, err2)
		}
		<-poll.C
	}

	// Heartbeats keep it online past several timeouts, the clock moving 150 ms at each
	// one only once the one before is recorded: however late a busy machine handles them.
	var lastBeat time.Time
	for range 12 {
		at := clk.Advance(150 * time.Millisecond).UTC().Truncate(time.Microsecond)
		lastBeat = at
		a.Heartbeat()
		ag := h.waitAgent(t, "ws-live", "heartbeat recorded", func(a store.Agent) bool { return !a.LastHeartbeat.Before(at) })
		if !ag.Online {
			t.Fatalf("offline while sending heartbeats: %+v", ag)
		}
	}
	// Silent for longer than the timeout.
	clk.Advance(time.Second)
	seen := h.waitAgent(t, "ws-live", "offline after its heartbeats stopped", func(a store.Agent) bool { return !a.Online })
	if !seen.LastSeen.Equal(lastBeat) {
		t.Errorf("last seen %v, want the last heartbeat's %v", seen.LastSeen, lastBeat)
	}
	a.Heartbeat()
	h.waitAgent(t, "ws-live", "online again", func(a store.Agent) bool { return a.Online })

	// A reinstalled agent with a new seal key is refused until an admin resets the key.
	first := a.SealKey
	key, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a.SealKey = key
	hello := a.Hello()
	a.SealKey = first
	e := waitAuditEntry(t, h.st, audit.ActionMessageRejected, hello.ID)
	if !strings.Contains(e.Reason, "not the key") || !strings.Contains(e.Reason, "reset-key") {
		t.Errorf("refused hello: %q", e.Reason)
	}
	firstPub, err := seal.MarshalPublicKey(first.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if ag, err := h.st.GetAgent(context.Background(), "ws-live"); err != nil || !bytes.Equal(ag.PublicKey, firstPub) {
		t.Errorf("the recorded seal key changed: %v", err)
	}

	// Heartbeats claiming an agent nobody enrolled.
	conn, err := amqp.Open(context.Background(), amqp.Config{URL: h.broker.URL, Name: "ghost"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	var ids []string
	for i := range 3 {
		env, err := protocol.NewEnvelope("ws-ghost", protocol.JobRef{}, protocol.Heartbeat{InstanceID: protocol.NewMessageID(), Seq: uint64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.PublishEvent(context.Background(), env); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, env.ID)
	}
	e = waitAuditEntry(t, h.st, audit.ActionMessageRejected, ids[0])
	if !strings.Contains(e.Reason, "not enrolled") {
		t.Errorf("ghost heartbeat refused with %q", e.Reason)
	}
	// The others are refused too (dead-lettered with the hello), but not audited again
	// within the hour.
	h.waitDeadLetters(t, 4)
	n := 0
	for e, err := range h.st.AuditEntries(context.Background(), 1) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Action == audit.ActionMessageRejected && e.Target == "agent:ws-ghost" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d audit entries for the ghost's heartbeats, want 1", n)
	}
}

// waitAuditEntry polls the store for the entry of action about a message.
func waitAuditEntry(t *testing.T, st store.Store, action, messageID string) audit.Entry {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for e, err := range st.AuditEntries(context.Background(), 1) {
			if err != nil {
				t.Fatal(err)
			}
			if e.Action == action && strings.Contains(string(e.Details), messageID) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s entry for message %s within %s", action, messageID, waitTimeout)
		}
		<-tick.C
	}
}

// waitDeadLetters polls the dead-letter queue until it holds n messages.
func (h *harness) waitDeadLetters(t *testing.T, n int) {
	t.Helper()
	conn, err := amqp091.Dial(h.broker.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		q, err := ch.QueueDeclarePassive(protocol.DeadLetterQueue, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead-letter queue holds %d messages, want %d", q.Messages, n)
		}
		<-tick.C
	}
}

// TestOutboxOrderAndDamagedRows: rows for an agent go out in the order they were
// written; a row that cannot be sent is recorded as failed and holds nothing up.
func TestOutboxOrderAndDamagedRows(t *testing.T) {
	t.Parallel()
	h := newHarness(t, time.Minute, nil, "ws-order")
	a := dispatchtest.Start(t, h.broker.URL, "ws-order")
	var want []string
	var damaged store.OutboxMessage
	err := h.d.Store(h.st).InTx(context.Background(), func(tx store.Tx) error {
		var err error
		damaged, err = tx.AddOutbox(context.Background(), store.OutboxMessage{MessageID: protocol.NewMessageID(),
			Exchange: protocol.CommandsExchange, RoutingKey: "ws-order", Type: string(protocol.TypeCancel), Body: []byte("{damaged")})
		if err != nil {
			return err
		}
		for i := range 5 {
			env, err := protocol.NewEnvelope("ws-order", protocol.JobRef{JobID: "job" + string(rune('a'+i)), Attempt: 1},
				protocol.Cancel{State: protocol.StateCancelled, Reason: "in order"})
			if err != nil {
				return err
			}
			body, err := protocol.Encode(env)
			if err != nil {
				return err
			}
			if _, err := tx.AddOutbox(context.Background(), store.OutboxMessage{MessageID: env.ID, Exchange: protocol.CommandsExchange,
				RoutingKey: "ws-order", Type: string(env.Type), CorrelationID: env.JobID, Body: body}); err != nil {
				return err
			}
			want = append(want, env.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range want {
		got = append(got, a.Next(protocol.TypeCancel, "").ID)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("received %v, want %v", got, want)
	}
	row, err := h.st.GetOutbox(context.Background(), damaged.ID)
	if err != nil || !row.SentAt.IsZero() || row.Attempts != 1 || !strings.Contains(row.LastError, "does not decode") {
		t.Errorf("damaged row %+v, %v", row, err)
	}
}
