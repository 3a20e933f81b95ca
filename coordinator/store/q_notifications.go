package store

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// ---- notifications ----

const notificationCols = "id, dedupe_key, event, channel, recipient, user_id, language, subject, body, body_html, state, attempts, " +
	"next_attempt_at, lease_until, lease_owner, held, last_error, delivery_id, created_at, sent_at"

func scanNotification(r scanner) (Notification, error) {
	var n Notification
	err := r.Scan(&n.ID, &n.DedupeKey, &n.Event, &n.Channel, &n.Recipient, &n.UserID, &n.Language, &n.Subject,
		bytesCol{&n.Body}, &n.HTML, &n.State, &n.Attempts, timeCol{&n.NextAttempt}, timeCol{&n.LeaseUntil}, &n.LeaseOwner,
		&n.Held, &n.LastError, &n.DeliveryID, timeCol{&n.Created}, timeCol{&n.SentAt})
	if n.Body == nil {
		n.Body = []byte{}
	}
	return n, err
}

func (x *q) AddNotifications(ctx context.Context, ns []Notification) (int, error) {
	added := 0
	for _, n := range ns {
		what := "add notification " + n.DedupeKey
		if err := required(what, "dedupe key", n.DedupeKey, "event", n.Event, "channel", n.Channel, "recipient", n.Recipient); err != nil {
			return added, err
		}
		if n.Channel != ChannelEmail && n.Channel != ChannelWebhook {
			return added, fmt.Errorf("store: %s: channel %q is neither %s nor %s: %w", what, n.Channel, ChannelEmail, ChannelWebhook, ErrInvalid)
		}
		if n.ID == "" {
			n.ID = newID()
		} else if err := checkID(what, n.ID); err != nil {
			return added, err
		}
		if n.Body == nil {
			n.Body = []byte{}
		}
		created := orNow(n.Created)
		next := n.NextAttempt
		if next.IsZero() {
			next = created
		}
		// ON CONFLICT DO NOTHING rather than catching the unique violation: on PostgreSQL a
		// violation would abort the caller's transaction, and a repeat is normal here.
		res, err := x.exec(ctx, `INSERT INTO notifications (id, dedupe_key, event, channel, recipient, user_id, language,
				subject, body, body_html, state, next_attempt_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING`,
			n.ID, n.DedupeKey, n.Event, n.Channel, n.Recipient, n.UserID, n.Language, n.Subject, n.Body, n.HTML,
			NotificationPending, x.d.ts(next), x.d.ts(created))
		if err != nil {
			return added, x.d.wrap(what, err)
		}
		if k, _ := res.RowsAffected(); k > 0 {
			added++
		}
	}
	return added, nil
}

func (x *q) GetNotification(ctx context.Context, id string) (Notification, error) {
	n, err := scanNotification(x.queryRow(ctx, "SELECT "+notificationCols+" FROM notifications WHERE id = ?", id))
	return n, x.d.wrap("notification "+id, err)
}

