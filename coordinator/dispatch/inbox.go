package dispatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// verdict is what becomes of a delivery once its transaction has ended.
type verdict struct {
	// reject dead-letters the message with this error's code; nil acks it. A rejected
	// message's transaction is rolled back: nothing it would have changed is stored.
	reject error
	// refusal is the audit entry of a rejected message, written after the rollback in
	// a transaction of its own; nil when the refusal is not audited (a heartbeat
	// refused again within the hour).
	refusal *audit.Entry
	// claimed is the refusal to record against the agent the message claimed to come
	// from (store.RecordAgentRefusal); nil when not recorded (a heartbeat refused again
	// within the minute).
	claimed *claimedRefusal
	// wake wakes the waiting sweeper: the message may unblock an approved job.
	wake bool
	// later hands the message back to the queue: it arrived before an event it depends
	// on, which another coordinator may be handling right now. Nothing is recorded.
	later error
	// seen is the agent whose last sighting the message, once taken, moves (markSeen).
	seen string
}

// errUndo rolls back the transaction of a message that is refused or handed back.
var errUndo = errors.New("dispatch: message refused or handed back; nothing of it is kept")

// maxEventBatch bounds the messages handled in one transaction: the consumer's prefetch.
const maxEventBatch = amqp.DefaultPrefetch

// handleEvents is the events queues' handler. Heartbeats are kept in memory. The other
// events received together are handled in one transaction, each in a savepoint of its
// own: a burst, such as an agent's last progress steps with its CSR behind them or the
// results of many agents, costs one commit instead of one each, and the last of it waits
// for no commit of those before it. A message refused or handed back is undone alone, and
// the others are kept. When the transaction itself fails, each message is handled again
// in a transaction of its own (handleEvent), so that one message's failure is its own.
func (d *Dispatcher) handleEvents(ctx context.Context, dels []*amqp.Delivery) []amqp.Outcome {
	outs := make([]amqp.Outcome, len(dels))
	var events []*amqp.Delivery
	var at []int // index in dels of each of events
	for i, del := range dels {
		if del.Envelope.Type == protocol.TypeHeartbeat {
			outs[i] = d.handleHeartbeat(ctx, del)
			continue
		}
		events, at = append(events, del), append(at, i)
	}
	if len(events) == 1 {
		outs[at[0]] = d.handleEvent(ctx, events[0])
		return outs
	}
	if len(events) == 0 {
		return outs
	}
	vs, err := d.processTogether(ctx, events)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Debug().Err(err).Int("messages", len(events)).Msg("events not processed together; processing them one by one")
		}
		for k, del := range events {
			outs[at[k]] = d.handleEvent(ctx, del)
		}
		return outs
	}
	d.opts.Observer.EventsTogether(len(events))
	for k, del := range events {
		outs[at[k]] = d.settle(ctx, del, vs[k])
	}
	return outs
}

// processTogether processes events in one transaction, each in a savepoint, and returns
// the verdict of each. An error is the transaction's: nothing of it is kept.
func (d *Dispatcher) processTogether(ctx context.Context, events []*amqp.Delivery) ([]verdict, error) {
	vs := make([]verdict, len(events))
	err := d.update(ctx, func(jt *service.JobTx) error {
		clear(vs) // a transaction run again starts afresh
		for k, del := range events {
			err := jt.Try(ctx, func() error { return d.processOrUndo(ctx, jt, del, &vs[k]) })
			if err != nil && !errors.Is(err, errUndo) {
				return err
			}
		}
		return d.markSeen(ctx, jt, vs)
	})
	return vs, err
}

