package dispatch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
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
// PublishInterval, and sooner when a failed row's backoff ends. The marking of a pass's
// last round goes on while the next pass reads and sends: a message queued meanwhile
// (a certificate, another job's dispatch) does not wait for that commit.
func (d *Dispatcher) runPublisher(ctx context.Context, conn *amqp.Conn) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	m := &marker{d: d, ctx: ctx}
	defer func() { _ = m.wait() }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.publishKick:
		case <-timer.C:
		}
		wait := d.send(ctx, conn, m)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// publishPass sends what the outbox holds, waits until the rows it sent are marked, and
// returns how long to wait before the next pass when nothing wakes the publisher.
func (d *Dispatcher) publishPass(ctx context.Context, conn *amqp.Conn) time.Duration {
	m := &marker{d: d, ctx: ctx}
	defer func() { _ = m.wait() }()
	return d.send(ctx, conn, m)
}

// send is a pass of the publisher: it sends what the outbox holds, leaving out the rows m
// is marking, and returns how long to wait before the next pass when nothing wakes the
// publisher. The marking of its last round may still be in flight when it returns.
func (d *Dispatcher) send(ctx context.Context, conn *amqp.Conn, m *marker) time.Duration {
	wait := d.opts.PublishInterval
	for {
		// The rows being marked sent are still unsent to this read: they are left out, and
		// read past.
		rows, err := d.st.ListUnsentOutbox(ctx, publishBatch+len(m.ids))
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error().Err(err).Msg("reading the outbox")
			}
			return wait
		}
		rows = slices.DeleteFunc(rows, func(r store.OutboxMessage) bool { return m.ids[r.ID] })
		rows = rows[:min(len(rows), publishBatch)]
		// Rows go out in rounds of at most one row per route, each round's confirms in
		// flight together: a route's next row leaves only once the one before it was
		// confirmed, and a route whose row failed keeps its later rows for the next pass.
		// An agent gets its messages in the order they were written.
		held := map[string]bool{}
		sent := 0
		for todo := rows; len(todo) > 0; {
			var round, later []store.OutboxMessage
			inRound := map[string]bool{}
			for _, row := range todo {
				route := routeOf(row)
				switch {
				case held[route]:
					continue
				case inRound[route]:
					later = append(later, row)
					continue
				}
				if !d.backoffs.due(row.ID, d.now()) {
					if !d.backoffs.isSkipped(row.ID) {
						held[route] = true
						wait = min(wait, rowBackoffMin)
					}
					continue
				}
				inRound[route] = true
				round = append(round, row)
			}
			n, heldAny, stop := d.publishRound(ctx, conn, m, round, held)
			sent += n
			if heldAny {
				wait = min(wait, rowBackoffMin)
			}
			if stop {
				return wait
			}
			todo = later
		}
		// A full batch may have more behind it; a partial one is all there is.
		if len(rows) < publishBatch || sent == 0 {
			return wait
		}
	}
}

// marker marks confirmed rows sent in the background, one transaction at a time, so that
// the publisher sends the next round, or starts the next pass, while the last one
// commits. Only the publisher's goroutine calls its methods.
type marker struct {
	d    *Dispatcher
	ctx  context.Context
	done chan struct{}  // closed when the marking in flight ends; nil when there is none
	ids  map[int64]bool // the rows of the marking in flight
	err  error          // the marking that failed, until wait reports it; written before done closes
}

// start waits for the marking in flight, then marks the confirmed rows (indexes into rows
// and envs) in the background. It returns the error of the earlier marking: the broker
// has those rows but they are still unsent, and the pass ends; the next pass sends them
// again.
func (m *marker) start(rows []store.OutboxMessage, envs []*protocol.Envelope, confirmed []int) error {
	if err := m.wait(); err != nil || len(confirmed) == 0 {
		return err
	}
	m.ids = make(map[int64]bool, len(confirmed))
	for _, i := range confirmed {
		m.ids[rows[i].ID] = true
	}
	done := make(chan struct{})
	m.done = done
	go func() {
		defer close(done)
		if m.d.beforeMark != nil {
			m.d.beforeMark()
		}
		if err := m.d.markSent(m.ctx, rows, envs, confirmed); err != nil {
			m.err = err
		}
	}()
	return nil
}

