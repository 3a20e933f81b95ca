package amqp

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// batchRecorder is a BatchHandler that records each batch's message IDs, holds the first
// batch until released (so that the messages behind it pile up in the prefetch), and
// answers with fn for each delivery (Ack when nil), or with whole panics when poison is in
// the batch.
type batchRecorder struct {
	fn      func(d *Delivery) Outcome
	poison  string
	first   chan struct{}
	release chan struct{}

	mu      sync.Mutex
	batches [][]string
}

func newBatchRecorder() *batchRecorder {
	return &batchRecorder{first: make(chan struct{}), release: make(chan struct{})}
}

func (r *batchRecorder) handle(_ context.Context, ds []*Delivery) []Outcome {
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.Envelope.ID
	}
	r.mu.Lock()
	n := len(r.batches)
	r.batches = append(r.batches, ids)
	r.mu.Unlock()
	if n == 0 {
		close(r.first)
		<-r.release
	}
	if r.poison != "" && slices.Contains(ids, r.poison) {
		panic("nil map in the result handler")
	}
	outs := make([]Outcome, len(ds))
	for i, d := range ds {
		outs[i] = Ack()
		if r.fn != nil {
			outs[i] = r.fn(d)
		}
	}
	return outs
}

func (r *batchRecorder) all() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.batches)
}

func (r *batchRecorder) seen() []string {
	var ids []string
	for _, b := range r.all() {
		ids = append(ids, b...)
	}
	return ids
}

