package dispatch

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// publishBatch is how many outbox rows one pass reads.
const publishBatch = 200

// Backoff of a row that failed: first retry after rowBackoffMin, doubling up to
// rowBackoffMax.
const (
	rowBackoffMin = 500 * time.Millisecond
	rowBackoffMax = time.Minute
)

// rowBackoffs remembers when failed rows may be tried again. Only the publisher's
// goroutine writes it; it is in memory because a restart may as well try at once.
type rowBackoffs struct {
	mu   sync.Mutex // guards next and skip
	next map[int64]time.Time
	skip map[int64]bool // rows that cannot be sent as they are: they hold nothing up
}

func newRowBackoffs() *rowBackoffs {
	return &rowBackoffs{next: map[int64]time.Time{}, skip: map[int64]bool{}}
}

// skipped marks a row that cannot be sent as it is; it is tried again rarely, and the
// rows after it go on.
func (b *rowBackoffs) skipped(id int64, now time.Time) {
	b.mu.Lock()
	b.skip[id] = true
	b.next[id] = now.Add(rowBackoffMax)
	b.mu.Unlock()
}

func (b *rowBackoffs) isSkipped(id int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.skip[id]
}

func (b *rowBackoffs) due(id int64, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.next[id]
	return !ok || !now.Before(t)
}

func (b *rowBackoffs) failed(id int64, attempts int, now time.Time) time.Duration {
	wait := rowBackoffMin
	for i := 1; i < attempts && wait < rowBackoffMax; i++ {
		wait *= 2
	}
	wait = min(wait, rowBackoffMax)
	b.mu.Lock()
	b.next[id] = now.Add(wait)
	b.mu.Unlock()
	return wait
}

func (b *rowBackoffs) done(id int64) {
	b.mu.Lock()
	delete(b.next, id)
	delete(b.skip, id)
	b.mu.Unlock()
}

// runPublisher sends the outbox until ctx ends: at once when woken, otherwise every
// PublishInterval, and sooner when a failed row's backoff ends.
func (d *Dispatcher) runPublisher(ctx context.Context, conn *amqp.Conn) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.publishKick:
		case <-timer.C:
		}
		wait := d.publishPass(ctx, conn)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// publishPass sends what the outbox holds and returns how long to wait before the next
// pass when nothing wakes the publisher.
func (d *Dispatcher) publishPass(ctx context.Context, conn *amqp.Conn) time.Duration {
	wait := d.opts.PublishInterval
	for {
		rows, err := d.st.ListUnsentOutbox(ctx, publishBatch)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error().Err(err).Msg("reading the outbox")
			}
			return wait
		}
		// A route whose row failed keeps its later rows for the next pass: an agent gets
		// its messages in the order they were written.
		held := map[string]bool{}
		sent := 0
		for _, row := range rows {
			route := row.Exchange + "\x00" + row.RoutingKey
			if held[route] {
				continue
			}
			now := d.now()
			if !d.backoffs.due(row.ID, now) {
				if !d.backoffs.isSkipped(row.ID) {
					held[route] = true
					wait = min(wait, rowBackoffMin)
				}
				continue
			}
			res := d.publishRow(ctx, conn, row)
			switch res {
			case rowStop:
				return wait
			case rowHeld:
				held[route] = true
				wait = min(wait, rowBackoffMin)
			case rowSent:
				sent++
			}
		}
		// A full batch may have more behind it; a partial one is all there is.
		if len(rows) < publishBatch || sent == 0 {
			return wait
		}
	}
}

// rowResult is what became of one outbox row in a pass.
type rowResult int

const (
	rowSent    rowResult = iota // confirmed and marked sent
	rowHeld                     // to be sent again after its backoff; the route's later rows wait
	rowSkipped                  // can never be sent as it is; recorded on the row, the route goes on
	rowStop                     // the broker is away or ctx ended: the pass ends
)