// wait waits for the marking in flight and returns its error, once.
func (m *marker) wait() error {
	if m.done != nil {
		<-m.done
		m.done, m.ids = nil, nil
	}
	err := m.err
	m.err = nil
	return err
}

// routeOf is what orders an outbox row: its exchange and routing key.
func routeOf(row store.OutboxMessage) string { return row.Exchange + "\x00" + row.RoutingKey }

// rowResult is what became of one outbox row in a round.
type rowResult int

const (
	rowSent    rowResult = iota // confirmed; marked sent with its round
	rowHeld                     // to be sent again after its backoff; the route's later rows wait
	rowSkipped                  // can never be sent as it is; recorded on the row, the route goes on
	rowStop                     // the broker is away or ctx ended: the pass ends
)

// publishRound publishes rows, at most one per route, with their confirms in flight
// together, records each failure as its row's own, and has m mark every confirmed row
// sent in one transaction. It returns how many rows the broker confirmed, whether a route
// is held, and whether the pass must end. Routes of held rows are added to held.
func (d *Dispatcher) publishRound(ctx context.Context, conn *amqp.Conn, m *marker, round []store.OutboxMessage, held map[string]bool) (sent int, heldAny, stop bool) {
	var (
		out  []amqp.Outgoing
		rows []store.OutboxMessage
		envs []*protocol.Envelope
	)
	for _, row := range round {
		env, err := protocol.Decode(row.Body)
		if err != nil {
			// Rows are encoded by enqueue; an undecodable one is damage, and sending it
			// would only get it dead-lettered by the agent. It stays, failed, for an
			// operator.
			rowLog(d.log, row).Error().Err(err).Msg("outbox row does not decode; not sent")
			d.backoffs.skipped(row.ID, d.now())
			d.recordFailure(ctx, row, "does not decode: "+err.Error())
			continue
		}
		out = append(out, amqp.Outgoing{Exchange: row.Exchange, Key: row.RoutingKey, Env: env, Body: row.Body})
		rows = append(rows, row)
		envs = append(envs, env)
	}
	if len(out) == 0 {
		return 0, false, false
	}
	pctx, cancel := context.WithTimeout(ctx, d.opts.PublishTimeout)
	errs := conn.PublishBatch(pctx, out)
	cancel()
	var confirmed []int
	for i, err := range errs {
		switch d.rowOutcome(ctx, rows[i], err) {
		case rowSent:
			confirmed = append(confirmed, i)
		case rowHeld:
			held[routeOf(rows[i])] = true
			heldAny = true
		case rowStop:
			stop = true
		}
	}
	if err := m.start(rows, envs, confirmed); err != nil {
		return len(confirmed), heldAny, true
	}
	return len(confirmed), heldAny, stop
}

// rowOutcome records what the broker answered for one row, as the row's own: a returned or
// nacked row backs off and holds its route, a refused one is skipped.
func (d *Dispatcher) rowOutcome(ctx context.Context, row store.OutboxMessage, err error) rowResult {
	switch {
	case err == nil:
		d.backoffs.done(row.ID)
		return rowSent
	case ctx.Err() != nil:
		return rowStop
	case errors.Is(err, amqp.ErrReturned):
		reason := "unroutable: " + err.Error()
		wait := d.backoffs.failed(row.ID, row.Attempts+1, d.now())
		rowLog(d.log, row).Warn().Err(err).Dur("retry_in_ms", wait).Msg("message returned by the broker: the agent's queue is missing; declaring it")
		d.recordFailure(ctx, row, reason)
		d.declareForRow(ctx, row)
		return rowHeld
	case errors.Is(err, amqp.ErrNacked):
		wait := d.backoffs.failed(row.ID, row.Attempts+1, d.now())
		rowLog(d.log, row).Warn().Err(err).Dur("retry_in_ms", wait).Msg("broker refused the message; sending it again later")
		d.recordFailure(ctx, row, err.Error())
		return rowHeld
	case isProtocolError(err):
		// The envelope itself is refused (a *protocol.Error): retrying cannot help.
		rowLog(d.log, row).Error().Err(err).Msg("message refused by the transport; not sent")
		d.backoffs.skipped(row.ID, d.now())
		d.recordFailure(ctx, row, err.Error())
		return rowSkipped
	default:
		// Unconfirmed or not connected: the row stays unsent and goes out again, with the
		// same message ID, once the broker is back.
		rowLog(d.log, row).Info().Err(err).Msg("message not confirmed; it is sent again when the broker answers")
		return rowStop
	}
}