func (x *q) ListNotifications(ctx context.Context, f NotificationFilter, p Page) ([]Notification, string, error) {
	const op = "list notifications"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	var w where
	for _, c := range []struct{ col, val string }{{"state", f.State}, {"event", f.Event}, {"channel", f.Channel}} {
		if c.val != "" {
			w.add(c.col+" = ?", c.val)
		}
	}
	if err := w.olderThan(x.d, p.Cursor); err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	rows, err := x.query(ctx, "SELECT "+notificationCols+" FROM notifications"+w.sql()+
		" ORDER BY created_at DESC, id DESC LIMIT ?", append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	all, err := collect(rows, x.d, op, scanNotification)
	if err != nil {
		return nil, "", err
	}
	return pageOf(all, limit, func(n Notification) string { return encodeCursor(cursorTime(n.Created), n.ID) })
}

func (x *q) NotificationDeliveries(ctx context.Context, channel, recipient string, since time.Time) (int, time.Time, error) {
	var (
		n      int
		oldest time.Time
	)
	err := x.queryRow(ctx, `SELECT COUNT(DISTINCT delivery_id), MIN(sent_at) FROM notifications
		WHERE channel = ? AND recipient = ? AND sent_at IS NOT NULL AND sent_at > ?`,
		channel, recipient, x.d.ts(orNow(since))).Scan(&n, timeCol{&oldest})
	return n, oldest, x.d.wrap("deliveries to "+recipient, err)
}

func (x *q) ClaimNotifications(ctx context.Context, c NotificationClaim) ([]Notification, error) {
	const op = "claim notifications"
	if err := required(op, "owner", c.Owner); err != nil {
		return nil, err
	}
	n, err := Page{Limit: c.Limit}.limit()
	if err != nil {
		return nil, x.d.wrap(op, err)
	}
	now := x.d.ts(orNow(c.Now))
	// On PostgreSQL, SKIP LOCKED lets two coordinators claim at once without waiting for
	// each other or taking the same rows; SQLite has one writer, so the claim is atomic
	// as it is.
	skip := ""
	if x.d.forUpdate != "" {
		skip = x.d.forUpdate + " SKIP LOCKED"
	}
	rows, err := x.query(ctx, `UPDATE notifications SET lease_until = ?, lease_owner = ?
		WHERE id IN (SELECT id FROM notifications
			WHERE state = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)
			ORDER BY next_attempt_at, id LIMIT ?`+skip+`)
		RETURNING `+notificationCols, x.d.ts(c.LeaseUntil), c.Owner, now, now, n)
	if err != nil {
		return nil, x.d.wrap(op, err)
	}
	out, err := collect(rows, x.d, op, scanNotification)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Notification) int {
		if c := a.NextAttempt.Compare(b.NextAttempt); c != 0 {
			return c
		}
		return compareStrings(a.ID, b.ID)
	})
	return out, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (x *q) MarkNotificationsSent(ctx context.Context, ids []string, deliveryID string, at time.Time) error {
	ts := x.d.ts(orNow(at))
	for chunk := range slices.Chunk(ids, batchRows) {
		what := fmt.Sprintf("mark %d notifications sent", len(chunk))
		args := make([]any, 0, len(chunk)+3)
		args = append(args, ts, deliveryID)
		for _, id := range chunk {
			args = append(args, id)
		}
		// A row sent already (by a sender whose lease had run out) keeps its first time.
		res, err := x.exec(ctx, `UPDATE notifications SET state = 'sent', sent_at = ?, delivery_id = ?, attempts = attempts + 1,
				lease_until = NULL, lease_owner = '', last_error = ''
			WHERE state <> 'sent' AND id IN (`+placeholders(len(chunk))+")", args...)
		if err != nil {
			return x.d.wrap(what, err)
		}
		if k, _ := res.RowsAffected(); k == int64(len(chunk)) {
			continue
		}
		for _, id := range chunk {
			if err := x.exists(ctx, "notification "+id, "SELECT 1 FROM notifications WHERE id = ?", id); err != nil {
				return err
			}
		}
	}
	return nil
}

func (x *q) RetryNotification(ctx context.Context, id string, next time.Time, lastError string) error {
	res, err := x.exec(ctx, `UPDATE notifications SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?,
			lease_until = NULL, lease_owner = ''
		WHERE id = ? AND state = 'pending'`, x.d.ts(orNow(next)), lastError, id)
	if err == nil {
		err = mustAffect(res)
	}
	return x.d.wrap("retry notification "+id, err)
}

func (x *q) FailNotification(ctx context.Context, id, lastError string) error {
	res, err := x.exec(ctx, `UPDATE notifications SET state = 'failed', attempts = attempts + 1, last_error = ?,
			lease_until = NULL, lease_owner = ''
		WHERE id = ? AND state = 'pending'`, lastError, id)
	if err == nil {
		err = mustAffect(res)
	}
	return x.d.wrap("fail notification "+id, err)
}

func (x *q) HoldNotifications(ctx context.Context, ids []string, until time.Time) error {
	for chunk := range slices.Chunk(ids, batchRows) {
		args := []any{x.d.ts(orNow(until))}
		for _, id := range chunk {
			args = append(args, id)
		}
		if _, err := x.exec(ctx, `UPDATE notifications SET held = true, next_attempt_at = ?, lease_until = NULL, lease_owner = ''
			WHERE state = 'pending' AND id IN (`+placeholders(len(chunk))+")", args...); err != nil {
			return x.d.wrap(fmt.Sprintf("hold %d notifications", len(chunk)), err)
		}
	}
	return nil
}

func (x *q) ReleaseNotifications(ctx context.Context, owner string, ids []string) error {
	for chunk := range slices.Chunk(ids, batchRows) {
		args := []any{owner}
		for _, id := range chunk {
			args = append(args, id)
		}
		if _, err := x.exec(ctx, `UPDATE notifications SET lease_until = NULL, lease_owner = ''
			WHERE state = 'pending' AND lease_owner = ? AND id IN (`+placeholders(len(chunk))+")", args...); err != nil {
			return x.d.wrap(fmt.Sprintf("release %d notifications", len(chunk)), err)
		}
	}
	return nil
}
