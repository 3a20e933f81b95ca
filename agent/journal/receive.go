package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Disposition is what the journal made of a received message.
type Disposition string

// Dispositions. Every one of them means the message is safely journalled or safely
// dropped: ack it.
const (
	// Accepted: new, and journalled.
	Accepted Disposition = "accepted"
	// Duplicate: this message ID (or, for a dispatch, this attempt) was received before.
	Duplicate Disposition = "duplicate"
	// Stale: for an older attempt than the newest the journal knows.
	Stale Disposition = "stale"
	// Ignored: nothing to apply it to (the attempt has finished, is unknown, or does not
	// take such a message); Receipt.Reason says which.
	Ignored Disposition = "ignored"
)

// Receipt is the journal's answer to a received message.
type Receipt struct {
	Disposition Disposition
	Job         protocol.JobRef
	// Superseded lists the older attempts of the job a dispatch stopped.
	Superseded []protocol.JobRef
	// Reason explains Ignored.
	Reason string
}

// received records a message ID; it reports false when the ID was seen before.
func (j *Journal) received(ctx context.Context, tx *sql.Tx, env *protocol.Envelope, d Disposition) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO received (message_id, type, job_id, attempt, disposition, received_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING`,
		env.ID, string(env.Type), env.JobID, env.Attempt, string(d), j.stamp())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// seen reports whether the message ID was received before.
func seen(ctx context.Context, tx *sql.Tx, id string) (bool, error) {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM received WHERE message_id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// newestAttempt returns the highest attempt of the job in the journal, 0 if none.
func newestAttempt(ctx context.Context, tx *sql.Tx, jobID string) (uint32, error) {
	var n sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(attempt) FROM jobs WHERE job_id = ?`, jobID).Scan(&n); err != nil {
		return 0, err
	}
	return uint32(n.Int64), nil
}

func checkEnvelope(env *protocol.Envelope, want protocol.MessageType) ([]byte, error) {
	if env == nil {
		return nil, errors.New("journal: nil envelope")
	}
	if env.Type != want {
		return nil, protocol.NewError(protocol.CodeBadRequest, "journal: a %s message, want %s", env.Type, want)
	}
	// The stored form is the canonical encoding, checked as a receiver checks it.
	return protocol.Encode(env)
}

// record journals a message in one transaction: a message ID seen before is a duplicate
// and fn does not run; otherwise fn records it and sets the receipt's disposition. data is
// the message's canonical encoding, checked as a receiver checks it.
func (j *Journal) record(ctx context.Context, env *protocol.Envelope, typ protocol.MessageType, what string,
	fn func(tx *sql.Tx, data []byte, rc *Receipt) error) (Receipt, error) {
	data, err := checkEnvelope(env, typ)
	if err != nil {
		return Receipt{}, err
	}
	rc := Receipt{Job: env.Job()}
	err = j.tx(ctx, func(tx *sql.Tx) error {
		if dup, err := seen(ctx, tx, env.ID); err != nil || dup {
			rc.Disposition = Duplicate
			return err
		}
		return fn(tx, data, &rc)
	})
	if err != nil {
		return Receipt{}, fmt.Errorf("journal: record %s %s: %w", what, env.ID, err)
	}
	return rc, nil
}

// RecordDispatch journals a dispatch before it is acked. A new attempt of a job
// supersedes the older ones still unfinished (their executor must stop; see
// Receipt.Superseded) and inherits the token serial the job last used.
func (j *Journal) RecordDispatch(ctx context.Context, env *protocol.Envelope) (Receipt, error) {
	return j.record(ctx, env, protocol.TypeDispatch, "dispatch", func(tx *sql.Tx, data []byte, rc *Receipt) error {
		d, err := protocol.DecodeBody[protocol.JobDispatch](env)
		if err != nil {
			return err
		}
		newest, err := newestAttempt(ctx, tx, env.JobID)
		if err != nil {
			return err
		}
		switch {
		case env.Attempt < newest:
			rc.Disposition = Stale
		case env.Attempt == newest:
			// The attempt is known: from another copy of the dispatch, or a cancel that
			// came first and left a tombstone.
			rc.Disposition, rc.Reason = Duplicate, "this attempt is journalled already"
		default:
			rc.Disposition = Accepted
		}
		if rc.Disposition != Accepted {
			_, err := j.received(ctx, tx, env, rc.Disposition)
			return err
		}
		now := j.stamp()
		if rc.Superseded, err = j.supersede(ctx, tx, env.JobID, now); err != nil {
			return err
		}
		var serial string
		err = tx.QueryRowContext(ctx, `SELECT token_serial FROM jobs WHERE job_id = ? AND token_serial != ''
			ORDER BY attempt DESC LIMIT 1`, env.JobID).Scan(&serial)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO jobs (job_id, attempt, kind, dispatch, state, token_serial, created_at, updated_at)
			VALUES (?, ?, ?, ?, 'received', ?, ?, ?)`,
			env.JobID, env.Attempt, string(d.Kind), data, serial, now, now); err != nil {
			return err
		}
		_, err = j.received(ctx, tx, env, Accepted)
		return err
	})
}

// RecordCertificate journals the certificate delivered for an attempt's CSR. An attempt
// awaiting it moves to installing. The first delivery counts; a second one for the same
// attempt is a duplicate.
func (j *Journal) RecordCertificate(ctx context.Context, env *protocol.Envelope) (Receipt, error) {
	return j.RecordCertificateAndBegin(ctx, env, "")
}

// RecordCertificateAndBegin is RecordCertificate that, when the attempt moves from
// awaiting the certificate to installing, also journals step as started in the same
// commit: the step that writes the certificate, which then needs no commit of its own
// before its token write. An empty step leaves the step as it was.
func (j *Journal) RecordCertificateAndBegin(ctx context.Context, env *protocol.Envelope, step string) (Receipt, error) {
	return j.record(ctx, env, protocol.TypeCertificate, "certificate", func(tx *sql.Tx, data []byte, rc *Receipt) error {
		job, err := j.attemptForMessage(ctx, tx, env, rc)
		if err != nil || rc.Disposition != "" {
			if err == nil {
				_, err = j.received(ctx, tx, env, rc.Disposition)
			}
			return err
		}
		switch {
		case job.Kind != protocol.KindIssue && job.Kind != protocol.KindRenew:
			rc.Disposition, rc.Reason = Ignored, fmt.Sprintf("a %s job takes no certificate delivery", job.Kind)
		case job.CertificateEnvelope != nil:
			rc.Disposition, rc.Reason = Duplicate, "a certificate was delivered for this attempt already"
		default:
			rc.Disposition = Accepted
			state, stepName, status := job.State, job.Step, job.StepStatus
			if state == StateAwaitingCertificate {
				state = StateInstalling
				if step != "" {
					stepName, status = step, StepStarted
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE jobs SET certificate = ?, state = ?, step = ?, step_status = ?, updated_at = ?
				WHERE job_id = ? AND attempt = ?`, data, string(state), stepName, string(status), j.stamp(), env.JobID, env.Attempt); err != nil {
				return err
			}
		}
		_, err = j.received(ctx, tx, env, rc.Disposition)
		return err
	})
}

