package journal

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Outgoing is a message waiting in the outbox, in its wire form.
type Outgoing struct {
	// Seq orders the outbox: send in increasing Seq.
	Seq     int64
	ID      string
	Type    protocol.MessageType
	JobID   string
	Attempt uint32
	// Data is the encoded envelope, ready to publish: the message keeps its ID however
	// often it is sent.
	Data    []byte
	Created time.Time
	// Sent is when the broker confirmed it; zero while unsent.
	Sent time.Time
}

type encoded struct {
	env  *protocol.Envelope
	data []byte
}

// encodeAll encodes a change's messages, the result last. Encoding validates each one as
// the coordinator will, so a message that would be refused fails here, before anything is
// journalled, rather than at the far end.
func encodeAll(c Change) ([]encoded, error) {
	envs := c.Outbox
	if c.Result != nil {
		envs = append(envs[:len(envs):len(envs)], c.Result)
	}
	out := make([]encoded, 0, len(envs))
	for _, env := range envs {
		if env == nil {
			return nil, fmt.Errorf("journal: nil envelope in the outbox")
		}
		data, err := protocol.Encode(env)
		if err != nil {
			return nil, fmt.Errorf("journal: %s message for the outbox: %w", env.Type, err)
		}
		out = append(out, encoded{env: env, data: data})
	}
	if c.Result != nil && c.Result.Type != protocol.TypeResult {
		return nil, fmt.Errorf("journal: the result is a %s message", c.Result.Type)
	}
	return out, nil
}

func insertOutbox(ctx context.Context, tx *sql.Tx, msgs []encoded, now int64) error {
	for _, m := range msgs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (message_id, type, job_id, attempt, data, created_at)
			VALUES (?, ?, ?, ?, ?, ?)`, m.env.ID, string(m.env.Type), m.env.JobID, m.env.Attempt, m.data, now); err != nil {
			return fmt.Errorf("outbox: %s %s: %w", m.env.Type, m.env.ID, err)
		}
	}
	return nil
}

// Append adds messages that no job change causes (hello, inventory) to the outbox, in
// order, in one transaction. Heartbeats do not belong here: a late one says nothing.
func (j *Journal) Append(ctx context.Context, envs ...*protocol.Envelope) error {
	msgs, err := encodeAll(Change{Outbox: envs})
	if err != nil {
		return err
	}
	err = j.tx(ctx, func(tx *sql.Tx) error { return insertOutbox(ctx, tx, msgs, j.stamp()) })
	if err != nil {
		return fmt.Errorf("journal: append: %w", err)
	}
	if len(msgs) > 0 {
		j.signal()
	}
	return nil
}

// Unsent lists up to limit messages not yet confirmed by the broker, oldest first.
func (j *Journal) Unsent(ctx context.Context, limit int) ([]Outgoing, error) {
	if limit <= 0 {
		limit = 100
	}
	return j.outgoing(ctx, `WHERE sent_at IS NULL ORDER BY seq LIMIT ?`, limit)
}

// Messages lists every message of a job still in the outbox, sent or not, oldest first:
// what the agent said about it.
func (j *Journal) Messages(ctx context.Context, jobID string) ([]Outgoing, error) {
	return j.outgoing(ctx, `WHERE job_id = ? ORDER BY seq`, jobID)
}

func (j *Journal) outgoing(ctx context.Context, where string, args ...any) ([]Outgoing, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT seq, message_id, type, job_id, attempt, data, created_at, sent_at
		FROM outbox `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []Outgoing
	for rows.Next() {
		var o Outgoing
		var typ string
		var created int64
		var sent sql.NullInt64
		if err := rows.Scan(&o.Seq, &o.ID, &typ, &o.JobID, &o.Attempt, &o.Data, &created, &sent); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		o.Type, o.Created = protocol.MessageType(typ), time.Unix(0, created).UTC()
		if sent.Valid {
			o.Sent = time.Unix(0, sent.Int64).UTC()
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return out, nil
}

// MarkSent records that the broker confirmed the messages, in one transaction: a sender
// that published several marks them with one commit. Marking one twice is harmless.
func (j *Journal) MarkSent(ctx context.Context, messageIDs ...string) error {
	if len(messageIDs) == 0 {
		return nil
	}
	err := j.tx(ctx, func(tx *sql.Tx) error {
		now := j.stamp()
		for _, id := range messageIDs {
			res, err := tx.ExecContext(ctx, `UPDATE outbox SET sent_at = COALESCE(sent_at, ?) WHERE message_id = ?`, now, id)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				if err == nil {
					err = fmt.Errorf("no message %s in the outbox", id)
				}
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal: mark sent: %w", err)
	}
	return nil
}

// Prune deletes what no longer matters from before a time: sent messages, finished job
// attempts with their secrets, and the message IDs received (a duplicate of a message
// older than that is no longer recognised, so keep days, not minutes). It returns the
// number of rows deleted.
func (j *Journal) Prune(ctx context.Context, before time.Time) (int64, error) {
	cut := before.UTC().UnixNano()
	var total int64
	err := j.tx(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{
			`DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?`,
			`DELETE FROM secrets WHERE job_id IN (SELECT job_id FROM jobs GROUP BY job_id
				HAVING MAX(updated_at) < ? AND SUM(state NOT IN ('done', 'failed', 'cancelled', 'superseded')) = 0)`,
			`DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM jobs GROUP BY job_id
				HAVING MAX(updated_at) < ? AND SUM(state NOT IN ('done', 'failed', 'cancelled', 'superseded')) = 0)`,
			`DELETE FROM received WHERE received_at < ?`,
		} {
			res, err := tx.ExecContext(ctx, q, cut)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			total += n
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("journal: prune: %w", err)
	}
	return total, nil
}
