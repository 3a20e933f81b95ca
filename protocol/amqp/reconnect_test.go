package amqp

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/internal/testenv"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// statusLog records a Conn's status changes.
type statusLog struct {
	mu  sync.Mutex
	all []Status
}

func (l *statusLog) add(s Status) {
	l.mu.Lock()
	l.all = append(l.all, s)
	l.mu.Unlock()
}

func (l *statusLog) connects() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.all {
		if s.State == StateConnected {
			n++
		}
	}
	return n
}

func (l *statusLog) lostWith(reason string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.all {
		if s.State == StateDisconnected && s.Err != nil && strings.Contains(s.Err.Error(), reason) && s.RetryIn > 0 {
			return true
		}
	}
	return false
}

// TestReconnectMidStream closes every connection of the vhost, twice or more, while
// 8 goroutines publish and a consumer consumes. Every publish ends
// confirmed or with ErrUnconfirmed, and after republishing the unconfirmed
// ones unchanged the consumer has seen every message ID at least once;
// publisher and consumer came back by themselves.
func TestReconnectMidStream(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	var pubLog, subLog statusLog
	pub := openConn(t, Config{URL: b.URL, Name: "tokenfleet-agent publisher", Topology: DeclareShared, OnStatus: pubLog.add})
	sub := openConn(t, Config{URL: b.URL, Name: "tokenfleet-coordinator consumer", Topology: DeclareShared, OnStatus: subLog.add})

	var seenMu sync.Mutex
	seen := map[string]int{}
	cons, err := sub.Consume(ctx, protocol.EventsQueue, ConsumeOptions{Senders: SenderSharedUser, Prefetch: 200},
		func(_ context.Context, d *Delivery) Outcome {
			seenMu.Lock()
			seen[d.Envelope.ID]++
			seenMu.Unlock()
			return Ack()
		})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()

	var (
		stop        atomic.Bool
		confirmed   atomic.Int64
		unconfirmed atomic.Int64
		confMu      sync.Mutex
		confIDs     []string
		wg          sync.WaitGroup
		unexpected  = make(chan error, 100)
	)
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				env := progressEnv(t, "ws-01")
				for {
					err := pub.PublishEvent(ctx, env)
					if err == nil {
						break
					}
					if !errors.Is(err, ErrUnconfirmed) {
						unexpected <- err
						return
					}
					unconfirmed.Add(1) // and republish the same envelope
				}
				confMu.Lock()
				confIDs = append(confIDs, env.ID)
				confMu.Unlock()
				confirmed.Add(1)
			}
		})
	}
	advance := func(n int64, what string) {
		target := confirmed.Load() + n
		waitFor(t, 60*time.Second, what, func() bool { return confirmed.Load() >= target || len(unexpected) > 0 })
	}
	advance(300, "300 confirmed publishes")
	// At least two rounds; more (up to six) while no publish happened to be in flight when
	// the connections closed: on a loaded machine one close can fall between publishes.
	for round := 1; round <= 2 || (unconfirmed.Load() == 0 && round <= 6); round++ {
		pubBefore, subBefore := pubLog.connects(), subLog.connects()
		b.CloseConnections(t, "tokenfleet test: mid-stream")
		waitFor(t, 60*time.Second, "both connections back", func() bool {
			return pubLog.connects() > pubBefore && subLog.connects() > subBefore
		})
		advance(300, "300 more confirmed publishes after the reconnection")
	}
	stop.Store(true)
	wg.Wait()
	close(unexpected)
	for err := range unexpected {
		t.Errorf("publish failed with neither success nor ErrUnconfirmed: %v", err)
	}

	confMu.Lock()
	ids := append([]string(nil), confIDs...)
	confMu.Unlock()
	waitFor(t, 60*time.Second, "the consumer to see every confirmed message", func() bool {
		seenMu.Lock()
		defer seenMu.Unlock()
		for _, id := range ids {
			if seen[id] == 0 {
				return false
			}
		}
		return true
	})
	seenMu.Lock()
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	seenMu.Unlock()
	t.Logf("%d messages confirmed, %d publishes unconfirmed and republished, %d duplicate deliveries", len(ids), unconfirmed.Load(), dups)
	if unconfirmed.Load() == 0 {
		t.Errorf("no publish was caught in flight by the closed connections; the test did not exercise ErrUnconfirmed")
	}
	for name, l := range map[string]*statusLog{"publisher": &pubLog, "consumer": &subLog} {
		if !l.lostWith("mid-stream") {
			t.Errorf("%s: no disconnected status carrying the operator's reason: %+v", name, l.all)
		}
	}
	if err := cons.Err(); err != nil {
		t.Errorf("consumer not subscribed at the end: %v", err)
	}
}

