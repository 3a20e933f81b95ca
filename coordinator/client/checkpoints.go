package client

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"iter"
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
)

// CheckpointList is one page of kept audit checkpoints, newest first. A checkpoint
// travels as audit.Checkpoint's JSON (the AuditCheckpoint schema).
type CheckpointList struct {
	Items      []audit.Checkpoint `json:"items"`
	NextCursor string             `json:"next_cursor"`
}

// CheckpointKey is the public key audit checkpoints verify with.
type CheckpointKey struct {
	Algorithm string `json:"algorithm"`
	KeyID     string `json:"key_id"`
	PEM       string `json:"pem"`
}

// PublicKey parses the key and checks that it is the one its ID names.
func (k CheckpointKey) PublicKey() (ed25519.PublicKey, error) {
	pub, err := audit.ParseCheckpointPublicKey([]byte(k.PEM))
	if err != nil {
		return nil, err
	}
	if id := audit.CheckpointKeyID(pub); id != k.KeyID {
		return nil, fmt.Errorf("the coordinator's checkpoint key has ID %s but is named %s", id, k.KeyID)
	}
	return pub, nil
}

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
