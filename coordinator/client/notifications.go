package client

import (
	"context"
	"iter"
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// Notification types, as the API defines them.
type (
	Notification     = api.Notification
	NotificationList = api.NotificationList
)

// NotificationFilter selects notifications; empty fields match everything.
type NotificationFilter struct {
	State   string // pending, sent or failed
	Event   string
	Channel string // email or webhook
}

// ListNotifications lists the notifications outbox, newest first (administrators).
func (c *Client) ListNotifications(ctx context.Context, f NotificationFilter, p Page) (NotificationList, error) {
	q := p.values()
	set(q, "state", f.State)
	set(q, "event", f.Event)
	set(q, "channel", f.Channel)
	var l NotificationList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/notifications", query: q, out: &l})
	return l, err
}

// AllNotifications walks every notification f selects, page by page.
func (c *Client) AllNotifications(ctx context.Context, f NotificationFilter, pageSize int) iter.Seq2[Notification, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]Notification, string, error) {
		l, err := c.ListNotifications(ctx, f, p)
		return l.Items, l.NextCursor, err
	})
}
