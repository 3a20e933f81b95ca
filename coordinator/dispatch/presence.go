package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Presence is the hot path of a large fleet (10,000 agents heartbeating every 15 s is 667
// messages a second), so a heartbeat costs no database transaction: the dispatcher checks
// it against what it remembers of the agent, keeps it in memory, and writes the
// heartbeats of all agents that sent one in a single transaction every flush interval
// (store.RecordHeartbeats). The database stays the one shared record: several
// coordinators each write what they received, a write never moves an agent's times back,
// and the offline sweep decides on the database's last heartbeat, which any coordinator
// may have written.

// DefaultPresenceFlushInterval is how often heartbeats held in memory are written.
const DefaultPresenceFlushInterval = time.Second

// presenceFlushTimeout bounds the last flush when the dispatcher stops.
const presenceFlushTimeout = 5 * time.Second

// presence is what the dispatcher knows of agents' heartbeats between two flushes.
type presence struct {
	kick chan struct{} // wakes the flusher at once; buffered 1

	mu sync.Mutex // guards the fields below
	// users holds, for each enrolled agent a heartbeat came from, the broker user its
	// messages must come from ("" with a shared broker user). Agents are never removed
	// and their broker user is set at enrolment, so what was read once stays true.
	users   map[string]string
	last    map[string]time.Time // the last heartbeat received from each agent
	pending map[string]time.Time // heartbeats not yet written
	stats   PresenceStats
}

// PresenceStats counts what the dispatcher did with heartbeats since it started.
type PresenceStats struct {
	Heartbeats  uint64 // heartbeats taken (checked and recorded, in memory or written through)
	Flushes     uint64 // transactions that wrote held heartbeats
	Written     uint64 // heartbeats those transactions wrote (one per agent and flush)
	FlushErrors uint64 // flushes that failed; their heartbeats wait for the next one
	Pending     int    // heartbeats held in memory now
}

func newPresence() *presence {
	return &presence{kick: make(chan struct{}, 1), users: map[string]string{},
		last: map[string]time.Time{}, pending: map[string]time.Time{}}
}

// user returns the broker user that must publish agent id's messages, if the agent is
// known.
func (p *presence) user(id string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u, ok := p.users[id]
	return u, ok
}

// remember records agent id's broker user as read from its record, and the record's last
// heartbeat when the record shows it online: the first heartbeat here of an agent
// already online then waits for the next flush like the others.
func (p *presence) remember(id, user string, a store.Agent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users[id] = user
	if a.Online && a.LastHeartbeat.After(p.last[id]) {
		p.last[id] = a.LastHeartbeat
	}
}

// beat holds a heartbeat of agent id at at. It reports whether the agent may be shown
// offline now (no heartbeat from it here within timeout): such a heartbeat is written at
// once rather than at the next flush, so that an agent coming back is seen promptly.
func (p *presence) beat(id string, at time.Time, timeout time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, ok := p.last[id]
	if !ok || at.After(prev) {
		p.last[id] = at
	}
	if cur, ok := p.pending[id]; !ok || at.After(cur) {
		p.pending[id] = at
	}
	p.stats.Heartbeats++
	return !ok || at.Sub(prev) >= timeout
}

// counted records a heartbeat written through, outside the batches.
func (p *presence) counted() {
	p.mu.Lock()
	p.stats.Heartbeats++
	p.mu.Unlock()
}

// take empties the held heartbeats and returns them.
func (p *presence) take() []store.Heartbeat {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) == 0 {
		return nil
	}
	out := make([]store.Heartbeat, 0, len(p.pending))
	for id, at := range p.pending {
		out = append(out, store.Heartbeat{AgentID: id, At: at})
	}
	clear(p.pending)
	return out
}

// done records the outcome of a flush of beats; after a failure, the heartbeats that no
// later one replaced are held again for the next flush.
func (p *presence) done(beats []store.Heartbeat, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.stats.Flushes++
		p.stats.Written += uint64(len(beats))
		return
	}
	p.stats.FlushErrors++
	for _, b := range beats {
		if cur, ok := p.pending[b.AgentID]; !ok || b.At.After(cur) {
			p.pending[b.AgentID] = b.At
		}
	}
}

func (p *presence) snapshot() PresenceStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Pending = len(p.pending)
	return s
}

// PresenceStats says how many heartbeats the dispatcher took and how it wrote them.
func (d *Dispatcher) PresenceStats() PresenceStats { return d.presence.snapshot() }

// writeThrough reports whether each heartbeat is written in its own transaction
// (Options.PresenceFlushInterval negative).
func (d *Dispatcher) writeThrough() bool { return d.opts.PresenceFlushInterval < 0 }

// FlushPresence writes the heartbeats held in memory in one transaction and returns how
// many agents' heartbeats it wrote. After a failure they are held for the next flush.
func (d *Dispatcher) FlushPresence(ctx context.Context) (int, error) {
	beats := d.presence.take()
	if len(beats) == 0 {
		return 0, nil
	}
	err := d.st.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.RecordHeartbeats(ctx, beats)
		return err
	})
	d.presence.done(beats, err)
	if err != nil {
		return 0, err
	}
	return len(beats), nil
}

// runPresence writes held heartbeats every flush interval, and at once when a heartbeat
// brings an agent back; it writes what is left when ctx ends.
func (d *Dispatcher) runPresence(ctx context.Context) {
	if d.writeThrough() {
		return
	}
	tick := time.NewTicker(d.opts.PresenceFlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// What arrived since the last flush: cheap to keep, though the agents'
			// next heartbeats would bring it anyway.
			last, cancel := context.WithTimeout(context.WithoutCancel(ctx), presenceFlushTimeout)
			defer cancel()
			if _, err := d.FlushPresence(last); err != nil {
				d.log.Warn().Err(err).Msg("writing the last heartbeats before stopping")
			}
			return
		case <-tick.C:
		case <-d.presence.kick:
		}
		if _, err := d.FlushPresence(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn().Err(err).Msg("writing heartbeats; they are written with the next flush")
		}
	}
}