// publishRow publishes one outbox row and records the outcome.
func (d *Dispatcher) publishRow(ctx context.Context, conn *amqp.Conn, row store.OutboxMessage) rowResult {
	log := d.log.With().Int64("outbox_id", row.ID).Str("message_id", row.MessageID).Str("type", row.Type).
		Str("routing_key", row.RoutingKey).Logger()
	env, err := protocol.Decode(row.Body)
	if err != nil {
		// Rows are encoded by enqueue; an undecodable one is damage, and sending it would
		// only get it dead-lettered by the agent. It stays, failed, for an operator.
		log.Error().Err(err).Msg("outbox row does not decode; not sent")
		d.backoffs.skipped(row.ID, d.now())
		d.recordFailure(ctx, row, "does not decode: "+err.Error())
		return rowSkipped
	}
	pctx, cancel := context.WithTimeout(ctx, d.opts.PublishTimeout)
	err = conn.Publish(pctx, row.Exchange, row.RoutingKey, env)
	cancel()
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return rowStop
	case errors.Is(err, amqp.ErrReturned):
		reason := "unroutable: " + err.Error()
		wait := d.backoffs.failed(row.ID, row.Attempts+1, d.now())
		log.Warn().Err(err).Dur("retry_in_ms", wait).Msg("message returned by the broker: the agent's queue is missing; declaring it")
		d.recordFailure(ctx, row, reason)
		d.declareForRow(ctx, row)
		return rowHeld
	case errors.Is(err, amqp.ErrNacked):
		wait := d.backoffs.failed(row.ID, row.Attempts+1, d.now())
		log.Warn().Err(err).Dur("retry_in_ms", wait).Msg("broker refused the message; sending it again later")
		d.recordFailure(ctx, row, err.Error())
		return rowHeld
	case isProtocolError(err):
		// The envelope itself is refused (a *protocol.Error): retrying cannot help.
		log.Error().Err(err).Msg("message refused by the transport; not sent")
		d.backoffs.skipped(row.ID, d.now())
		d.recordFailure(ctx, row, err.Error())
		return rowSkipped
	default:
		// Unconfirmed or not connected: the row stays unsent and goes out again, with the
		// same message ID, once the broker is back.
		log.Info().Err(err).Msg("message not confirmed; it is sent again when the broker answers")
		return rowStop
	}
	d.backoffs.done(row.ID)
	err = d.update(ctx, func(tx *service.JobTx) error {
		if err := tx.MarkOutboxSent(ctx, row.ID, d.clock()); err != nil {
			return err
		}
		if env.Type != protocol.TypeDispatch {
			return nil
		}
		j, err := tx.GetJob(ctx, env.JobID)
		if err != nil {
			return err
		}
		_, err = d.markDispatched(ctx, tx, j, int(env.Attempt), "the broker confirmed the dispatch; it waits in the agent's queue")
		return err
	})
	if err != nil {
		// The broker has the message; the row is sent again later and the agent drops
		// the duplicate.
		if ctx.Err() == nil {
			log.Error().Err(err).Msg("message confirmed but not marked sent")
		}
		return rowStop
	}
	log.Debug().Msg("message confirmed")
	return rowSent
}

func (d *Dispatcher) recordFailure(ctx context.Context, row store.OutboxMessage, reason string) {
	if len(reason) > 1000 {
		reason = reason[:1000]
	}
	if err := d.st.InTx(ctx, func(tx store.Tx) error { return tx.RecordOutboxFailure(ctx, row.ID, reason) }); err != nil && ctx.Err() == nil {
		d.log.Error().Err(err).Int64("outbox_id", row.ID).Msg("recording an outbox failure")
	}
}

// declareForRow declares the queue of the agent a returned command was for, when the
// agent is enrolled.
func (d *Dispatcher) declareForRow(ctx context.Context, row store.OutboxMessage) {
	if row.Exchange != protocol.CommandsExchange {
		return
	}
	agentID := strings.TrimSpace(row.RoutingKey)
	a, err := d.st.GetAgent(ctx, agentID)
	if errors.Is(err, store.ErrNotFound) {
		d.log.Warn().Str("agent", agentID).Int64("outbox_id", row.ID).Msg("message for an agent that is not enrolled; it stays unsent until the agent is")
		return
	}
	if err != nil {
		return
	}
	if err := d.AgentEnrolled(ctx, a); err != nil {
		d.log.Warn().Err(err).Str("agent", agentID).Msg("declaring the agent's queue")
	}
}

func isProtocolError(err error) bool {
	var pe *protocol.Error
	return errors.As(err, &pe)
}