// markSent marks the confirmed rows (indexes into rows and envs) sent, and their
// dispatches dispatched, in one transaction of a few statements, whatever the number of
// rows: a round costs one commit and a handful of statements, not a few per row. If that
// transaction fails, each row is tried in a transaction of its own, so that one row that
// cannot be marked holds up only itself and what comes after it. It returns the first
// failure.
func (d *Dispatcher) markSent(ctx context.Context, rows []store.OutboxMessage, envs []*protocol.Envelope, confirmed []int) error {
	err := d.update(ctx, func(tx *service.JobTx) error { return d.markRowsSent(ctx, tx, rows, envs, confirmed) })
	if err == nil {
		d.log.Debug().Int("messages", len(confirmed)).Msg("messages confirmed")
		return nil
	}
	if len(confirmed) > 1 && ctx.Err() == nil {
		d.log.Warn().Err(err).Int("messages", len(confirmed)).Msg("confirmed messages not marked sent together; marking them one at a time")
		for _, i := range confirmed {
			if err := d.update(ctx, func(tx *service.JobTx) error { return d.markRowsSent(ctx, tx, rows, envs, []int{i}) }); err != nil {
				d.notMarked(ctx, rows[i], err)
				return err
			}
		}
		return nil
	}
	d.notMarked(ctx, rows[confirmed[0]], err)
	return err
}

// markRowsSent marks confirmed rows sent and, for dispatches, moves their jobs from
// approved to dispatched when the dispatch is of the job's current attempt: the broker's
// confirmation proves it reached the agent's queue. The owner of job state applies the
// transitions, all of them in one set.
func (d *Dispatcher) markRowsSent(ctx context.Context, tx *service.JobTx, rows []store.OutboxMessage, envs []*protocol.Envelope, confirmed []int) error {
	ids := make([]int64, len(confirmed))
	attempts := map[string]int{} // job ID → the attempt its confirmed dispatch is for
	var jobIDs []string
	for k, i := range confirmed {
		ids[k] = rows[i].ID
		if env := envs[i]; env.Type == protocol.TypeDispatch {
			if _, dup := attempts[env.JobID]; !dup {
				jobIDs = append(jobIDs, env.JobID)
			}
			// An attempt is dispatched once, so two dispatches of one job are of two
			// attempts: only the newer can be the current one.
			attempts[env.JobID] = max(attempts[env.JobID], int(env.Attempt))
		}
	}
	if err := tx.MarkOutboxesSent(ctx, ids, d.clock()); err != nil {
		return err
	}
	if len(jobIDs) == 0 {
		return nil
	}
	js, err := tx.GetJobs(ctx, jobIDs)
	if err != nil {
		return err
	}
	js = slices.DeleteFunc(js, func(j store.Job) bool { return !awaitsDispatch(j, attempts[j.ID]) })
	_, err = tx.TransitionAll(ctx, js, jobs.StateDispatched, store.JobChange{Actor: ActorDispatch,
		Reason: "the broker confirmed the dispatch; it waits in the agent's queue"})
	return err
}

// notMarked logs a confirmed row that could not be marked sent. The broker has the
// message; the row is sent again later and the agent drops the duplicate.
func (d *Dispatcher) notMarked(ctx context.Context, row store.OutboxMessage, err error) {
	if ctx.Err() == nil {
		rowLog(d.log, row).Error().Err(err).Msg("message confirmed but not marked sent")
	}
}

func rowLog(log zerolog.Logger, row store.OutboxMessage) *zerolog.Logger {
	l := log.With().Int64("outbox_id", row.ID).Str("message_id", row.MessageID).Str("type", row.Type).
		Str("routing_key", row.RoutingKey).Logger()
	return &l
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