// markSeen writes the last sighting of each agent whose job events the transaction took,
// once an agent, in the order of their IDs, after all of its events. The agents' rows are
// then the last rows such a transaction locks (before the audit chain head), in one order
// on every coordinator, as a heartbeat flush locks them (store.RecordHeartbeats), and none
// is held while the transaction waits for a job's row: with several coordinators on
// PostgreSQL, a sighting written in the middle of a burst, before the next event's job
// and attempt were locked, met the other orders in deadlocks.
func (d *Dispatcher) markSeen(ctx context.Context, jt *service.JobTx, vs []verdict) error {
	var ids []string
	for _, v := range vs {
		if v.seen != "" && v.reject == nil && v.later == nil {
			ids = append(ids, v.seen)
		}
	}
	slices.Sort(ids)
	at := d.clock()
	for _, id := range slices.Compact(ids) {
		if err := jt.RecordAgentSeen(ctx, id, at, false); err != nil {
			return err
		}
	}
	return nil
}

// processOrUndo processes del into *v and answers errUndo when it is refused or handed
// back, so that its transaction, or savepoint, keeps nothing of it.
func (d *Dispatcher) processOrUndo(ctx context.Context, jt *service.JobTx, del *amqp.Delivery, v *verdict) error {
	var err error
	*v, err = d.process(ctx, jt, del)
	if err == nil && (v.reject != nil || v.later != nil) {
		return errUndo
	}
	return err
}

// handleEvent handles one event in a transaction of its own, in which the job owner makes
// every job change and which records the message ID in the inbox, so that a redelivered
// message changes nothing. A refused message changes nothing but the audit log; a store
// failure asks for the message again later.
func (d *Dispatcher) handleEvent(ctx context.Context, del *amqp.Delivery) amqp.Outcome {
	if del.Envelope.Type == protocol.TypeHeartbeat {
		return d.handleHeartbeat(ctx, del)
	}
	var v verdict
	err := d.update(ctx, func(jt *service.JobTx) error {
		if err := d.processOrUndo(ctx, jt, del, &v); err != nil {
			return err
		}
		return d.markSeen(ctx, jt, []verdict{v})
	})
	if err != nil && !errors.Is(err, errUndo) {
		if ctx.Err() == nil {
			d.log.Error().Err(err).Str("message_id", del.Envelope.ID).Str("type", string(del.Envelope.Type)).
				Str("agent", del.Envelope.AgentID).Msg("event not processed; it is delivered again later")
		}
		return amqp.Retry(err)
	}
	d.opts.Observer.EventsTogether(1)
	return d.settle(ctx, del, v)
}

// settle finishes an event whose transaction has ended with verdict v: it records a
// refusal (a store failure then asks for the message again), wakes the waiting sweeper
// when the event may unblock a job, and says what becomes of the delivery.
func (d *Dispatcher) settle(ctx context.Context, del *amqp.Delivery, v verdict) amqp.Outcome {
	if v.reject != nil || v.later != nil {
		if err := d.recordRefusal(ctx, v); err != nil {
			if ctx.Err() == nil {
				d.log.Error().Err(err).Str("message_id", del.Envelope.ID).Str("type", string(del.Envelope.Type)).
					Str("agent", del.Envelope.AgentID).Msg("refusal not recorded; the event is delivered again later")
			}
			return amqp.Retry(err)
		}
	}
	if v.wake {
		kick(d.waitingKick)
	}
	switch {
	case v.later != nil:
		return amqp.Retry(v.later)
	case v.reject != nil:
		return d.reject(v.reject)
	}
	d.early.forget(del.Envelope.ID)
	return amqp.Ack()
}

// claimedRefusal is a refused message as recorded against the agent it claimed to come
// from.
type claimedRefusal struct {
	agentID string
	r       store.AgentRefusal
}

// recordRefusal writes a refused message's audit entry and records it against the agent
// it claimed to be from, after its transaction was rolled back.
func (d *Dispatcher) recordRefusal(ctx context.Context, v verdict) error {
	if v.refusal == nil && v.claimed == nil {
		return nil
	}
	return d.st.InTx(ctx, func(tx store.Tx) error {
		if v.refusal != nil {
			if err := d.auditTx(ctx, tx, *v.refusal); err != nil {
				return err
			}
		}
		return recordClaimed(ctx, tx, v.claimed)
	})
}