// closedPort returns an address where nothing listens.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestCloseDuringBackoff: while the broker is unreachable the Conn says
// why and when it retries, publishes wait (and fail with the reason when
// their context ends, having sent nothing), and Close returns at once
// rather than after the backoff.
func TestCloseDuringBackoff(t *testing.T) {
	leakCheck(t)
	var log statusLog
	c, err := Open(context.Background(), Config{
		URL:      "amqp://guest:guest@" + closedPort(t) + "/",
		Backoff:  Backoff{Min: time.Minute, Max: time.Minute},
		Logger:   testLogger(t),
		OnStatus: log.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the first failed attempt", func() bool { return c.Status().State == StateDisconnected })
	st := c.Status()
	if st.RetryIn < 30*time.Second || st.Failures != 1 || !strings.Contains(st.Err.Error(), "connection refused") {
		t.Errorf("status %+v", st)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err = c.PublishEvent(ctx, progressEnv(t, "ws-01"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnconfirmed) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("publish while unreachable: %v", err)
	}

	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v during a 1-minute backoff", d)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if st := c.Status(); st.State != StateClosed {
		t.Errorf("status after Close: %+v", st)
	}
	if err := c.PublishEvent(context.Background(), progressEnv(t, "ws-01")); !errors.Is(err, ErrClosed) {
		t.Errorf("publish after Close: %v, want ErrClosed", err)
	}
	if _, err := c.Consume(context.Background(), protocol.EventsQueue, ConsumeOptions{Senders: SenderSharedUser},
		func(context.Context, *Delivery) Outcome { return Ack() }); !errors.Is(err, ErrClosed) {
		t.Errorf("consume after Close: %v, want ErrClosed", err)
	}
}

// TestCloseDuringHandshake: a peer that accepts TCP and never answers
// must not hold Close for the dial timeout.
func TestCloseDuringHandshake(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			accepted <- nc
		}
		close(accepted)
	}()
	c, err := Open(context.Background(), Config{URL: "amqp://guest:guest@" + ln.Addr().String() + "/", DialTimeout: time.Minute, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	nc := <-accepted
	if nc != nil {
		defer func() { _ = nc.Close() }()
	}
	start := time.Now()
	_ = c.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v during a handshake", d)
	}
}

// TestCloseWithPublishesInFlight: publishes waiting for confirms when the
// Conn closes return, none hangs.
func TestCloseWithPublishesInFlight(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	c := coordinatorConn(t, b, "tokenfleet-coordinator test")
	var wg sync.WaitGroup
	var ok, closed, other atomic.Int64
	for range 8 {
		wg.Go(func() {
			for {
				err := c.PublishEvent(context.Background(), progressEnv(t, "ws-01"))
				switch {
				case err == nil:
					ok.Add(1)
					continue
				case errors.Is(err, ErrClosed), errors.Is(err, ErrUnconfirmed):
					closed.Add(1)
				default:
					other.Add(1)
					t.Errorf("publish: %v", err)
				}
				return
			}
		})
	}
	waitFor(t, 60*time.Second, "some publishes", func() bool { return ok.Load() > 100 })
	_ = c.Close()
	wg.Wait()
	if closed.Load() != 8 || other.Load() != 0 {
		t.Errorf("after Close: %d publishers stopped with ErrClosed/ErrUnconfirmed, %d otherwise; want 8 and 0", closed.Load(), other.Load())
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	for attempt, full := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := b.Delay(attempt)
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, full/2, full)
			}
			seen[d] = true
		}
		if len(seen) < 50 {
			t.Errorf("attempt %d: only %d distinct delays in 200: not jittered", attempt, len(seen))
		}
	}
	if d := b.Delay(1000); d < 15*time.Second || d > 30*time.Second {
		t.Errorf("huge attempt number: %v", d)
	}
}

