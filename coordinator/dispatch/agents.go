package dispatch

import (
	"bytes"
	"context"
	"fmt"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// onHello records what the agent says of itself: hostname, OS, version, its seal key
// (set by the first hello; another key is refused until an administrator resets it) and
// its tokens. Jobs waiting for the seal key may go now.
func (d *Dispatcher) onHello(ctx context.Context, tx *service.JobTx, del *amqp.Delivery, a store.Agent) (string, verdict, error) {
	h, err := protocol.DecodeBody[protocol.Hello](del.Envelope)
	if err != nil {
		return "", d.refuse(del, false, protocol.CodeOf(err), "%v", err), nil
	}
	keySet := false
	switch {
	case len(a.PublicKey) == 0:
		keySet = true
	case !bytes.Equal(a.PublicKey, h.SealKey):
		return "", d.refuse(del, false, protocol.CodeForgedSender,
			"agent %s presents seal key %s, not the key %s recorded at its first hello; if the agent was reinstalled, an administrator resets the recorded key (tokenfleetctl agent reset-key %s)",
			a.ID, protocol.KeyFingerprint(h.SealKey), protocol.KeyFingerprint(a.PublicKey), a.ID), nil
	}
	a.Hostname, a.OS, a.Version, a.PublicKey = h.Hostname, h.OS+"/"+h.Arch, h.AgentVersion, h.SealKey
	if _, err := tx.UpdateAgent(ctx, a); err != nil {
		return "", verdict{}, err
	}
	// A hello counts as a heartbeat: the agent is there now.
	if err := tx.RecordAgentSeen(ctx, a.ID, d.clock(), true); err != nil {
		return "", verdict{}, err
	}
	if err := d.recordTokens(ctx, tx, del, a.ID, h.Tokens, true); err != nil {
		return "", verdict{}, err
	}
	if keySet {
		if err := tx.Audit(ctx, audit.Entry{Actor: agentActor(a.ID), Action: audit.ActionAgentKeySet, Target: "agent:" + a.ID,
			Reason: "first hello", Details: audit.Details("seal_key", protocol.KeyFingerprint(h.SealKey), "hostname", h.Hostname,
				"instance_id", h.InstanceID, "version", h.AgentVersion)}); err != nil {
			return "", verdict{}, err
		}
	}
	d.log.Info().Str("agent", a.ID).Str("hostname", h.Hostname).Str("version", h.AgentVersion).Str("instance_id", h.InstanceID).
		Int("tokens", len(h.Tokens)).Bool("seal_key_set", keySet).Msg("agent said hello")
	return fmt.Sprintf("hello: %d tokens", len(h.Tokens)), verdict{wake: true}, nil
}

// onInventory replaces what the agent's tokens look like.
func (d *Dispatcher) onInventory(ctx context.Context, tx *service.JobTx, del *amqp.Delivery) (string, verdict, error) {
	inv, err := protocol.DecodeBody[protocol.Inventory](del.Envelope)
	if err != nil {
		return "", d.refuse(del, false, protocol.CodeOf(err), "%v", err), nil
	}
	if err := tx.RecordAgentSeen(ctx, del.Envelope.AgentID, d.clock(), false); err != nil {
		return "", verdict{}, err
	}
	if err := d.recordTokens(ctx, tx, del, del.Envelope.AgentID, inv.Tokens, true); err != nil {
		return "", verdict{}, err
	}
	return fmt.Sprintf("inventory: %d tokens", len(inv.Tokens)), verdict{wake: true}, nil
}

// handleHeartbeat keeps the agent online. Heartbeats are not deduplicated (seeing one
// twice changes nothing) and their refusals are audited at most hourly per agent. The
// sender is checked as for any event, against what the dispatcher remembers of the agent
// (read once from its record); the heartbeat is then held in memory and written with the
// next flush (presence.go).
func (d *Dispatcher) handleHeartbeat(ctx context.Context, del *amqp.Delivery) amqp.Outcome {
	if _, err := protocol.DecodeBody[protocol.Heartbeat](del.Envelope); err != nil {
		return d.reject(err)
	}
	if d.writeThrough() {
		return d.heartbeatWriteThrough(ctx, del)
	}
	id := del.Envelope.AgentID
	want, known := d.presence.user(id)
	if !known {
		a, v, err := d.sender(ctx, d.st, del, true)
		if err == nil && v.reject != nil {
			err = d.recordRefusal(ctx, v)
		}
		if err != nil {
			return amqp.Retry(err)
		}
		if v.reject != nil {
			return d.reject(v.reject)
		}
		if want, err = d.agentUser(a); err != nil {
			return amqp.Retry(err)
		}
		d.presence.remember(id, want, a)
	} else if v, refused := d.checkSender(del, id, want, true); refused {
		if err := d.recordRefusal(ctx, v); err != nil {
			return amqp.Retry(err)
		}
		return d.reject(v.reject)
	}
	if d.presence.beat(id, d.clock(), d.opts.HeartbeatTimeout) {
		kick(d.presence.kick)
	}
	// Acked once in memory, before it is written: a heartbeat is a fact the next one
	// supersedes, and a crash loses at most one flush interval of them, while the agent's
	// next heartbeat comes within its interval, well inside the timeout.
	return amqp.Ack()
}

// heartbeatWriteThrough records one heartbeat in a transaction of its own: what every
// heartbeat cost before presence was held in memory, kept to measure against.
func (d *Dispatcher) heartbeatWriteThrough(ctx context.Context, del *amqp.Delivery) amqp.Outcome {
	var v verdict
	err := d.st.InTx(ctx, func(tx store.Tx) error {
		a, vv, err := d.sender(ctx, tx, del, true)
		if v = vv; err != nil || v.reject != nil {
			return err
		}
		return tx.RecordAgentSeen(ctx, a.ID, d.clock(), true)
	})
	if err == nil && v.reject != nil {
		err = d.recordRefusal(ctx, v)
	}
	if err != nil {
		return amqp.Retry(err)
	}
	if v.reject != nil {
		return d.reject(v.reject)
	}
	d.presence.counted()
	return amqp.Ack()
}

// SweepOffline marks offline the agents whose last heartbeat in the database is older
// than the heartbeat timeout, and returns how many. It writes the heartbeats held here
// first; those other coordinators hold reach the database within their flush interval,
// far inside the timeout.
func (d *Dispatcher) SweepOffline(ctx context.Context) (int64, error) {
	if _, err := d.FlushPresence(ctx); err != nil {
		return 0, err
	}
	var n int64
	err := d.st.InTx(ctx, func(tx store.Tx) error {
		var err error
		n, err = tx.MarkAgentsOffline(ctx, d.clock().Add(-d.opts.HeartbeatTimeout))
		return err
	})
	return n, err
}
