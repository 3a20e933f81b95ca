package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Change is what Update does to an attempt, in one transaction. Zero fields are left
// alone.
type Change struct {
	State      State
	Step       string
	StepStatus StepStatus
	// TokenSerial, KeyID, PublicKey and OldKeyID are recorded once known.
	TokenSerial string
	KeyID       string
	PublicKey   []byte
	OldKeyID    string
	// Secrets are stored sealed to the agent's key, replacing those of the same name.
	Secrets []Secret
	// Applied marks the named secrets applied.
	Applied []string
	// Sent marks the named secrets sent: a call that sets them on the token is about to
	// be made, and may reach it. Unsent takes the mark back once the token refused them
	// and no such call was made since.
	Sent, Unsent []string
	// Outbox are messages to send, appended in order.
	Outbox []*protocol.Envelope
	// Result is stored on the attempt and appended to the outbox after Outbox.
	Result *protocol.Envelope
}

// Update applies a change to an unfinished attempt in one transaction: state, step,
// what became known, secrets, and the messages the change causes. It fails with
// ErrFinished once the attempt is finished (for instance superseded by a newer dispatch
// meanwhile), so that an executor still working on an old attempt cannot report for it.
// Reaching done or cancelled deletes the job's secrets.
func (j *Journal) Update(ctx context.Context, ref protocol.JobRef, c Change) error {
	outbox, err := encodeAll(c)
	if err != nil {
		return err
	}
	sealed := make([][]byte, len(c.Secrets))
	for i, s := range c.Secrets {
		if sealed[i], err = j.sealSecret(ref, s); err != nil {
			return err
		}
	}
	err = j.tx(ctx, func(tx *sql.Tx) error {
		var state string
		err := tx.QueryRowContext(ctx, `SELECT state FROM jobs WHERE job_id = ? AND attempt = ?`, ref.JobID, ref.Attempt).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: %s attempt %d", ErrNotFound, ref.JobID, ref.Attempt)
		}
		if err != nil {
			return err
		}
		if State(state).Finished() {
			return fmt.Errorf("%w: %s attempt %d is %s", ErrFinished, ref.JobID, ref.Attempt, state)
		}
		now := j.stamp()
		sets := []string{"updated_at = ?"}
		args := []any{now}
		set := func(col string, v any) { sets = append(sets, col+" = ?"); args = append(args, v) }
		if c.State != "" {
			set("state", string(c.State))
		}
		if c.Step != "" {
			set("step", c.Step)
			set("step_status", string(c.StepStatus))
		}
		if c.TokenSerial != "" {
			set("token_serial", c.TokenSerial)
		}
		if c.KeyID != "" {
			set("key_id", c.KeyID)
		}
		if c.PublicKey != nil {
			set("public_key", c.PublicKey)
		}
		if c.OldKeyID != "" {
			set("old_key_id", c.OldKeyID)
		}
		if c.Result != nil {
			set("result", outbox[len(outbox)-1].data)
		}
		args = append(args, ref.JobID, ref.Attempt)
		if _, err := tx.ExecContext(ctx, `UPDATE jobs SET `+strings.Join(sets, ", ")+` WHERE job_id = ? AND attempt = ?`, args...); err != nil {
			return err
		}
		for i, s := range c.Secrets {
			if _, err := tx.ExecContext(ctx, `INSERT INTO secrets (job_id, name, attempt, applied, sent, sealed, updated_at)
				VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, name) DO UPDATE SET
				attempt = excluded.attempt, applied = excluded.applied, sent = excluded.sent, sealed = excluded.sealed,
				updated_at = excluded.updated_at`,
				ref.JobID, s.Name, ref.Attempt, s.Applied, s.Sent || s.Applied, sealed[i], now); err != nil {
				return err
			}
		}
		for _, name := range c.Unsent {
			if _, err := tx.ExecContext(ctx, `UPDATE secrets SET sent = 0, updated_at = ? WHERE job_id = ? AND name = ? AND applied = 0`,
				now, ref.JobID, name); err != nil {
				return err
			}
		}
		for _, name := range c.Sent {
			if _, err := tx.ExecContext(ctx, `UPDATE secrets SET sent = 1, updated_at = ? WHERE job_id = ? AND name = ?`,
				now, ref.JobID, name); err != nil {
				return err
			}
		}
		for _, name := range c.Applied {
			if _, err := tx.ExecContext(ctx, `UPDATE secrets SET applied = 1, sent = 1, updated_at = ? WHERE job_id = ? AND name = ?`,
				now, ref.JobID, name); err != nil {
				return err
			}
		}
		if c.State == StateDone || c.State == StateCancelled {
			if _, err := tx.ExecContext(ctx, `DELETE FROM secrets WHERE job_id = ?`, ref.JobID); err != nil {
				return err
			}
		}
		return insertOutbox(ctx, tx, outbox, now)
	})
	if err != nil {
		if errors.Is(err, ErrFinished) || errors.Is(err, ErrNotFound) {
			return err
		}
		return fmt.Errorf("journal: update %s attempt %d: %w", ref.JobID, ref.Attempt, err)
	}
	if len(outbox) > 0 {
		j.signal()
	}
	return nil
}
