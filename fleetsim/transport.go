package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// DefaultAgentsPerConnection is how many simulated agents share one physical connection:
// each takes a channel for its consumer, and RabbitMQ allows 2,047 channels a connection.
const DefaultAgentsPerConnection = 200

// Counters count what simulated agents published, by kind.
type Counters struct {
	Hellos     atomic.Int64
	Heartbeats atomic.Int64
	Other      atomic.Int64 // progress, CSRs, results, inventories
	Failed     atomic.Int64 // publishes that returned an error
}

func (c *Counters) count(t protocol.MessageType, err error) {
	switch {
	case err != nil:
		c.Failed.Add(1)
	case t == protocol.TypeHello:
		c.Hellos.Add(1)
	case t == protocol.TypeHeartbeat:
		c.Heartbeats.Add(1)
	default:
		c.Other.Add(1)
	}
}

// SharedTransport gives agents logical connections (agent.Config.Dial) over a few physical
// ones, filled in turn up to PerConnection agents each: a real agent has a connection of
// its own, but a broker takes only so many sockets (about 830 on a default RabbitMQ of this
// machine's kind), and thousands of agents in one process would not fit.
//
// Each logical connection behaves to its agent as its own *amqp.Conn: its topology (the
// agent's queue declaration) runs on every connection of its physical one, before it is
// shown connected; its consumers are the physical connection's, one channel each, and
// subscribe again after a reconnection; it publishes on the physical connection's one
// confirmed publisher; closing it cancels only its own consumers. Every message carries
// the physical connection's broker user, so the coordinator must run with
// broker.agent_users: shared (sender checks then rely on the routing key only).
type SharedTransport struct {
	url      string
	per      int
	backoff  amqp.Backoff
	log      zerolog.Logger
	counters *Counters

	mu     sync.Mutex // guards the fields below
	conns  []*physical
	closed bool
}

// NewSharedTransport makes a transport to the broker at url; perConnection ≤ 0 means
// DefaultAgentsPerConnection. Physical connections open as agents need them.
func NewSharedTransport(url string, perConnection int, backoff amqp.Backoff, counters *Counters, log zerolog.Logger) *SharedTransport {
	if perConnection <= 0 {
		perConnection = DefaultAgentsPerConnection
	}
	if counters == nil {
		counters = &Counters{}
	}
	return &SharedTransport{url: url, per: perConnection, backoff: backoff, counters: counters, log: log}
}

// Connections is how many physical connections are open.
func (s *SharedTransport) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close closes every physical connection; logical ones still open then see StateClosed.
func (s *SharedTransport) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, p := range conns {
		_ = p.conn.Close()
	}
	return nil
}

// Dial is agent.Config.Dial: a logical connection on the first physical one with room.
// The agent's URL must be the transport's (a simulated fleet has one broker).
func (s *SharedTransport) Dial(ctx context.Context, cfg amqp.Config) (agent.Transport, error) {
	if cfg.URL != s.url {
		return nil, errors.New("fleetsim: an agent dialled another broker than its fleet's")
	}
	p, err := s.physicalWithRoom()
	if err != nil {
		return nil, err
	}
	l := &logical{p: p, topology: cfg.Topology, onStatus: cfg.OnStatus, counters: s.counters,
		consumers: map[*amqp.Consumer]struct{}{}, changed: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.leave = sync.OnceFunc(func() { // Close may run twice: the fleet's crash, then the agent's own
		s.mu.Lock()
		p.joined--
		s.mu.Unlock()
	})
	p.add(l)
	return l, nil
}

// physicalWithRoom returns the physical connection the next agent joins, opening one when
// all are full. Agents that left free their room: an agent restarted after a crash takes
// it again.
func (s *SharedTransport) physicalWithRoom() (*physical, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, amqp.ErrClosed
	}
	for _, p := range s.conns {
		if p.joined < s.per {
			p.joined++
			return p, nil
		}
	}
	p := &physical{members: map[*logical]struct{}{}, backoff: s.backoff, log: s.log, joined: 1}
	conn, err := amqp.Open(context.Background(), amqp.Config{
		URL: s.url, Name: fmt.Sprintf("tokenfleet-fleetsim %d", len(s.conns)), Backoff: s.backoff,
		Topology: p.declare, OnStatus: p.status, Logger: s.log,
	})
	if err != nil {
		return nil, err
	}
	p.conn = conn
	s.conns = append(s.conns, p)
	return p, nil
}

// physical is one broker connection shared by up to PerConnection agents.
type physical struct {
	conn    *amqp.Conn
	backoff amqp.Backoff
	log     zerolog.Logger
	joined  int // agents given this connection; guarded by SharedTransport.mu

	mu      sync.Mutex // guards the fields below
	members map[*logical]struct{}
	topoRun uint64      // counts runs of the topology step
	last    amqp.Status // the connection's latest status
}

func (p *physical) add(l *logical) {
	p.mu.Lock()
	p.members[l] = struct{}{}
	st := p.last
	p.mu.Unlock()
	if st.State == amqp.StateConnected {
		// Joined a connection already up: its topology ran without this agent's.
		l.declareLate()
		return
	}
	if st.State == 0 {
		st = amqp.Status{State: amqp.StateConnecting}
	}
	l.setStatus(st)
}

func (p *physical) remove(l *logical) {
	p.mu.Lock()
	delete(p.members, l)
	p.mu.Unlock()
}

// declare is the physical connection's topology step: every member's, on one channel. A
// member whose step fails fails the connection, as it would fail an agent's own, and the
// connection retries with backoff.
func (p *physical) declare(ch amqp.Declarer) error {
	p.mu.Lock()
	p.topoRun++
	run := p.topoRun
	members := make([]*logical, 0, len(p.members))
	for l := range p.members {
		members = append(members, l)
	}
	p.mu.Unlock()
	for _, l := range members {
		if l.topology == nil {
			l.declared.Store(run)
			continue
		}
		if err := l.topology(ch); err != nil {
			return err
		}
		l.declared.Store(run)
	}
	return nil
}

