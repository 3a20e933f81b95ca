package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent/journal"
	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// senderWait bounds every wait of these tests; the work itself takes milliseconds.
const senderWait = time.Minute

// slowScan stands in for a PKCS#11 scan of the tokens, which takes seconds on real tokens:
// the first stocktaking ends at once, every later one when released, or after hold by
// itself (0: only when released).
type slowScan struct {
	hold    time.Duration
	tokens  func(n int) []protocol.Token // what stocktaking n finds
	started chan int                     // each stocktaking's number as it starts
	ended   chan int                     // and as it ends
	calls   atomic.Int32
	busy    atomic.Bool // a stocktaking is in progress

	mu       sync.Mutex
	release  chan struct{}
	released bool
}

func newSlowScan(hold time.Duration, tokens func(n int) []protocol.Token) *slowScan {
	return &slowScan{hold: hold, tokens: tokens, started: make(chan int, 64), ended: make(chan int, 64), release: make(chan struct{})}
}

// releaseAll lets the stocktaking in progress, and every later one, end.
func (s *slowScan) releaseAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.released {
		close(s.release)
		s.released = true
	}
}

// holdNext makes later stocktakings wait again (after releaseAll).
func (s *slowScan) holdNext() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.release, s.released = make(chan struct{}), false
}

