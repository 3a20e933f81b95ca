package client

import (
	"context"
	"iter"
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
)

// MakeCheckpoint has the coordinator sign a checkpoint of its audit chain head now
// (admin, auditor).
func (c *Client) MakeCheckpoint(ctx context.Context) (audit.Checkpoint, error) {
	var cp audit.Checkpoint
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/audit/checkpoints", want: []int{http.StatusCreated}, out: &cp})
	return cp, err
}

// ListCheckpoints returns one page of the checkpoints the coordinator kept, newest first
// (admin, auditor).
func (c *Client) ListCheckpoints(ctx context.Context, p Page) (CheckpointList, error) {
	var l CheckpointList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/audit/checkpoints", query: p.values(), out: &l})
	return l, err
}

// AllCheckpoints yields every kept checkpoint, newest first.
func (c *Client) AllCheckpoints(ctx context.Context, pageSize int) iter.Seq2[audit.Checkpoint, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]audit.Checkpoint, string, error) {
		l, err := c.ListCheckpoints(ctx, p)
		return l.Items, l.NextCursor, err
	})
}

// CheckpointKey returns the coordinator's checkpoint public key; no token is needed. A
// key fetched from the coordinator vouches for nothing if the coordinator was taken
// over: auditors should pin a copy obtained earlier.
func (c *Client) CheckpointKey(ctx context.Context) (CheckpointKey, error) {
	var k CheckpointKey
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/audit/checkpoint-key", noAuth: true, out: &k})
	return k, err
}
