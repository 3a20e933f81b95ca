package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// verdict is what becomes of a delivery once its transaction has committed.
type verdict struct {
	// reject dead-letters the message with this error's code; nil acks it.
	reject error
	// wake wakes the waiting sweeper: the message may unblock an approved job.
	wake bool
	// later hands the message back to the queue: it arrived before an event it depends
	// on, which another coordinator may be handling right now. Nothing is recorded.
	later error
}

// handleEvent is the events queue's handler: one transaction per message, which records
// the message ID in the inbox with the effects, so that a redelivered message changes
// nothing. A store failure asks for the message again later.
func (d *Dispatcher) handleEvent(ctx context.Context, del *amqp.Delivery) amqp.Outcome {
	if del.Envelope.Type == protocol.TypeHeartbeat {
		return d.handleHeartbeat(ctx, del)
	}
	var v verdict
	err := d.update(ctx, func(tx store.Tx) error {
		var err error
		v, err = d.process(ctx, tx, del)
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error().Err(err).Str("message_id", del.Envelope.ID).Str("type", string(del.Envelope.Type)).
				Str("agent", del.Envelope.AgentID).Msg("event not processed; it is delivered again later")
		}
		return amqp.Retry(err)
	}
	if v.wake {
		kick(d.waitingKick)
	}
	switch {
	case v.later != nil:
		return amqp.Retry(v.later)
	case v.reject != nil:
		return amqp.Reject(v.reject)
	}
	d.early.forget(del.Envelope.ID)
	return amqp.Ack()
}

// process handles one event inside tx and returns what to do with the delivery.
func (d *Dispatcher) process(ctx context.Context, tx store.Tx, del *amqp.Delivery) (verdict, error) {
	env := del.Envelope
	if _, err := tx.GetInbox(ctx, env.ID); err == nil {
		d.log.Debug().Str("message_id", env.ID).Msg("duplicate event dropped")
		return verdict{}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return verdict{}, err
	}
	agent, v, err := d.sender(ctx, tx, del, false)
	if err != nil || v.reject != nil {
		return v, err
	}
	var result string
	switch env.Type {
	case protocol.TypeHello:
		result, v, err = d.onHello(ctx, tx, del, agent)
	case protocol.TypeInventory:
		result, v, err = d.onInventory(ctx, tx, del)
	case protocol.TypeProgress, protocol.TypeCSR, protocol.TypeResult:
		result, v, err = d.onJobEvent(ctx, tx, del)
	default:
		v, err = d.refuse(ctx, tx, del, false, protocol.CodeUnknownType, "type %s is not an event the coordinator takes", env.Type)
	}
	if err != nil || v.reject != nil || v.later != nil {
		// A refused message is not recorded as processed: it goes to the dead-letter
		// queue, and its audit entry is what remains of it here. One handed back is
		// processed when it comes again.
		return v, err
	}
	seen, err := tx.RecordInbox(ctx, store.InboxEntry{MessageID: env.ID, Received: d.clock(), JobID: env.JobID, Result: result})
	if err != nil {
		return v, err
	}
	if seen {
		// Another coordinator processed the same message meanwhile: roll back and read
		// again, which finds it in the inbox.
		return v, fmt.Errorf("message %s processed concurrently: %w", env.ID, store.ErrConflict)
	}
	return v, nil
}

// sender checks that the envelope's agent is enrolled and, with per-agent broker users,
// that the broker user that published it is that agent's. A refusal is audited; quiet
// audits at most one refusal per agent and hour (heartbeats would fill the log).
func (d *Dispatcher) sender(ctx context.Context, tx store.Tx, del *amqp.Delivery, quiet bool) (store.Agent, verdict, error) {
	env := del.Envelope
	a, err := tx.GetAgent(ctx, env.AgentID)
	if errors.Is(err, store.ErrNotFound) {
		v, err := d.refuse(ctx, tx, del, quiet, protocol.CodeForgedSender, "the envelope names agent %s, which is not enrolled", env.AgentID)
		return store.Agent{}, v, err
	}
	if err != nil {
		return store.Agent{}, verdict{}, err
	}
	if d.opts.AgentUsers != AgentUsersPerAgent {
		return a, verdict{}, nil
	}
	want := a.BrokerUser
	if want == "" {
		if want, err = protocol.AgentUser(a.ID); err != nil {
			return store.Agent{}, verdict{}, err
		}
	}
	switch {
	case del.UserID == "":
		v, err := d.refuse(ctx, tx, del, quiet, protocol.CodeForgedSender, "user_id property missing; agent %s must publish as broker user %s", a.ID, want)
		return store.Agent{}, v, err
	case del.UserID != want:
		v, err := d.refuse(ctx, tx, del, quiet, protocol.CodeForgedSender, "the envelope claims agent %s but broker user %q published it (the agent's is %q)", a.ID, del.UserID, want)
		return store.Agent{}, v, err
	}
	return a, verdict{}, nil
}

