package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// ---- outbox ----

const outboxCols = "id, message_id, exchange, routing_key, type, correlation_id, body, headers, created_at, sent_at, attempts, last_error"

func scanOutbox(r scanner) (OutboxMessage, error) {
	var m OutboxMessage
	err := r.Scan(&m.ID, &m.MessageID, &m.Exchange, &m.RoutingKey, &m.Type, &m.CorrelationID,
		bytesCol{&m.Body}, bytesCol{(*[]byte)(&m.Headers)}, timeCol{&m.Created}, timeCol{&m.SentAt},
		&m.Attempts, &m.LastError)
	if m.Body == nil {
		m.Body = []byte{}
	}
	return m, err
}

func (x *q) AddOutbox(ctx context.Context, m OutboxMessage) (OutboxMessage, error) {
	what := "add outbox " + m.Type
	if err := required(what, "exchange", m.Exchange, "routing key", m.RoutingKey, "type", m.Type); err != nil {
		return OutboxMessage{}, err
	}
	if err := checkJSON(what+" headers", m.Headers); err != nil {
		return OutboxMessage{}, err
	}
	if m.MessageID == "" {
		m.MessageID = newID()
	}
	if m.Body == nil {
		m.Body = []byte{}
	}
	row := x.queryRow(ctx, `INSERT INTO outbox (message_id, exchange, routing_key, type, correlation_id, body, headers, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING `+outboxCols,
		m.MessageID, m.Exchange, m.RoutingKey, m.Type, m.CorrelationID, m.Body, nullText(m.Headers),
		x.d.ts(orNow(m.Created)))
	out, err := scanOutbox(row)
	return out, x.d.wrap(what+" "+m.MessageID, err)
}

func (x *q) ListUnsentOutbox(ctx context.Context, limit int) ([]OutboxMessage, error) {
	n, err := Page{Limit: limit}.limit()
	if err != nil {
		return nil, x.d.wrap("list unsent outbox", err)
	}
	// Oldest first: ids grow with insertion.
	rows, err := x.query(ctx, "SELECT "+outboxCols+" FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?", n)
	if err != nil {
		return nil, x.d.wrap("list unsent outbox", err)
	}
	return collect(rows, x.d, "list unsent outbox", scanOutbox)
}

func (x *q) GetOutbox(ctx context.Context, id int64) (OutboxMessage, error) {
	m, err := scanOutbox(x.queryRow(ctx, "SELECT "+outboxCols+" FROM outbox WHERE id = ?", id))
	return m, x.d.wrap("outbox "+strconv.FormatInt(id, 10), err)
}

func (x *q) MarkOutboxSent(ctx context.Context, id int64, at time.Time) error {
	what := "outbox " + strconv.FormatInt(id, 10)
	res, err := x.exec(ctx, "UPDATE outbox SET sent_at = ? WHERE id = ? AND sent_at IS NULL", x.d.ts(orNow(at)), id)
	if err != nil {
		return x.d.wrap("mark "+what+" sent", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return x.exists(ctx, what, "SELECT 1 FROM outbox WHERE id = ?", id)
	}
	return nil
}

func (x *q) MarkOutboxesSent(ctx context.Context, ids []int64, at time.Time) error {
	if len(ids) == 1 {
		return x.MarkOutboxSent(ctx, ids[0], at)
	}
	ts := x.d.ts(orNow(at))
	for chunk := range slices.Chunk(ids, batchRows) {
		what := fmt.Sprintf("mark %d outbox messages sent", len(chunk))
		args := int64Args(chunk)
		res, err := x.exec(ctx, "UPDATE outbox SET sent_at = ? WHERE sent_at IS NULL AND id IN ("+placeholders(len(chunk))+")",
			append([]any{ts}, args...)...)
		if err != nil {
			return x.d.wrap(what, err)
		}
		if n, _ := res.RowsAffected(); n == int64(len(chunk)) {
			continue
		}
		// Some were sent already, which is no error, or do not exist, which is.
		rows, err := x.query(ctx, "SELECT id FROM outbox WHERE id IN ("+placeholders(len(chunk))+")", args...)
		if err != nil {
			return x.d.wrap(what, err)
		}
		found, err := collect(rows, x.d, what, func(r scanner) (int64, error) {
			var id int64
			err := r.Scan(&id)
			return id, err
		})
		if err != nil {
			return err
		}
		for _, id := range chunk {
			if !slices.Contains(found, id) {
				return fmt.Errorf("store: outbox %d: %w", id, ErrNotFound)
			}
		}
	}
	return nil
}

func (x *q) RecordOutboxFailure(ctx context.Context, id int64, reason string) error {
	res, err := x.exec(ctx, "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?", reason, id)
	if err == nil {
		err = mustAffect(res)
	}
	return x.d.wrap(fmt.Sprintf("outbox %d failure", id), err)
}

func (x *q) PurgeSentOutbox(ctx context.Context, sentBefore time.Time) (int64, error) {
	res, err := x.exec(ctx, "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", x.d.ts(orNow(sentBefore)))
	if err != nil {
		return 0, x.d.wrap("purge outbox", err)
	}
	n, err := res.RowsAffected()
	return n, x.d.wrap("purge outbox", err)
}

// ---- inbox ----

func (x *q) RecordInbox(ctx context.Context, e InboxEntry) (bool, error) {
	if err := required("record inbox", "message ID", e.MessageID); err != nil {
		return false, err
	}
	// ON CONFLICT DO NOTHING rather than catching the unique violation: on PostgreSQL a
	// violation would abort the caller's transaction, and a duplicate is normal here.
	res, err := x.exec(ctx, `INSERT INTO inbox (message_id, received_at, job_id, result) VALUES (?, ?, ?, ?)
		ON CONFLICT (message_id) DO NOTHING`, e.MessageID, x.d.ts(orNow(e.Received)), e.JobID, e.Result)
	if err != nil {
		return false, x.d.wrap("record inbox "+e.MessageID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, x.d.wrap("record inbox "+e.MessageID, err)
	}
	return n == 0, nil
}

func (x *q) GetInbox(ctx context.Context, messageID string) (InboxEntry, error) {
	var e InboxEntry
	err := x.queryRow(ctx, "SELECT message_id, received_at, job_id, result FROM inbox WHERE message_id = ?", messageID).
		Scan(&e.MessageID, timeCol{&e.Received}, &e.JobID, &e.Result)
	return e, x.d.wrap("inbox "+messageID, err)
}

func (x *q) PurgeInbox(ctx context.Context, receivedBefore time.Time) (int64, error) {
	res, err := x.exec(ctx, "DELETE FROM inbox WHERE received_at < ?", x.d.ts(orNow(receivedBefore)))
	if err != nil {
		return 0, x.d.wrap("purge inbox", err)
	}
	n, err := res.RowsAffected()
	return n, x.d.wrap("purge inbox", err)
}