// recordClaimed records a refusal against the agent the message named. Anyone who may
// publish events can name any agent, so what is recorded is what is true whoever sent
// it: a message claiming to be this agent was refused, with the broker user that
// published it, as the broker vouches for it. A message naming no enrolled agent is
// recorded nowhere (the audit log has it).
func recordClaimed(ctx context.Context, tx store.Tx, c *claimedRefusal) error {
	if c == nil {
		return nil
	}
	if err := tx.RecordAgentRefusal(ctx, c.agentID, c.r); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// claim makes the refusal record of a message claiming to be agentID, unless quiet and
// one was recorded for the same agent, sender and code within the minute: heartbeats
// refused every few seconds need not write as often.
func (d *Dispatcher) claim(agentID, userID string, quiet bool, code protocol.ErrorCode, msg string) *claimedRefusal {
	if agentID == "" || (quiet && !d.refusalRecord.Allow(string(code)+"|"+agentID+"|"+userID, d.now())) {
		return nil
	}
	return &claimedRefusal{agentID: agentID, r: store.AgentRefusal{At: d.clock(), Code: string(code), Sender: userID, Reason: msg}}
}

// process handles one event inside jt and returns what to do with the delivery.
func (d *Dispatcher) process(ctx context.Context, jt *service.JobTx, del *amqp.Delivery) (verdict, error) {
	env := del.Envelope
	if _, err := jt.GetInbox(ctx, env.ID); err == nil {
		d.log.Debug().Str("message_id", env.ID).Msg("duplicate event dropped")
		return verdict{}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return verdict{}, err
	}
	agent, v, err := d.sender(ctx, jt, del, false)
	if err != nil || v.reject != nil {
		return v, err
	}
	var result string
	switch env.Type {
	case protocol.TypeHello:
		result, v, err = d.onHello(ctx, jt, del, agent)
	case protocol.TypeInventory:
		result, v, err = d.onInventory(ctx, jt, del)
	case protocol.TypeProgress, protocol.TypeCSR, protocol.TypeResult:
		result, v, err = d.onJobEvent(ctx, jt, del)
	default:
		v = d.refuse(del, false, protocol.CodeUnknownType, "type %s is not an event the coordinator takes", env.Type)
	}
	if err != nil || v.reject != nil || v.later != nil {
		// A refused message is not recorded as processed: it goes to the dead-letter
		// queue, and its audit entry is what remains of it here. One handed back is
		// processed when it comes again.
		return v, err
	}
	seen, err := jt.RecordInbox(ctx, store.InboxEntry{MessageID: env.ID, Received: d.clock(), JobID: env.JobID,
		Result: protocol.TruncateText(result, maxInboxResult)})
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

// maxInboxResult bounds what the inbox keeps of how a message was handled.
const maxInboxResult = 1000

// sender checks that the envelope's agent is enrolled and, with per-agent broker users,
// that the broker user that published it is that agent's. quiet audits at most one
// refusal per agent and hour (heartbeats would fill the log).
func (d *Dispatcher) sender(ctx context.Context, r store.Reader, del *amqp.Delivery, quiet bool) (store.Agent, verdict, error) {
	env := del.Envelope
	a, err := r.GetAgent(ctx, env.AgentID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Agent{}, d.refuse(del, quiet, protocol.CodeForgedSender, "the envelope names agent %s, which is not enrolled", env.AgentID), nil
	}
	if err != nil {
		return store.Agent{}, verdict{}, err
	}
	want, err := d.agentUser(a)
	if err != nil {
		return store.Agent{}, verdict{}, err
	}
	if v, refused := d.checkSender(del, a.ID, want, quiet); refused {
		return store.Agent{}, v, nil
	}
	if a.State != store.AgentActive && a.State != "" {
		// Its broker user is gone, but what it published before is still queued.
		return store.Agent{}, d.refuse(del, quiet, protocol.CodeAgentNotActive, "agent %s is %s (%s): nothing it sends is taken", a.ID, a.State, a.StateReason), nil
	}
	return a, verdict{}, nil
}

// agentUser is the broker user that must publish agent a's messages; "" when agents
// share one.
func (d *Dispatcher) agentUser(a store.Agent) (string, error) {
	if d.opts.AgentUsers != AgentUsersPerAgent {
		return "", nil
	}
	if a.BrokerUser != "" {
		return a.BrokerUser, nil
	}
	return protocol.AgentUser(a.ID)
}

// checkSender refuses a message claiming enrolled agent id unless, with per-agent broker
// users, want (agentUser) published it; refused says whether it did.
func (d *Dispatcher) checkSender(del *amqp.Delivery, id, want string, quiet bool) (v verdict, refused bool) {
	if d.opts.AgentUsers != AgentUsersPerAgent {
		return verdict{}, false
	}
	switch {
	case del.UserID == "":
		return d.refuse(del, quiet, protocol.CodeForgedSender, "user_id property missing; agent %s must publish as broker user %s", id, want), true
	case del.UserID != want:
		return d.refuse(del, quiet, protocol.CodeForgedSender, "the envelope claims agent %s but broker user %q published it (the agent's is %q)", id, del.UserID, want), true
	}
	return verdict{}, false
}

// refuse refuses a message: it is dead-lettered with code, and audited
// (message.rejected) once its transaction is rolled back.
func (d *Dispatcher) refuse(del *amqp.Delivery, quiet bool, code protocol.ErrorCode, format string, args ...any) verdict {
	env := del.Envelope
	msg := protocol.TruncateText(fmt.Sprintf(format, args...), protocol.MaxTextLen)
	d.log.Warn().Str("message_id", env.ID).Str("type", string(env.Type)).Str("agent", env.AgentID).Str("user_id", del.UserID).
		Str("code", string(code)).Str("reason", msg).Msg("event refused")
	v := verdict{reject: protocol.NewError(code, "%s", msg), claimed: d.claim(env.AgentID, del.UserID, quiet, code, msg)}
	if !quiet || d.refusalLog.Allow(string(code)+"|"+env.AgentID+"|"+del.UserID, d.now()) {
		v.refusal = &audit.Entry{Actor: brokerActor(del.UserID), Action: audit.ActionMessageRejected, JobID: env.JobID,
			Target: "agent:" + env.AgentID, Reason: msg,
			Details: audit.Details("code", string(code), "message_id", env.ID, "type", string(env.Type), "user_id", del.UserID,
				"routing_key", del.RoutingKey, "queue", del.Queue)}
	}
	return v
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
	d.opts.Observer.EventRefused(code)
	var agentID, jobID, typ string
	if r.Envelope != nil {
		agentID, jobID, typ = r.Envelope.AgentID, r.Envelope.JobID, string(r.Envelope.Type)
	}
	d.log.Warn().Err(r.Err).Str("message_id", r.MessageID).Str("routing_key", r.RoutingKey).Str("user_id", r.UserID).
		Str("code", string(code)).Msg("message refused by the consumer")
	quiet := r.Queue == protocol.HeartbeatsQueue
	msg := protocol.TruncateText(r.Err.Error(), protocol.MaxTextLen)
	claimed := d.claim(agentID, r.UserID, quiet, code, msg)
	audited := !quiet || d.refusalLog.Allow(string(code)+"|"+r.RoutingKey+"|"+r.UserID, d.now())
	if !audited && claimed == nil {
		return
	}
	target := ""
	if agentID != "" {
		target = "agent:" + agentID
	}
	err := d.st.InTx(ctx, func(tx store.Tx) error {
		if audited {
			if err := d.auditTx(ctx, tx, audit.Entry{Actor: brokerActor(r.UserID), Action: audit.ActionMessageRejected, JobID: jobID,
				Target: target, Reason: msg, Details: audit.Details("code", string(code), "message_id", r.MessageID, "type", typ,
					"user_id", r.UserID, "routing_key", r.RoutingKey, "queue", r.Queue)}); err != nil {
				return err
			}
		}
		return recordClaimed(ctx, tx, claimed)
	})
	if err != nil && ctx.Err() == nil {
		d.log.Error().Err(err).Str("message_id", r.MessageID).Msg("auditing a refused message")
	}
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
