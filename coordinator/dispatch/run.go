package dispatch

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// Consumer settings: a message that keeps failing (the store away) is retried with a
// growing pause, then dead-lettered rather than looping forever.
const (
	consumeMaxRetries = 10
	consumeRetryDelay = time.Second
	purgeInterval     = time.Hour
	retryPause        = 5 * time.Second // before subscribing again after a refusal
)

// Run connects to the broker and runs the dispatcher until ctx ends: the publisher, the
// events and heartbeats consumers and the sweepers. It returns once every goroutine it
// started has stopped and the connection is closed. The broker being away is not an
// error: the connection retries, and messages wait in the outbox meanwhile.
func (d *Dispatcher) Run(ctx context.Context) error {
	if d.opts.BrokerURL == "" {
		return errors.New("dispatch: no broker URL")
	}
	if d.jobOwner() == nil {
		return errors.New("dispatch: no owner of job state; call Bind before Run")
	}
	d.mu.Lock()
	if d.running {
		d.mu.Unlock()
		return errors.New("dispatch: Run called twice")
	}
	d.running = true
	d.mu.Unlock()

	conn, err := amqp.Open(ctx, amqp.Config{URL: d.opts.BrokerURL, Name: d.opts.ConnectionName, Topology: amqp.DeclareShared,
		Backoff: d.opts.BrokerBackoff, Logger: d.log})
	if err != nil {
		return err
	}
	d.setConn(conn)
	if d.opts.AgentUsers == AgentUsersShared {
		d.log.Warn().Msg("broker.agent_users is shared: sender checks of agent events rely on the shared broker user only; " +
			"any client holding its password can publish as any agent. Give each agent its own broker user in production (per_agent)")
	} else {
		d.log.Info().Msg("broker.agent_users is per_agent: every event must be published by its agent's own broker user")
	}

	var wg sync.WaitGroup
	wg.Go(func() { d.runPublisher(ctx, conn) })
	wg.Go(func() { d.runConsumer(ctx, conn, protocol.EventsQueue) })
	wg.Go(func() { d.runConsumer(ctx, conn, protocol.HeartbeatsQueue) })
	wg.Go(func() { d.declareAtStart(ctx, conn) })
	wg.Go(func() { d.runWaiting(ctx) })
	wg.Go(func() { d.runOfflineSweep(ctx) })
	wg.Go(func() { d.runPresence(ctx) })
	wg.Go(func() { d.runPurge(ctx) })
	<-ctx.Done()
	wg.Wait()
	d.setConn(nil)
	return conn.Close()
}

// sleep waits for d or ctx; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// runConsumer consumes a queue until ctx ends, subscribing again if the broker refuses.
func (d *Dispatcher) runConsumer(ctx context.Context, conn *amqp.Conn, queue string) {
	senders := amqp.SenderSharedUser
	if d.opts.AgentUsers == AgentUsersPerAgent {
		senders = amqp.SenderAgentRecordedUsers
	}
	opts := amqp.ConsumeOptions{Senders: senders, MaxRetries: consumeMaxRetries, RetryDelay: consumeRetryDelay,
		OnRefused: d.onRefused, OnDeadLettered: d.opts.Observer.DeadLettered}
	for {
		cons, err := conn.ConsumeBatch(ctx, queue, opts, maxEventBatch, d.handleEvents)
		if err == nil {
			<-cons.Done()
			if ctx.Err() != nil {
				return
			}
			err = cons.Err()
		}
		if ctx.Err() != nil {
			return
		}
		d.log.Error().Err(err).Str("queue", queue).Dur("retry_in_ms", retryPause).Msg("cannot consume")
		if !sleep(ctx, retryPause) {
			return
		}
	}
}

// declareAtStart declares the queue of every enrolled agent once the broker answers, so
// that dispatches to agents enrolled while it was away are routable.
func (d *Dispatcher) declareAtStart(ctx context.Context, conn *amqp.Conn) {
	for {
		if err := conn.Ready(ctx); err != nil {
			return
		}
		err := d.declareAllAgents(ctx, conn)
		if err == nil || ctx.Err() != nil {
			return
		}
		d.log.Warn().Err(err).Dur("retry_in_ms", retryPause).Msg("declaring the agents' queues")
		if !sleep(ctx, retryPause) {
			return
		}
	}
}

// runWaiting tries approved jobs that wait again, when woken and every WaitingInterval.
func (d *Dispatcher) runWaiting(ctx context.Context) {
	tick := time.NewTicker(d.opts.WaitingInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.waitingKick:
		case <-tick.C:
		}
		if n, err := d.DispatchWaiting(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn().Err(err).Msg("dispatching waiting jobs")
		} else if n > 0 {
			d.log.Info().Int("jobs", n).Msg("waiting jobs dispatched")
		}
	}
}

// DispatchWaiting tries again every approved job whose current attempt has no dispatch
// yet, and returns how many it queued. One job's failure does not stop the others. Every
// hello wakes it, so the jobs that wait are found in one query a page, not one a job.
func (d *Dispatcher) DispatchWaiting(ctx context.Context) (int, error) {
	var waiting []store.Job
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		page, next, err := d.st.ListJobs(ctx, store.JobFilter{States: []jobs.State{jobs.StateApproved}, Undispatched: true}, p)
		if err != nil {
			return 0, err
		}
		for _, j := range page {
			if jobs.OnAgent(j.Kind) {
				waiting = append(waiting, j)
			}
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	queued := 0
	var firstErr error
	for _, w := range waiting {
		var ok bool
		err := d.update(ctx, func(tx *service.JobTx) error {
			ok = false
			j, err := tx.GetJob(ctx, w.ID)
			if err != nil {
				return err
			}
			if j.State != jobs.StateApproved || j.Attempt != w.Attempt {
				return nil
			}
			a, err := tx.GetJobAttempt(ctx, j.ID, j.Attempt)
			if err != nil || a.DispatchMessageID != "" {
				return err
			}
			ok, err = d.tryDispatch(ctx, tx, j)
			return err
		})
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if ok {
			queued++
		}
	}
	return queued, firstErr
}

// runOfflineSweep marks agents offline after missed heartbeats.
func (d *Dispatcher) runOfflineSweep(ctx context.Context) {
	tick := time.NewTicker(max(d.opts.HeartbeatTimeout/3, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n, err := d.SweepOffline(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn().Err(err).Msg("marking agents offline")
		} else if n > 0 {
			d.log.Info().Int64("agents", n).Dur("silent_for_ms", d.opts.HeartbeatTimeout).Msg("agents marked offline")
		}
	}
}

// runPurge removes sent outbox rows and old inbox entries.
func (d *Dispatcher) runPurge(ctx context.Context) {
	tick := time.NewTicker(purgeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := d.clock()
		err := d.st.InTx(ctx, func(tx store.Tx) error {
			if _, err := tx.PurgeSentOutbox(ctx, now.Add(-DefaultOutboxRetention)); err != nil {
				return err
			}
			_, err := tx.PurgeInbox(ctx, now.Add(-DefaultInboxRetention))
			return err
		})
		if err != nil && ctx.Err() == nil {
			d.log.Warn().Err(err).Msg("purging outbox and inbox")
		}
	}
}
