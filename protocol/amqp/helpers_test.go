package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// testTimeout bounds each test's broker work, so a deadlock fails the test
// instead of hanging the run.
const testTimeout = 90 * time.Second

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
}

// fastBackoff keeps reconnection tests quick.
var fastBackoff = Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}

// openConn opens a Conn, closed when the test ends, and waits for it.
func openConn(t testing.TB, cfg Config) *Conn {
	t.Helper()
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = fastBackoff
	}
	cfg.Logger = testLogger(t)
	return openConnLogged(t, cfg)
}

// openConnLogged is openConn with the caller's logger.
func openConnLogged(t testing.TB, cfg Config) *Conn {
	t.Helper()
	c, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	return c
}

// coordinatorConn connects as guest and declares the shared topology.
func coordinatorConn(t testing.TB, b *testenv.Broker, name string) *Conn {
	t.Helper()
	return openConn(t, Config{URL: b.URL, Name: name, Topology: DeclareShared})
}

// rawChannel is a plain amqp091-go channel for what the tests do behind the
// package's back: inspecting queues, publishing what Publish would refuse.
func rawChannel(t testing.TB, url string) *amqp091.Channel {
	t.Helper()
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	return ch
}

// leakCheck fails the test if goroutines started during it outlive it.
// Call it first, so that its cleanup runs after every Close.
func leakCheck(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf)
				return
			}
			<-tick.C // poll: goroutines end on their own time, with no event to wait for
		}
	})
}

// waitFor polls cond until it holds or the deadline passes. Callers give a minute or more:
// a busy machine stalls the broker and the test for seconds.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func randomAgentID(t testing.TB) string {
	t.Helper()
	return testenv.UniqueUser("ws-")
}

func progressEnv(t testing.TB, agentID string) *protocol.Envelope {
	t.Helper()
	env, err := protocol.NewEnvelope(agentID, protocol.JobRef{JobID: "job-" + protocol.NewMessageID()[:8], Attempt: 1},
		protocol.Progress{Step: protocol.StepWaitingForToken, Detail: "insert the token"})
	if err != nil {
		t.Fatalf("envelope: %v", err)
	}
	return env
}

func heartbeatEnv(t testing.TB, agentID string) *protocol.Envelope {
	t.Helper()
	env, err := protocol.NewEnvelope(agentID, protocol.JobRef{}, protocol.Heartbeat{InstanceID: protocol.NewMessageID(), Seq: 1})
	if err != nil {
		t.Fatalf("envelope: %v", err)
	}
	return env
}

func cancelEnv(t testing.TB, agentID string) *protocol.Envelope {
	t.Helper()
	env, err := protocol.NewEnvelope(agentID, protocol.JobRef{JobID: "job-1", Attempt: 2},
		protocol.Cancel{State: protocol.StateCancelled, Reason: "operator cancelled"})
	if err != nil {
		t.Fatalf("envelope: %v", err)
	}
	return env
}

func encode(t testing.TB, env *protocol.Envelope) []byte {
	t.Helper()
	b, err := protocol.Encode(env)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

// rabbitList lists the broker vhost's queues, exchanges or bindings through the
// management API.
func rabbitList(t testing.TB, b *testenv.Broker, what string) []map[string]any {
	t.Helper()
	return b.List(t, what)
}

// queueDepth returns ready and unacknowledged message counts of a queue.
func queueDepth(t testing.TB, b *testenv.Broker, queue string) (ready, unacked int) {
	t.Helper()
	// rabbitmqctl, not the management API: its message counts lag by seconds, and a
	// stale "0 ready, 0 unacknowledged" would pass a wait for an empty queue too early.
	args := []string{"-q", "list_queues", "-p", b.VHost, "--formatter", "json", "name", "messages_ready", "messages_unacknowledged"}
	out := testenv.Run(t, "rabbitmqctl", args...)
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("rabbitmqctl list_queues: %v\n%s", err, out)
	}
	for _, row := range rows {
		if row["name"] == queue {
			return int(row["messages_ready"].(float64)), int(row["messages_unacknowledged"].(float64))
		}
	}
	t.Fatalf("queue %s not listed", queue)
	return 0, 0
}

// waitDepth waits until the broker reports ready and unacked messages in a
// queue; its statistics lag by a few seconds.
func waitDepth(t testing.TB, b *testenv.Broker, queue string, ready, unacked int) {
	t.Helper()
	var r, u int
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if r, u = queueDepth(t, b, queue); r == ready && u == unacked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s: %d ready, %d unacknowledged; want %d and %d", queue, r, u, ready, unacked)
		}
		<-tick.C
	}
}

// getN takes n messages from a queue, polling until they are there.
func getN(t testing.TB, ch *amqp091.Channel, queue string, n int) []amqp091.Delivery {
	t.Helper()
	var got []amqp091.Delivery
	waitFor(t, 60*time.Second, fmt.Sprintf("%d messages in %s", n, queue), func() bool {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatalf("get from %s: %v", queue, err)
		}
		if ok {
			got = append(got, d)
		}
		return len(got) >= n
	})
	return got
}

// recorder is a handler that records what it sees and answers with fn.
type recorder struct {
	mu   sync.Mutex
	seen []*Delivery
	fn   func(d *Delivery) Outcome
}

func (r *recorder) handle(_ context.Context, d *Delivery) Outcome {
	r.mu.Lock()
	r.seen = append(r.seen, d)
	r.mu.Unlock()
	if r.fn == nil {
		return Ack()
	}
	return r.fn(d)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *recorder) all() []*Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Delivery(nil), r.seen...)
}

func headerString(t testing.TB, d amqp091.Delivery, key string) string {
	t.Helper()
	v, ok := d.Headers[key].(string)
	if !ok {
		t.Fatalf("header %s: %#v (headers %v)", key, d.Headers[key], d.Headers)
	}
	return v
}

func brokerCode(err error) uint16 {
	var ae *amqp091.Error
	if errors.As(err, &ae) {
		return uint16(ae.Code)
	}
	return 0
}