// TestWaitUnblocked: while the broker blocks publishing (a resource alarm),
// publishes wait for it to lift, for their context, or for the connection
// to end, instead of entering a socket write nothing can interrupt.
func TestWaitUnblocked(t *testing.T) {
	s := &session{done: make(chan struct{})}
	if err := s.waitUnblocked(context.Background()); err != nil {
		t.Fatalf("not blocked: %v", err)
	}
	s.setBlocked(true)
	s.setBlocked(true) // repeated notifications are harmless
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.waitUnblocked(ctx); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "resource alarm") {
		t.Errorf("blocked, context ended: %v", err)
	}
	released := make(chan error, 1)
	go func() { released <- s.waitUnblocked(context.Background()) }()
	s.setBlocked(false)
	if err := <-released; err != nil {
		t.Errorf("unblocked: %v", err)
	}
	s.setBlocked(true)
	close(s.done)
	if err := s.waitUnblocked(context.Background()); !errors.Is(err, errNotSent) {
		t.Errorf("blocked, connection gone: %v", err)
	}
}

// cutProxy forwards TCP connections to the broker and can cut the client
// side of them while keeping the broker side open and silent, which is
// what the broker sees when a workstation drops off the network: the old
// connection lingers until its heartbeat times out.
type cutProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex // guards pairs
	pairs [][2]net.Conn
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			upstream, err := net.Dial("tcp", target)
			if err != nil {
				_ = client.Close()
				continue
			}
			p.mu.Lock()
			p.pairs = append(p.pairs, [2]net.Conn{client, upstream})
			p.mu.Unlock()
			// Neither copy closes the other side: a cut leaves the broker's
			// side open.
			p.wg.Go(func() { _, _ = io.Copy(upstream, client) })
			p.wg.Go(func() { _, _ = io.Copy(client, upstream) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, pair := range p.pairs {
			_ = pair[0].Close()
			_ = pair[1].Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) cutClients() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pair := range p.pairs {
		_ = pair[0].Close()
	}
}

// TestExclusiveConsumerAfterNetworkDrop: an agent whose network dropped
// reconnects while the broker still holds its old connection and exclusive
// consumer. The new subscription is refused (ErrQueueInUse, reported by
// Err) until the broker's heartbeat check closes the ghost; the consumer
// keeps retrying and then receives commands again, by itself.
func TestExclusiveConsumerAfterNetworkDrop(t *testing.T) {
	leakCheck(t)
	b := testenv.NewBroker(t)
	ctx := testContext(t)
	coord := coordinatorConn(t, b, "tokenfleet-coordinator test")
	const agent = "ws-01"
	if err := coord.Declare(ctx, func(ch Declarer) error { return DeclareAgent(ch, agent) }); err != nil {
		t.Fatal(err)
	}
	proxy := startCutProxy(t, testenv.RabbitMQAddr)
	agentURL := strings.Replace(b.URL, testenv.RabbitMQAddr, proxy.ln.Addr().String(), 1)
	var log statusLog
	ac := openConn(t, Config{URL: agentURL, Name: "tokenfleet-agent " + agent + "@test", Heartbeat: time.Second,
		OnStatus: log.add, Topology: func(ch Declarer) error { return CheckAgentQueue(ch, agent) }})
	rec := &recorder{}
	cons, err := ac.Consume(ctx, protocol.AgentQueuePrefix+agent,
		ConsumeOptions{Senders: SenderCoordinator, AgentID: agent, Exclusive: true}, rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()

	connects := log.connects()
	proxy.cutClients()
	var refused error
	waitFor(t, 60*time.Second, "the refusal while the ghost lingers", func() bool {
		if err := cons.Err(); errors.Is(err, ErrQueueInUse) {
			refused = err
			return true
		}
		return false
	})
	t.Logf("while the old connection lingers: %v", refused)
	if log.connects() <= connects {
		t.Errorf("the agent did not reconnect")
	}
	waitFor(t, 60*time.Second, "the subscription once the ghost is gone", func() bool { return cons.Err() == nil })
	env := cancelEnv(t, agent)
	if err := coord.PublishCommand(ctx, env); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the command", func() bool { return rec.count() == 1 })
}
