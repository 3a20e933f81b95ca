package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// TokenLife returns where a token is in its life cycle, with its history.
func (c *Client) TokenLife(ctx context.Context, serial string) (TokenLife, error) {
	if err := needID("token serial", serial); err != nil {
		return TokenLife{}, err
	}
	var out TokenLife
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/tokens/" + url.PathEscape(serial) + "/life", out: &out})
	return out, err
}

// SetTokenState moves a token in its life cycle (manage_tokens): state is suspended,
// active (reinstate), lost, stolen, found, damaged or retired; reason goes to the audit log.
func (c *Client) SetTokenState(ctx context.Context, serial, state, reason string) (TokenLife, error) {
	if err := needID("token serial", serial); err != nil {
		return TokenLife{}, err
	}
	var out TokenLife
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/tokens/" + url.PathEscape(serial) + "/state",
		body: api.TokenStateChange{State: state, Reason: reason}, out: &out})
	return out, err
}

// RequestTemporaryToken queues an issue job for a temporary token standing in for the
// suspended token serial.
func (c *Client) RequestTemporaryToken(ctx context.Context, serial string, r TokenIssue) (Job, error) {
	return c.tokenIssue(ctx, serial, "temporary", r)
}

// RequestReplacement queues an issue job for a token replacing serial.
func (c *Client) RequestReplacement(ctx context.Context, serial string, r TokenIssue) (Job, error) {
	return c.tokenIssue(ctx, serial, "replace", r)
}

func (c *Client) tokenIssue(ctx context.Context, serial, what string, r TokenIssue) (Job, error) {
	if err := needID("token serial", serial); err != nil {
		return Job{}, err
	}
	var out Job
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/tokens/" + url.PathEscape(serial) + "/" + what, body: r,
		want: []int{http.StatusCreated}, out: &out})
	return out, err
}