// refuse audits a refused message (message.rejected) and dead-letters it with code.
func (d *Dispatcher) refuse(ctx context.Context, tx store.Tx, del *amqp.Delivery, quiet bool, code protocol.ErrorCode, format string, args ...any) (verdict, error) {
	env := del.Envelope
	msg := fmt.Sprintf(format, args...)
	d.log.Warn().Str("message_id", env.ID).Str("type", string(env.Type)).Str("agent", env.AgentID).Str("user_id", del.UserID).
		Str("code", string(code)).Str("reason", msg).Msg("event refused")
	if !quiet || d.refusalLog.allow(string(code)+"|"+env.AgentID+"|"+del.UserID, d.now()) {
		if err := d.auditTx(ctx, tx, audit.Entry{Actor: brokerActor(del.UserID), Action: audit.ActionMessageRejected, JobID: env.JobID,
			Target: "agent:" + env.AgentID, Reason: msg,
			Details: audit.Details("code", string(code), "message_id", env.ID, "type", string(env.Type), "user_id", del.UserID,
				"routing_key", del.RoutingKey, "queue", del.Queue)}); err != nil {
			return verdict{}, err
		}
	}
	return verdict{reject: protocol.NewError(code, "%s", msg)}, nil
}

// brokerActor names whoever published a message the coordinator refused: the broker user
// is all it knows of them.
func brokerActor(userID string) string {
	if userID == "" {
		return "broker-user:(none)"
	}
	return "broker-user:" + userID
}

// onRefused audits a message the consumer refused before decoding it fully (malformed,
// unknown type, wrong version) or whose routing key did not match its envelope.
func (d *Dispatcher) onRefused(ctx context.Context, r amqp.Refusal) {
	code := protocol.CodeOf(r.Err)
	var agentID, jobID, typ string
	if r.Envelope != nil {
		agentID, jobID, typ = r.Envelope.AgentID, r.Envelope.JobID, string(r.Envelope.Type)
	}
	d.log.Warn().Err(r.Err).Str("message_id", r.MessageID).Str("routing_key", r.RoutingKey).Str("user_id", r.UserID).
		Str("code", string(code)).Msg("message refused by the consumer")
	if r.Queue == protocol.HeartbeatsQueue && !d.refusalLog.allow(string(code)+"|"+r.RoutingKey+"|"+r.UserID, d.now()) {
		return
	}
	target := ""
	if agentID != "" {
		target = "agent:" + agentID
	}
	msg := r.Err.Error()
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	err := d.st.InTx(ctx, func(tx store.Tx) error {
		return d.auditTx(ctx, tx, audit.Entry{Actor: brokerActor(r.UserID), Action: audit.ActionMessageRejected, JobID: jobID,
			Target: target, Reason: msg, Details: audit.Details("code", string(code), "message_id", r.MessageID, "type", typ,
				"user_id", r.UserID, "routing_key", r.RoutingKey, "queue", r.Queue)})
	})
	if err != nil && ctx.Err() == nil {
		d.log.Error().Err(err).Str("message_id", r.MessageID).Msg("auditing a refused message")
	}
}

// onJobEvent handles progress, CSR and result: the job must target the sending agent,
// and the event must be of the job's current attempt.
func (d *Dispatcher) onJobEvent(ctx context.Context, tx store.Tx, del *amqp.Delivery) (string, verdict, error) {
	env := del.Envelope
	j, err := tx.GetJob(ctx, env.JobID)
	if errors.Is(err, store.ErrNotFound) {
		v, err := d.refuse(ctx, tx, del, false, protocol.CodeBadRequest, "no job %s", env.JobID)
		return "", v, err
	}
	if err != nil {
		return "", verdict{}, err
	}
	if j.AgentID != env.AgentID {
		v, err := d.refuse(ctx, tx, del, false, protocol.CodeForgedSender, "job %s targets agent %s, not %s", j.ID, j.AgentID, env.AgentID)
		return "", v, err
	}
	if err := tx.RecordAgentSeen(ctx, env.AgentID, d.clock(), false); err != nil {
		return "", verdict{}, err
	}
	if int(env.Attempt) != j.Attempt {
		reason := fmt.Sprintf("%s of attempt %d; the job is at attempt %d", env.Type, env.Attempt, j.Attempt)
		d.log.Info().Str("job", j.ID).Str("message_id", env.ID).Str("reason", reason).Msg("stale event ignored")
		if env.Type == protocol.TypeResult {
			if err := d.auditTx(ctx, tx, audit.Entry{Actor: agentActor(env.AgentID), Action: audit.ActionJobResultStale, JobID: j.ID,
				Reason: reason, Details: audit.Details("attempt", int(env.Attempt), "current_attempt", j.Attempt, "message_id", env.ID)}); err != nil {
				return "", verdict{}, err
			}
		}
		return "stale: " + reason, verdict{}, nil
	}
	switch env.Type {
	case protocol.TypeProgress:
		return d.onProgress(ctx, tx, del, j)
	case protocol.TypeCSR:
		return d.onCSR(ctx, tx, del, j)
	default:
		return d.onResult(ctx, tx, del, j)
	}
}