// RecordCancel journals a cancel. For an attempt not received yet it leaves a cancelled
// tombstone, so that its dispatch, if it still comes, is not started.
func (j *Journal) RecordCancel(ctx context.Context, env *protocol.Envelope) (Receipt, error) {
	return j.record(ctx, env, protocol.TypeCancel, "cancel", func(tx *sql.Tx, data []byte, rc *Receipt) error {
		newest, err := newestAttempt(ctx, tx, env.JobID)
		if err != nil {
			return err
		}
		if env.Attempt > newest {
			now := j.stamp()
			if rc.Superseded, err = j.supersede(ctx, tx, env.JobID, now); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO jobs (job_id, attempt, kind, state, cancel, created_at, updated_at)
				VALUES (?, ?, '', 'cancelled', ?, ?, ?)`, env.JobID, env.Attempt, data, now, now); err != nil {
				return err
			}
			rc.Disposition = Accepted
			_, err := j.received(ctx, tx, env, rc.Disposition)
			return err
		}
		job, err := j.attemptForMessage(ctx, tx, env, rc)
		if err != nil || rc.Disposition != "" {
			if err == nil {
				_, err = j.received(ctx, tx, env, rc.Disposition)
			}
			return err
		}
		rc.Disposition = Accepted
		if job.CancelEnvelope == nil {
			if _, err := tx.ExecContext(ctx, `UPDATE jobs SET cancel = ?, updated_at = ? WHERE job_id = ? AND attempt = ?`,
				data, j.stamp(), env.JobID, env.Attempt); err != nil {
				return err
			}
		}
		_, err = j.received(ctx, tx, env, rc.Disposition)
		return err
	})
}

// supersede finishes the job's unfinished attempts, a newer one having come, and lists
// them.
func (j *Journal) supersede(ctx context.Context, tx *sql.Tx, jobID string, now int64) ([]protocol.JobRef, error) {
	rows, err := tx.QueryContext(ctx, `UPDATE jobs SET state = 'superseded', updated_at = ? WHERE job_id = ?
		AND state NOT IN ('done', 'failed', 'cancelled', 'superseded') RETURNING attempt`, now, jobID)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []protocol.JobRef
	for rows.Next() {
		var a uint32
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		out = append(out, protocol.JobRef{JobID: jobID, Attempt: a})
	}
	return out, rows.Err()
}

// attemptForMessage finds the attempt a certificate or cancel is for, setting
// rc.Disposition when the message does not apply (stale, unknown, finished).
func (j *Journal) attemptForMessage(ctx context.Context, tx *sql.Tx, env *protocol.Envelope, rc *Receipt) (Job, error) {
	newest, err := newestAttempt(ctx, tx, env.JobID)
	if err != nil {
		return Job{}, err
	}
	if env.Attempt < newest {
		rc.Disposition = Stale
		return Job{}, nil
	}
	job, err := scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE job_id = ? AND attempt = ?`,
		env.JobID, env.Attempt))
	if errors.Is(err, sql.ErrNoRows) {
		rc.Disposition, rc.Reason = Ignored, "no such job attempt in the journal"
		return Job{}, nil
	}
	if err != nil {
		return Job{}, err
	}
	if job.State.Finished() {
		rc.Disposition, rc.Reason = Ignored, fmt.Sprintf("the attempt is %s", job.State)
	}
	return job, nil
}
