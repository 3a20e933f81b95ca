package store

import (
	"context"
	"fmt"
	"strconv"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
)

const checkpointCols = "id, seq, hash, at, key_id, signature"

func scanCheckpoint(r scanner) (keptCheckpoint, error) {
	var k keptCheckpoint
	err := r.Scan(&k.id, &k.c.Seq, &k.c.Hash, timeCol{&k.c.Time}, &k.c.KeyID, bytesCol{&k.c.Signature})
	return k, err
}

// keptCheckpoint is a checkpoint with its row ID, the list's sort key.
type keptCheckpoint struct {
	id int64
	c  audit.Checkpoint
}

func (x *q) AddAuditCheckpoint(ctx context.Context, c audit.Checkpoint) error {
	what := "add audit checkpoint of entry " + strconv.FormatInt(c.Seq, 10)
	if err := required(what, "hash", c.Hash, "key ID", c.KeyID); err != nil {
		return err
	}
	switch {
	case c.Seq < 0:
		return fmt.Errorf("store: %s: negative sequence number: %w", what, ErrInvalid)
	case len(c.Signature) == 0:
		return fmt.Errorf("store: %s: no signature: %w", what, ErrInvalid)
	case c.Time.IsZero() || c.Time != normTime(c.Time):
		// The signature covers the time: one the store cannot keep exactly would not verify
		// once read back.
		return fmt.Errorf("store: %s: time %v is not UTC in whole microseconds: %w", what, c.Time, ErrInvalid)
	}
	_, err := x.exec(ctx, "INSERT INTO audit_checkpoints (seq, hash, at, key_id, signature) VALUES (?, ?, ?, ?, ?)",
		c.Seq, c.Hash, x.d.ts(c.Time), c.KeyID, c.Signature)
	return x.d.wrap(what, err)
}

func (x *q) ListAuditCheckpoints(ctx context.Context, p Page) ([]audit.Checkpoint, string, error) {
	const op = "list audit checkpoints"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	var w where
	if p.Cursor != "" {
		c, err := decodeCursor(p.Cursor, 1)
		if err != nil {
			return nil, "", x.d.wrap(op, err)
		}
		before, err := strconv.ParseInt(c[0], 10, 64)
		if err != nil {
			return nil, "", x.d.wrap(op, fmt.Errorf("malformed page cursor: %w", ErrInvalid))
		}
		w.add("id < ?", before)
	}
	rows, err := x.query(ctx, "SELECT "+checkpointCols+" FROM audit_checkpoints"+w.sql()+" ORDER BY id DESC LIMIT ?", append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	kept, err := collect(rows, x.d, op, scanCheckpoint)
	if err != nil {
		return nil, "", err
	}
	kept, next, err := pageOf(kept, limit, func(k keptCheckpoint) string { return encodeCursor(strconv.FormatInt(k.id, 10)) })
	out := make([]audit.Checkpoint, len(kept))
	for i, k := range kept {
		out[i] = k.c
	}
	return out, next, err
}