func (s *slowScan) scan(ctx context.Context) ([]protocol.Token, error) {
	n := int(s.calls.Add(1))
	s.busy.Store(true)
	defer s.busy.Store(false)
	s.started <- n
	if n > 1 {
		s.mu.Lock()
		release := s.release
		s.mu.Unlock()
		var limit <-chan time.Time
		if s.hold > 0 {
			t := time.NewTimer(s.hold)
			defer t.Stop()
			limit = t.C
		}
		select {
		case <-release:
		case <-limit:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	toks := s.tokens(n)
	s.ended <- n
	return toks, nil
}

func tokensNamed(serials ...string) []protocol.Token {
	out := []protocol.Token{}
	for _, s := range serials {
		out = append(out, protocol.Token{Serial: s, Label: "token " + s, Model: "SoftHSM v2"})
	}
	return out
}

// recording is the sender's connection, telling which messages the broker confirmed and,
// when batches is set, the IDs of each PublishEvents call.
type recording struct {
	*amqp.Conn
	confirmed chan string
	batches   chan []string
}

func (r *recording) PublishEvent(ctx context.Context, env *protocol.Envelope) error {
	if err := r.Conn.PublishEvent(ctx, env); err != nil {
		return err
	}
	r.confirmed <- env.ID
	return nil
}

func (r *recording) PublishEvents(ctx context.Context, envs []*protocol.Envelope) []error {
	if r.batches != nil {
		ids := make([]string, len(envs))
		for i, env := range envs {
			ids[i] = env.ID
		}
		r.batches <- ids
	}
	errs := r.Conn.PublishEvents(ctx, envs)
	for i, env := range envs {
		if errs[i] == nil {
			r.confirmed <- env.ID
		}
	}
	return errs
}

// senderRig is a sender and a stock as Run wires them, on a real journal and a real
// broker, with a scan of its own and, when asked, the coordinator's events queue
// consumed.
type senderRig struct {
	agentID     string
	broker      *testenv.Broker
	journal     *journal.Journal
	stock       *stock
	generation  *atomic.Uint64
	events      chan *protocol.Envelope // what reached the events queue, once per message ID
	confirmed   chan string             // IDs the broker confirmed to the sender, in order
	connections chan uint64             // the generation of each connection
	batches     chan []string           // the IDs of each publish of several at once
	held        chan time.Time          // when progress held back is due, each time it is held
	log         zerolog.Logger
}

// rigOptions: consume the events queue; ask for a stocktaking on every connection, as Run
// does.
type rigOptions struct {
	consume, stockOnConnect bool
}

func newSenderRig(tb testing.TB, scan func(context.Context) ([]protocol.Token, error), o rigOptions) *senderRig {
	tb.Helper()
	ctx := testenv.Context(tb)
	level := zerolog.InfoLevel
	if _, ok := tb.(*testing.B); ok {
		level = zerolog.WarnLevel // a benchmark's output is its figures
	}
	log := zerolog.New(zerolog.NewTestWriter(tb)).Level(level).With().Timestamp().Logger()
	r := &senderRig{
		agentID: testenv.UniqueUser("ws-"), broker: testenv.NewBroker(tb), generation: &atomic.Uint64{},
		events: make(chan *protocol.Envelope, 1024), confirmed: make(chan string, 1024), connections: make(chan uint64, 64),
		batches: make(chan []string, 1024), held: make(chan time.Time, 1024), log: log,
	}
	backoff := amqp.Backoff{Min: 20 * time.Millisecond, Max: 300 * time.Millisecond}

	// The coordinator's side declares the shared topology and, for tests, takes the events.
	coord, err := amqp.Open(context.WithoutCancel(ctx), amqp.Config{URL: r.broker.URL, Name: "scripted coordinator",
		Topology: amqp.DeclareShared, Backoff: backoff, Logger: log.Level(zerolog.WarnLevel)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = coord.Close() })
	if err := coord.Ready(ctx); err != nil {
		tb.Fatal(err)
	}
	if o.consume {
		var seen sync.Map
		cons, err := coord.Consume(ctx, protocol.EventsQueue, amqp.ConsumeOptions{Senders: amqp.SenderSharedUser},
			func(_ context.Context, d *amqp.Delivery) amqp.Outcome {
				// At least once: a delivery not acked before a connection closed comes again.
				if _, dup := seen.LoadOrStore(d.Envelope.ID, true); !dup {
					r.events <- d.Envelope
				}
				return amqp.Ack()
			})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(cons.Close)
	}

	pair, err := keys.LoadOrCreate(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	j, err := journal.Open(ctx, filepath.Join(tb.TempDir(), journal.FileName), pair, journal.Options{Log: log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = j.Close() })
	r.journal = j

	a := &Agent{cfg: Config{ID: r.agentID}, log: log, hostname: "ws.example", instance: protocol.NewMessageID(), started: time.Now()}
	r.stock = newStock(a.stocktaking(scan), log, backoff)
	connected := make(chan struct{}, 1)
	conn, err := amqp.Open(context.WithoutCancel(ctx), amqp.Config{URL: r.broker.URL, Name: "tokenfleet-agent " + r.agentID,
		Backoff: backoff, Logger: log,
		OnStatus: func(st amqp.Status) {
			if st.State == amqp.StateConnected {
				g := r.generation.Add(1)
				if o.stockOnConnect {
					r.stock.request()
				}
				signal(connected)
				r.connections <- g
			}
		}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	s := &sender{
		conn: &recording{Conn: conn, confirmed: r.confirmed, batches: r.batches}, journal: j, log: log, stock: r.stock,
		hello:      func(toks []protocol.Token) (*protocol.Envelope, error) { return a.hello(toks, pair) },
		generation: r.generation, connected: connected, backoff: backoff,
		onHold: func(due time.Time) { r.held <- due },
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.stock.run(runCtx) })
	wg.Go(func() { s.run(runCtx) })
	tb.Cleanup(func() {
		stop()
		wg.Wait()
	})
	return r
}

// result journals a result, as the executor does when a job ends, and returns its ID.
func (r *senderRig) result(tb testing.TB, n int) string {
	tb.Helper()
	env, err := protocol.NewEnvelope(r.agentID, protocol.JobRef{JobID: fmt.Sprintf("job-%d", n), Attempt: 1},
		protocol.Result{Outcome: protocol.OutcomeSucceeded})
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.journal.Append(context.Background(), env); err != nil {
		tb.Fatal(err)
	}
	return env.ID
}

// next is the next event the coordinator's side received.
func (r *senderRig) next(tb testing.TB, what string) *protocol.Envelope {
	tb.Helper()
	select {
	case env := <-r.events:
		return env
	case <-time.After(senderWait):
		tb.Fatalf("waiting for %s: nothing reached the events queue within %v", what, senderWait)
		return nil
	}
}

func receive[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(senderWait):
		tb.Fatalf("waiting for %s: nothing within %v", what, senderWait)
		var zero T
		return zero
	}
}

func helloTokens(tb testing.TB, env *protocol.Envelope) []string {
	tb.Helper()
	if env.Type != protocol.TypeHello {
		tb.Fatalf("got %s %s, want a hello", env.Type, env.ID)
	}
	h, err := protocol.DecodeBody[protocol.Hello](env)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, t := range h.Tokens {
		out = append(out, t.Serial)
	}
	return out
}

// TestResultsDoNotWaitForStocktaking: a stocktaking of the tokens (the hello's
// inventory, a PKCS#11 scan of every token) is in progress and does not end while a
// result is journalled: the result reaches the broker all the same, before the
// stocktaking ends. A reconnection meanwhile says hello first, with the last stock,
// then sends what waits; the new stock is said once its stocktaking ends.
func TestResultsDoNotWaitForStocktaking(t *testing.T) {
	scan := newSlowScan(0, func(n int) []protocol.Token {
		if n == 1 {
			return tokensNamed("A1")
		}
		return tokensNamed("A1", "B2")
	})
	r := newSenderRig(t, scan.scan, rigOptions{consume: true, stockOnConnect: true})
	// Whatever happens, no stocktaking outlives the test.
	t.Cleanup(scan.releaseAll)

	if got := helloTokens(t, r.next(t, "the first hello")); !slices.Equal(got, []string{"A1"}) {
		t.Fatalf("first hello says tokens %v, want [A1]", got)
	}
	// A token changes: the stocktaking that follows is slow (the connection may have
	// asked for one already: either is).
	r.stock.request()
	for receive(t, scan.started, "a slow stocktaking") < 2 {
	}

	id := r.result(t, 1)
	got := r.next(t, "the result, while the tokens are being scanned")
	// The connection's own request for a stock may bring a hello of the same tokens
	// first: harmless, and not the scan the result must not wait for.
	for got.Type == protocol.TypeHello && slices.Equal(helloTokens(t, got), []string{"A1"}) {
		got = r.next(t, "the result, while the tokens are being scanned")
	}
	if got.ID != id {
		t.Fatalf("got %s %s, want the result %s", got.Type, got.ID, id)
	}
	if !scan.busy.Load() {
		t.Fatal("the stocktaking ended before the result reached the broker; it must still run")
	}

	// The broker closes the connection; the agent's side connects again while the
	// stocktaking still runs.
	gen := r.generation.Load()
	r.broker.CloseConnections(t, "a broker restart, as the agent sees it")
	for g := receive(t, r.connections, "the reconnection"); g <= gen; {
		g = receive(t, r.connections, "the reconnection")
	}
	id2 := r.result(t, 2)
	if got := helloTokens(t, r.next(t, "the hello on the new connection")); !slices.Equal(got, []string{"A1"}) {
		t.Fatalf("hello on the new connection says tokens %v, want the last stock [A1]", got)
	}
	if got := r.next(t, "the second result"); got.ID != id2 {
		t.Fatalf("got %s %s, want the result %s", got.Type, got.ID, id2)
	}
	if !scan.busy.Load() {
		t.Fatal("the stocktaking ended before the second result reached the broker; it must still run")
	}

	scan.releaseAll()
	if got := helloTokens(t, r.next(t, "the hello with the new stock")); !slices.Equal(got, []string{"A1", "B2"}) {
		t.Fatalf("hello after the stocktaking says tokens %v, want [A1 B2]", got)
	}
}

// BenchmarkResultWhileScanning: the time from a result journalled to its publish
// confirmed by the broker, with a stocktaking of the tokens in progress (it would take
// 2 s) and with none, alternately on one sender and one broker. Reported: ms from
// journal to confirm in each case, and ratio = scanning ÷ idle (goal: about 1; a sender
// that waited for the stocktaking would show about 2 s ÷ a few ms).
func BenchmarkResultWhileScanning(b *testing.B) {
	// Every stocktaking finds the same tokens, so none brings a hello of its own.
	scan := newSlowScan(2*time.Second, func(int) []protocol.Token { return tokensNamed("A1") })
	// Nothing asks for a stocktaking but the benchmark, so that one is in progress exactly
	// when it says.
	r := newSenderRig(b, scan.scan, rigOptions{})
	b.Cleanup(scan.releaseAll)
	receive(b, scan.started, "the first stocktaking")
	receive(b, scan.ended, "the first stocktaking")
	receive(b, r.confirmed, "the first hello")

	await := func(id string) time.Duration {
		start := time.Now()
		for receive(b, r.confirmed, "the result's confirm") != id {
		}
		return time.Since(start)
	}
	var idle, scanning time.Duration
	n := 0
	for b.Loop() {
		n++
		// No stocktaking in progress.
		id := r.result(b, 2*n)
		idle += await(id)

		// A stocktaking in progress, held until the result is confirmed.
		r.stock.request()
		receive(b, scan.started, "a stocktaking")
		id = r.result(b, 2*n+1)
		scanning += await(id)
		scan.releaseAll()
		receive(b, scan.ended, "the stocktaking")
		scan.holdNext()
	}
	idleMS := float64(idle.Microseconds()) / 1000 / float64(n)
	scanMS := float64(scanning.Microseconds()) / 1000 / float64(n)
	b.ReportMetric(scanMS, "scanning_ms")
	b.ReportMetric(idleMS, "idle_ms")
	b.ReportMetric(scanMS/idleMS, "ratio")
}

// journalled journals envs in one commit, as a step of the executor does, and returns
// their IDs.
func (r *senderRig) journalled(tb testing.TB, envs ...*protocol.Envelope) []string {
	tb.Helper()
	if err := r.journal.Append(context.Background(), envs...); err != nil {
		tb.Fatal(err)
	}
	ids := make([]string, len(envs))
	for i, env := range envs {
		ids[i] = env.ID
	}
	return ids
}

func (r *senderRig) envelope(tb testing.TB, body protocol.Body) *protocol.Envelope {
	tb.Helper()
	env, err := protocol.NewEnvelope(r.agentID, protocol.JobRef{JobID: "job-linger", Attempt: 1}, body)
	if err != nil {
		tb.Fatal(err)
	}
	return env
}

// TestProgressWaitsForWhatFollows: a progress step alone in the outbox is held back a
// moment for what follows it; a result, a CSR or anything else that is not progress never
// waits and takes the held steps with it, in order, in one publish with the confirms in
// flight together. A step that nothing follows leaves by itself once it waited
// progressLinger.
func TestProgressWaitsForWhatFollows(t *testing.T) {
	r := newSenderRig(t, func(context.Context) ([]protocol.Token, error) { return tokensNamed(), nil }, rigOptions{consume: true})
	if env := r.next(t, "the hello"); env.Type != protocol.TypeHello {
		t.Fatalf("first message: %s, want the hello", env.Type)
	}

	found := r.journalled(t, r.envelope(t, protocol.Progress{Step: protocol.StepTokenFound}))
	receive(t, r.held, "the step held back")
	initialising := r.journalled(t, r.envelope(t, protocol.Progress{Step: protocol.StepInitialising}))
	receive(t, r.held, "the steps held back")
	result := r.journalled(t, r.envelope(t, protocol.Result{Outcome: protocol.OutcomeSucceeded}))
	want := slices.Concat(found, initialising, result)
	if got := receive(t, r.batches, "the steps with the result"); !slices.Equal(got, want) {
		t.Fatalf("published together %v, want the held steps with the result behind them %v", got, want)
	}
	for _, id := range want {
		if env := r.next(t, "the steps and the result"); env.ID != id {
			t.Fatalf("received %s %s, want %s: the outbox's order", env.Type, env.ID, id)
		}
	}

	for len(r.held) > 0 {
		<-r.held // the earlier steps, held again on each wake-up
	}
	// Taken before the commit: the sender may read the step, and start its clock, before
	// Append returns here.
	journalled := time.Now()
	alone := r.journalled(t, r.envelope(t, protocol.Progress{Step: protocol.StepCertificateWritten}))
	due := receive(t, r.held, "the lone step held back")
	if got := receive(t, r.batches, "the lone step"); !slices.Equal(got, alone) {
		t.Fatalf("published %v, want the lone step %v", got, alone)
	}
	// A lower bound, not a speed: the step is held on purpose, this long.
	if sent := time.Now(); sent.Before(due) || due.Sub(journalled) < progressLinger {
		t.Fatalf("the lone step was due %v after it was journalled and went out %v after: want it held %v",
			due.Sub(journalled), sent.Sub(journalled), progressLinger)
	}
	if env := r.next(t, "the lone step"); env.ID != alone[0] {
		t.Fatalf("received %s, want the lone step %s", env.ID, alone[0])
	}
}