// status fans the physical connection's status out to its members. Members whose topology
// did not run on this connection (they joined meanwhile) declare theirs first.
func (p *physical) status(st amqp.Status) {
	p.mu.Lock()
	p.last = st
	run := p.topoRun
	members := make([]*logical, 0, len(p.members))
	for l := range p.members {
		members = append(members, l)
	}
	p.mu.Unlock()
	for _, l := range members {
		if st.State == amqp.StateConnected && l.declared.Load() != run {
			l.declareLate()
			continue
		}
		l.setStatus(st)
	}
}

// logical is one agent's connection over a physical one.
type logical struct {
	p        *physical
	topology func(amqp.Declarer) error
	onStatus func(amqp.Status)
	counters *Counters
	declared atomic.Uint64 // the topology run of the physical connection that included it

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	leave  func()         // frees its room on the physical connection, once
	wg     sync.WaitGroup // late declarations

	mu        sync.Mutex // guards the fields below
	status    amqp.Status
	changed   chan struct{} // closed and replaced on every status change
	consumers map[*amqp.Consumer]struct{}
	closed    bool
}

func (l *logical) setStatus(st amqp.Status) {
	st.Since = time.Now()
	l.mu.Lock()
	if l.closed || (l.status.State == st.State && st.State != amqp.StateDisconnected) {
		l.mu.Unlock()
		return
	}
	l.status = st
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	if l.onStatus != nil {
		l.onStatus(st)
	}
}

// declareLate runs the agent's topology on a fresh channel of the physical connection,
// retrying with backoff while it fails, then shows the logical connection connected.
func (l *logical) declareLate() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		for failures := 0; ; failures++ {
			err := l.p.conn.Declare(l.ctx, func(ch amqp.Declarer) error {
				if l.topology == nil {
					return nil
				}
				return l.topology(ch)
			})
			if err == nil {
				l.setStatus(amqp.Status{State: amqp.StateConnected})
				return
			}
			if l.ctx.Err() != nil {
				return
			}
			delay := l.p.backoff.Delay(failures)
			l.setStatus(amqp.Status{State: amqp.StateDisconnected, Err: err, RetryIn: delay, Failures: failures + 1})
			t := time.NewTimer(delay)
			select {
			case <-l.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
}

// Status is the logical connection's status: the physical one's, once this agent's
// topology ran on it.
func (l *logical) Status() amqp.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

// Ready waits until the logical connection is connected.
func (l *logical) Ready(ctx context.Context) error {
	for {
		l.mu.Lock()
		st, changed, closed := l.status, l.changed, l.closed
		l.mu.Unlock()
		if closed {
			return amqp.ErrClosed
		}
		if st.State == amqp.StateConnected {
			return nil
		}
		select {
		case <-changed:
		case <-l.ctx.Done():
			return amqp.ErrClosed
		case <-ctx.Done():
			if st.Err != nil {
				return fmt.Errorf("not connected to the broker (%s: %w): %w", st.State, st.Err, ctx.Err())
			}
			return fmt.Errorf("not connected to the broker (%s): %w", st.State, ctx.Err())
		}
	}
}

// Consume subscribes on the physical connection once this agent's queue is declared, so
// that the first subscription never races the declaration.
func (l *logical) Consume(ctx context.Context, queue string, opts amqp.ConsumeOptions, h amqp.Handler) (*amqp.Consumer, error) {
	if err := l.Ready(ctx); err != nil {
		return nil, err
	}
	// The consumer ends with the agent's ctx or with this logical connection.
	cctx, stop := context.WithCancel(ctx)
	unhook := context.AfterFunc(l.ctx, stop)
	cons, err := l.p.conn.Consume(cctx, queue, opts, h)
	if err != nil {
		unhook()
		stop()
		if l.ctx.Err() != nil {
			return nil, amqp.ErrClosed
		}
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// consumers is nil from the moment Close takes them: a subscription that ends after
	// that is closed here, never added to a map Close no longer looks at.
	if l.closed || l.consumers == nil {
		go cons.Close()
		return nil, amqp.ErrClosed
	}
	l.consumers[cons] = struct{}{}
	return cons, nil
}

// PublishEvent publishes on the physical connection's confirmed publisher.
func (l *logical) PublishEvent(ctx context.Context, env *protocol.Envelope) error {
	if l.ctx.Err() != nil {
		return amqp.ErrClosed
	}
	err := l.p.conn.PublishEvent(ctx, env)
	if env != nil {
		l.counters.count(env.Type, err)
	}
	return err
}

// PublishEvents publishes on the physical connection, the confirms in flight together.
func (l *logical) PublishEvents(ctx context.Context, envs []*protocol.Envelope) []error {
	if l.ctx.Err() != nil {
		errs := make([]error, len(envs))
		for i := range errs {
			errs[i] = amqp.ErrClosed
		}
		return errs
	}
	errs := l.p.conn.PublishEvents(ctx, envs)
	for i, env := range envs {
		if env != nil {
			l.counters.count(env.Type, errs[i])
		}
	}
	return errs
}

// Close cancels this agent's consumers and leaves the physical connection.
func (l *logical) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	consumers := l.consumers
	l.consumers = nil
	l.mu.Unlock()
	l.cancel()
	for c := range consumers {
		c.Close()
	}
	l.wg.Wait()
	l.p.remove(l)
	l.leave()
	l.setStatus(amqp.Status{State: amqp.StateClosed, Err: amqp.ErrClosed})
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return nil
}