// catchUp brings a job whose agent reports on the current attempt to running: the report
// proves the dispatch reached the agent, even when the broker's confirmation has not been
// recorded yet.
func (d *Dispatcher) catchUp(ctx context.Context, tx store.Tx, j store.Job) (store.Job, error) {
	j, err := d.markDispatched(ctx, tx, j, j.Attempt, "the agent reported on the attempt before the broker's confirmation was recorded")
	if err != nil || j.State != jobs.StateDispatched {
		return j, err
	}
	return d.transition(ctx, tx, j, jobs.StateRunning, store.JobChange{Actor: agentActor(j.AgentID), Reason: "the agent started the job"})
}

// badBody refuses an event whose body does not decode as its type says.
func (d *Dispatcher) badBody(ctx context.Context, tx store.Tx, del *amqp.Delivery, err error) (string, verdict, error) {
	v, err := d.refuse(ctx, tx, del, false, protocol.CodeOf(err), "%v", err)
	return "", v, err
}

func (d *Dispatcher) onProgress(ctx context.Context, tx store.Tx, del *amqp.Delivery, j store.Job) (string, verdict, error) {
	p, err := protocol.DecodeBody[protocol.Progress](del.Envelope)
	if err != nil {
		return d.badBody(ctx, tx, del, err)
	}
	if jobs.Terminal(j.State) {
		return "ignored: the job is " + string(j.State), verdict{}, nil
	}
	if j, err = d.catchUp(ctx, tx, j); err != nil {
		return "", verdict{}, err
	}
	step := jobs.Step(p.Step)
	if step == jobs.StepKeyGenerated {
		// Recorded whatever the step bookkeeping says: with several coordinators, a later
		// step may have been handled first, and the CSR is checked against this key.
		if err := d.recordKey(ctx, tx, del, j, p.PublicKey); err != nil {
			return "", verdict{}, err
		}
	}
	next, err := jobs.AdvanceStep(j.Kind, j.State, j.Progress, step)
	if err != nil {
		var je *jobs.Error
		if !errors.As(err, &je) {
			return "", verdict{}, err
		}
		// Out of order or repeated: reports may arrive late after a redelivery. The step
		// is not recorded; the job goes on from what it knows.
		d.log.Warn().Str("job", j.ID).Str("step", string(step)).Err(err).Msg("progress step not recorded")
		return "ignored: " + je.Error(), verdict{}, nil
	}
	detail := p.Detail
	if detail == "" && p.TokenSerial != "" {
		detail = "token " + p.TokenSerial
	}
	if p.KeyExisted {
		detail += " (key made by an earlier pass, reused)"
	}
	if _, err := tx.AddJobStep(ctx, store.JobStep{JobID: j.ID, Attempt: j.Attempt, Step: step, Detail: detail, At: d.clock()}, next, j.Version); err != nil {
		return "", verdict{}, err
	}
	return "step " + string(step), verdict{}, nil
}

// recordKey records the public key reported for the attempt; a second, different key is
// audited and ignored: the first one counts.
func (d *Dispatcher) recordKey(ctx context.Context, tx store.Tx, del *amqp.Delivery, j store.Job, pub []byte) error {
	err := tx.RecordAttemptKey(ctx, j.ID, j.Attempt, pub)
	if !errors.Is(err, store.ErrConflict) {
		return err
	}
	msg := fmt.Sprintf("attempt %d reported a second, different public key; the first one counts", j.Attempt)
	d.log.Warn().Str("job", j.ID).Msg(msg)
	return d.auditTx(ctx, tx, audit.Entry{Actor: agentActor(j.AgentID), Action: audit.ActionMessageRejected, JobID: j.ID,
		Target: "agent:" + j.AgentID, Reason: msg, Details: audit.Details("code", string(protocol.CodeKeyMismatch), "message_id", del.Envelope.ID)})
}

// maxEarly is how often a message that came before what it depends on is handed back
// before it is taken as it is.
const maxEarly = 5

// earlyCounts counts, per message ID, how often a message was handed back for coming too
// early. The broker's delivery count does not cover requeues on every version, so the
// dispatcher keeps its own.
type earlyCounts struct {
	mu sync.Mutex // guards n
	n  map[string]int
}

func newEarlyCounts() *earlyCounts { return &earlyCounts{n: map[string]int{}} }

// again counts one more hand-back of id and reports whether it may be handed back.
func (e *earlyCounts) again(id string, deliveries int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.n) >= maxLimiterKeys {
		clear(e.n)
	}
	e.n[id]++
	return max(e.n[id], deliveries) <= maxEarly
}

func (e *earlyCounts) forget(id string) {
	e.mu.Lock()
	delete(e.n, id)
	e.mu.Unlock()
}
