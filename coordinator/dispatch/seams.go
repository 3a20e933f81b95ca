package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// JobApproved implements service.Dispatcher: inside the transaction that approved the job
// (or retried it), the attempt's dispatch goes into the outbox, the reason it must wait is
// recorded, or the job fails when its dispatch can never be built.
func (d *Dispatcher) JobApproved(ctx context.Context, jt *service.JobTx, j store.Job) error {
	_, err := d.tryDispatch(ctx, jt, j)
	return err
}

// tryDispatch queues the dispatch of j's current attempt, records why it waits, or fails
// the job; it reports whether it queued one.
func (d *Dispatcher) tryDispatch(ctx context.Context, jt *service.JobTx, j store.Job) (bool, error) {
	body, err := d.build(ctx, jt, j)
	var w *waitError
	var f *failError
	switch {
	case errors.As(err, &w):
		changed, err := jt.SetAttemptWaiting(ctx, j.ID, j.Attempt, protocol.TruncateText(w.reason, protocol.MaxTextLen))
		if err != nil || !changed {
			return false, err
		}
		if w.token != nil {
			t := w.token.tok
			t.Reason = w.reason
			if err := jt.NotifyTokenNeeded(ctx, j, t); err != nil {
				return false, err
			}
		}
		d.log.Warn().Str("job", j.ID).Int("attempt", j.Attempt).Str("agent", j.AgentID).Str("reason", w.reason).
			Msg("approved job waits before it can be dispatched")
		return false, jt.Audit(ctx, audit.Entry{Actor: ActorDispatch, Action: audit.ActionJobWaiting, JobID: j.ID,
			Target: "agent:" + j.AgentID, Reason: w.reason, Details: audit.Details("attempt", j.Attempt)})
	case errors.As(err, &f):
		d.log.Warn().Str("job", j.ID).Int("attempt", j.Attempt).Str("agent", j.AgentID).Str("code", string(f.code)).
			Str("reason", f.reason).Msg("job cannot be dispatched; it fails")
		_, err := d.fail(ctx, jt, j, ActorDispatch, f.code, "cannot be sent to the agent: "+f.reason)
		return false, err
	case err != nil:
		return false, err
	}
	env, err := d.enqueue(ctx, jt, j.AgentID, protocol.JobRef{JobID: j.ID, Attempt: uint32(j.Attempt)}, *body)
	if err != nil {
		return false, err
	}
	if err := jt.RecordAttemptDispatch(ctx, j.ID, j.Attempt, env.ID); err != nil {
		return false, err
	}
	if err := askForToken(ctx, jt, j, body.Token); err != nil {
		return false, err
	}
	d.log.Info().Str("job", j.ID).Int("attempt", j.Attempt).Str("agent", j.AgentID).Str("message_id", env.ID).
		Msg("dispatch queued")
	return true, nil
}

// enqueue writes a message for an agent into the outbox, in the caller's transaction.
func (d *Dispatcher) enqueue(ctx context.Context, tx store.Tx, agentID string, ref protocol.JobRef, body protocol.Body) (*protocol.Envelope, error) {
	env, err := protocol.NewEnvelope(agentID, ref, body)
	if err != nil {
		return nil, err
	}
	env.Time = d.now().UTC()
	data, err := protocol.Encode(env)
	if err != nil {
		return nil, fmt.Errorf("dispatch: encoding %s for agent %s: %w", env.Type, agentID, err)
	}
	key, err := protocol.CommandRoutingKey(agentID)
	if err != nil {
		return nil, err
	}
	if _, err := tx.AddOutbox(ctx, store.OutboxMessage{MessageID: env.ID, Exchange: protocol.CommandsExchange, RoutingKey: key,
		Type: string(env.Type), CorrelationID: env.JobID, Body: data, Created: d.clock()}); err != nil {
		return nil, err
	}
	return env, nil
}

// JobWithdrawn implements service.Dispatcher: the coordinator ended a job the agent did
// not report ending (cancelled, superseded, expired, rejected by the CA operator, failed by
// the coordinator). If its attempt was sent to the agent, the agent is told, so that it
// stops waiting (for the token, for its certificate) and leaves the token as the kind's
// rules say. The cancel follows the dispatch in the outbox, so the agent never sees them
// the other way round (and it keeps a cancel for an attempt it has not seen yet anyway).
func (d *Dispatcher) JobWithdrawn(ctx context.Context, tx store.Tx, j store.Job, from jobs.State) error {
	a, err := tx.GetJobAttempt(ctx, j.ID, j.Attempt)
	if err != nil {
		return err
	}
	if a.DispatchMessageID == "" {
		return nil // nothing was sent for this attempt
	}
	reason := ""
	if evs, err := tx.ListJobEvents(ctx, j.ID); err != nil {
		return err
	} else if len(evs) > 0 {
		reason = evs[len(evs)-1].Reason
	}
	env, err := d.enqueue(ctx, tx, j.AgentID, protocol.JobRef{JobID: j.ID, Attempt: uint32(j.Attempt)},
		protocol.Cancel{State: j.State, Reason: protocol.TruncateText(reason, protocol.MaxTextLen)})
	if err != nil {
		return err
	}
	d.log.Info().Str("job", j.ID).Int("attempt", j.Attempt).Str("from", string(from)).Str("state", string(j.State)).
		Str("message_id", env.ID).Msg("agent told the job ended")
	return nil
}

// declareTimeout bounds declaring an agent's queue when it enrols.
const declareTimeout = 10 * time.Second

// AgentEnrolled implements service.AgentHook: the new agent's command queue is declared,
// so that jobs for it wait in the broker until it connects. When the broker is away the
// queue is declared when the dispatcher starts, or when a message for the agent comes back
// unroutable.
func (d *Dispatcher) AgentEnrolled(ctx context.Context, a store.Agent) error {
	conn := d.brokerConn()
	if conn == nil {
		return errors.New("dispatch: not connected to the broker yet")
	}
	ctx, cancel := context.WithTimeout(ctx, declareTimeout)
	defer cancel()
	if err := conn.Declare(ctx, func(ch amqp.Declarer) error { return amqp.DeclareAgent(ch, a.ID) }); err != nil {
		return fmt.Errorf("dispatch: declaring the queue of agent %s: %w", a.ID, err)
	}
	d.log.Info().Str("agent", a.ID).Msg("agent queue declared")
	return nil
}

// declareAllAgents declares the queue of every enrolled agent, in one channel.
func (d *Dispatcher) declareAllAgents(ctx context.Context, conn *amqp.Conn) error {
	var ids []string
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		as, next, err := d.st.ListAgents(ctx, store.AgentFilter{}, p)
		if err != nil {
			return err
		}
		for _, a := range as {
			ids = append(ids, a.ID)
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	if len(ids) == 0 {
		return nil
	}
	err := conn.Declare(ctx, func(ch amqp.Declarer) error {
		for _, id := range ids {
			if err := amqp.DeclareAgent(ch, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		d.log.Info().Int("agents", len(ids)).Msg("agent queues declared")
	}
	return err
}
