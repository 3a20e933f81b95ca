package brokeradmin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// defaultReason is what a closed connection's client is told when the caller gives no
// reason.
const defaultReason = "closed by the tokenfleet coordinator"

// maxReasonLen keeps the reason, after RabbitMQ's "CONNECTION_FORCED - ", within an AMQP
// short string (255 bytes).
const maxReasonLen = 200

// closeByNameWait bounds how long a connection may stay unknown to the management API's
// statistics (their interval is 5 s by default) before closing it by name gives up.
const closeByNameWait = 30 * time.Second

// closeByNamePoll is the polling interval while the statistics do not know a connection.
const closeByNamePoll = 200 * time.Millisecond

type connection struct {
	Name  string `json:"name"`
	VHost string `json:"vhost"`
}

// userConnections lists the user's connections, on every vhost. The per-user list comes
// from the broker's connection tracking, behind by milliseconds, not by the statistics
// interval.
func (c *Client) userConnections(ctx context.Context, user string) ([]connection, error) {
	var conns []connection
	if err := c.do(ctx, http.MethodGet, apiPath("connections", "username", user), nil, &conns, nil); err != nil {
		return nil, fmt.Errorf("listing its connections: %w", err)
	}
	return conns, nil
}

// CloseConnections closes every connection of the user on the vhost, telling each client
// reason (it sees "CONNECTION_FORCED - reason"), and returns how many it closed. The
// user's connections on other vhosts stay open. The broker's connection tracking learns
// of a connection asynchronously: one opened milliseconds before the call may be missed
// (RemoveAgent misses none: the broker closes a deleted user's connections itself).
func (c *Client) CloseConnections(ctx context.Context, user, reason string) (int, error) {
	n, err := c.closeConnections(ctx, user, reason)
	if err != nil {
		return n, fmt.Errorf("closing the connections of broker user %q on vhost %q: %w", user, c.vhost, err)
	}
	if n > 0 {
		c.log.Info().Str("broker_user", user).Int("connections", n).Str("reason", reason).Msg("broker connections closed")
	}
	return n, nil
}

func (c *Client) closeConnections(ctx context.Context, user, reason string) (int, error) {
	if err := checkUser(user); err != nil {
		return 0, err
	}
	conns, err := c.userConnections(ctx, user)
	if err != nil {
		return 0, err
	}
	var ours []string
	for _, conn := range conns {
		if conn.VHost == c.vhost {
			ours = append(ours, conn.Name)
		}
	}
	if len(ours) == 0 {
		return 0, nil
	}
	header := map[string]string{"X-Reason": cleanReason(reason)}
	onlyHere, err := c.onlyThisVhost(ctx, user)
	if err != nil {
		return 0, err
	}
	if onlyHere {
		// The user may open connections on this vhost only (as every agent user): one
		// request closes them all at once through the connection tracking, where closing
		// by name would wait for the statistics to learn of a new connection. The
		// permissions, not the tracked list, say that no other vhost is concerned: the
		// tracking learns of opened and closed connections asynchronously.
		if err := c.do(ctx, http.MethodDelete, apiPath("connections", "username", user), nil, nil, header); err != nil {
			return 0, err
		}
		return len(ours), nil
	}
	closed := 0
	for _, name := range ours {
		ok, err := c.closeByName(ctx, user, name, header)
		if err != nil {
			return closed, err
		}
		if ok {
			closed++
		}
	}
	return closed, nil
}

// onlyThisVhost says whether the user has permissions on no other vhost than the
// client's, so that all its connections are on this vhost.
func (c *Client) onlyThisVhost(ctx context.Context, user string) (bool, error) {
	var perms []struct {
		VHost string `json:"vhost"`
	}
	if err := c.do(ctx, http.MethodGet, apiPath("users", user, "permissions"), nil, &perms, nil); err != nil && !errors.Is(err, ErrNotFound) {
		return false, fmt.Errorf("listing its permissions: %w", err)
	}
	for _, p := range perms {
		if p.VHost != c.vhost {
			return false, nil
		}
	}
	return true, nil
}

// closeByName closes one connection by name, reporting false when it closed by itself
// first. The API finds a connection by name through its statistics, which learn of it up
// to their interval after it opened: until then it answers 404, and closeByName retries
// while the connection tracking still lists the connection.
func (c *Client) closeByName(ctx context.Context, user, name string, header map[string]string) (bool, error) {
	deadline := time.Now().Add(closeByNameWait)
	for {
		err := c.do(ctx, http.MethodDelete, apiPath("connections", name), nil, nil, header)
		if err == nil {
			return true, nil
		}
		// 500: the connection ended while the API was closing it (seen on a busy broker).
		var ae *APIError
		if !errors.As(err, &ae) || (ae.Status != http.StatusNotFound && ae.Status != http.StatusInternalServerError) {
			return false, fmt.Errorf("closing connection %q: %w", name, err)
		}
		conns, lerr := c.userConnections(ctx, user)
		if lerr != nil {
			return false, lerr
		}
		if !slices.ContainsFunc(conns, func(x connection) bool { return x.Name == name }) {
			return false, nil
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("closing connection %q: the management API's statistics have not known it for %v: %w", name, closeByNameWait, err)
		}
		t := time.NewTimer(closeByNamePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, fmt.Errorf("closing connection %q: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// cleanReason makes reason fit an HTTP header and an AMQP short string: printable ASCII,
// at most maxReasonLen bytes.
func cleanReason(reason string) string {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return defaultReason
	}
	b := make([]byte, 0, min(len(reason), maxReasonLen))
	for _, r := range reason {
		if len(b) == maxReasonLen {
			break
		}
		if r < 0x20 || r > 0x7e {
			r = '?'
		}
		b = append(b, byte(r))
	}
	return string(b)
}