// TestConsumeBatch: the deliveries waiting behind a busy handler reach it together, at
// most the batch size at once and in the order they were published; a message refused
// by the consumer's checks is dead-lettered without reaching the handler and breaks no
// batch; each delivery is settled by its own outcome. The burst itself goes out with
// PublishEvents, its confirms in flight together, in order.
func TestConsumeBatch(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	const maxBatch = 8
	stale := progressEnv(t, "ws-01")
	rec := newBatchRecorder()
	rec.fn = func(d *Delivery) Outcome {
		if d.Envelope.ID == stale.ID {
			return Reject(protocol.NewError(protocol.CodeStaleAttempt, "attempt 1, current attempt 2"))
		}
		return Ack()
	}
	if _, err := c.ConsumeBatch(ctx, protocol.EventsQueue, ConsumeOptions{Senders: SenderSharedUser}, 0, rec.handle); err == nil {
		t.Fatal("a batch of 0 was taken")
	}
	cons, err := c.ConsumeBatch(ctx, protocol.EventsQueue, ConsumeOptions{Senders: SenderSharedUser}, maxBatch, rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()

	head := progressEnv(t, "ws-01")
	if err := c.PublishEvent(ctx, head); err != nil {
		t.Fatal(err)
	}
	<-rec.first
	var burst []*protocol.Envelope
	for i := range 20 {
		env := progressEnv(t, "ws-01")
		if i == 6 {
			env = stale
		}
		burst = append(burst, env)
	}
	errs := c.PublishEvents(ctx, append(slices.Clone(burst[:10]), nil))
	for i, err := range errs[:10] {
		if err != nil {
			t.Fatalf("message %d of the burst: %v", i, err)
		}
	}
	if protocol.CodeOf(errs[10]) != protocol.CodeBadRequest {
		t.Fatalf("a nil envelope in the burst: %v", errs[10])
	}
	// One the consumer refuses, in the middle of what waits.
	if err := rawChannel(t, b.URL).PublishWithContext(ctx, protocol.EventsExchange, "progress.ws-01", false, false,
		amqp091.Publishing{Body: []byte(`{"version":1,"id":`)}); err != nil {
		t.Fatal(err)
	}
	for i, err := range c.PublishEvents(ctx, burst[10:]) {
		if err != nil {
			t.Fatalf("message %d of the burst: %v", 10+i, err)
		}
	}
	waitHandedOut(t, b, protocol.EventsQueue)
	close(rec.release)

	want := []string{head.ID}
	for _, env := range burst {
		want = append(want, env.ID)
	}
	waitFor(t, time.Minute, "every message handled", func() bool { return len(rec.seen()) >= len(want) })
	if got := rec.seen(); !slices.Equal(got, want) {
		t.Fatalf("handled %v, want %v in publishing order, each once", got, want)
	}
	batches := rec.all()
	largest := 0
	for _, bt := range batches {
		largest = max(largest, len(bt))
	}
	if largest < 2 || largest > maxBatch {
		t.Fatalf("batches %v: want some of several messages, none above %d", batches, maxBatch)
	}
	dead := getN(t, rawChannel(t, b.URL), protocol.DeadLetterQueue, 2)
	codes := map[string]bool{}
	for _, d := range dead {
		code := headerString(t, d, HeaderErrorCode)
		codes[code] = true
		if code == string(protocol.CodeStaleAttempt) && d.MessageId != stale.ID {
			t.Errorf("dead-lettered %s with the handler's code, want %s", d.MessageId, stale.ID)
		}
	}
	if !codes[string(protocol.CodeStaleAttempt)] || !codes[string(protocol.CodeMalformed)] {
		t.Fatalf("dead letters with codes %v, want the handler's stale_attempt and the consumer's malformed", codes)
	}
	t.Logf("batches of %v messages", lens(batches))
}

// waitHandedOut waits until queue has no message ready: with a consumer whose prefetch
// takes them all, every message is then on its way to the consumer. (A passive declare
// answers at once, where the management API's figures lag by seconds.)
func waitHandedOut(t *testing.T, b *testenv.Broker, queue string) {
	t.Helper()
	ch := rawChannel(t, b.URL)
	waitFor(t, time.Minute, "the messages handed out to the consumer", func() bool {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return q.Messages == 0
	})
}

func lens(bs [][]string) []int {
	out := make([]int, len(bs))
	for i, b := range bs {
		out[i] = len(b)
	}
	return out
}

// TestConsumeBatchPoison: a handler that panics on a batch gets each of its messages again
// alone: the one that makes it panic is retried and dead-lettered, the others are handled
// once each, and nothing else is lost.
func TestConsumeBatchPoison(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	rec := newBatchRecorder()
	var envs []*protocol.Envelope
	for range 6 {
		envs = append(envs, progressEnv(t, "ws-01"))
	}
	rec.poison = envs[3].ID
	cons, err := c.ConsumeBatch(ctx, protocol.EventsQueue, ConsumeOptions{Senders: SenderSharedUser, MaxRetries: 1, RetryDelay: time.Millisecond},
		DefaultPrefetch, rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	if err := c.PublishEvent(ctx, envs[0]); err != nil {
		t.Fatal(err)
	}
	<-rec.first
	for i, err := range c.PublishEvents(ctx, envs[1:]) {
		if err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	waitHandedOut(t, b, protocol.EventsQueue)
	close(rec.release)

	dead := getN(t, rawChannel(t, b.URL), protocol.DeadLetterQueue, 1)
	if dead[0].MessageId != envs[3].ID {
		t.Fatalf("dead-lettered %s, want the poisonous %s", dead[0].MessageId, envs[3].ID)
	}
	if msg := headerString(t, dead[0], HeaderError); !strings.Contains(msg, "handler panicked") {
		t.Fatalf("dead letter's reason: %q", msg)
	}
	waitDepth(t, b, protocol.EventsQueue, 0, 0)
	handled := map[string]int{}
	for _, bt := range rec.all() {
		if len(bt) == 1 || !slices.Contains(bt, envs[3].ID) {
			for _, id := range bt {
				handled[id]++
			}
		}
	}
	for i, env := range envs {
		if i == 3 {
			continue
		}
		// Acked exactly once: the batch that panicked acked nothing.
		if handled[env.ID] != 1 {
			t.Errorf("message %d handled to the end %d times, want once (batches %v)", i, handled[env.ID], rec.all())
		}
	}
}
