package store

import (
	"bytes"
	"context"
	"fmt"
	"time"
)

// ---- job attempts: what the dispatcher records ----

const attemptCols = "job_id, attempt, started_at, dispatch_message_id, waiting_reason, public_key, csr, csr_at, token_serial, reinitialised, result_message_id, result_summary"

func scanAttempt(r scanner) (JobAttempt, error) {
	var a JobAttempt
	err := r.Scan(&a.JobID, &a.Attempt, timeCol{&a.Started}, &a.DispatchMessageID, &a.WaitingReason,
		bytesCol{&a.PublicKey}, bytesCol{&a.CSR}, timeCol{&a.CSRAccepted}, &a.TokenSerial, &a.Reinitialised, &a.ResultMessageID, &a.ResultSummary)
	return a, err
}

func attemptName(jobID string, attempt int) string {
	return fmt.Sprintf("job %s attempt %d", jobID, attempt)
}

func (x *q) GetJobAttempt(ctx context.Context, jobID string, attempt int) (JobAttempt, error) {
	a, err := scanAttempt(x.queryRow(ctx, "SELECT "+attemptCols+" FROM job_attempts WHERE job_id = ? AND attempt = ?", jobID, attempt))
	return a, x.d.wrap(attemptName(jobID, attempt), err)
}

// lockAttempt reads an attempt inside a transaction, locking its row on PostgreSQL so that
// set-once columns are decided by one writer at a time.
func (x *q) lockAttempt(ctx context.Context, what, jobID string, attempt int) (JobAttempt, error) {
	a, err := scanAttempt(x.queryRow(ctx, "SELECT "+attemptCols+" FROM job_attempts WHERE job_id = ? AND attempt = ?"+x.d.forUpdate, jobID, attempt))
	return a, x.d.wrap(what, err)
}

func (x *q) RecordAttemptDispatch(ctx context.Context, jobID string, attempt int, messageID string) error {
	what := attemptName(jobID, attempt) + " dispatch"
	if err := required(what, "job ID", jobID, "message ID", messageID); err != nil {
		return err
	}
	// The condition makes the write set-once without a read: a concurrent second dispatch
	// matches no row.
	res, err := x.exec(ctx, `UPDATE job_attempts SET dispatch_message_id = ?, waiting_reason = ''
		WHERE job_id = ? AND attempt = ? AND dispatch_message_id = ''`, messageID, jobID, attempt)
	if err != nil {
		return x.d.wrap(what, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		a, err := x.GetJobAttempt(ctx, jobID, attempt)
		if err != nil {
			return err
		}
		return fmt.Errorf("store: %s: already dispatched as message %s: %w", what, a.DispatchMessageID, ErrConflict)
	}
	return nil
}

func (x *q) SetAttemptWaiting(ctx context.Context, jobID string, attempt int, reason string) (bool, error) {
	what := attemptName(jobID, attempt) + " waiting"
	res, err := x.exec(ctx, `UPDATE job_attempts SET waiting_reason = ? WHERE job_id = ? AND attempt = ? AND waiting_reason <> ?`,
		reason, jobID, attempt, reason)
	if err != nil {
		return false, x.d.wrap(what, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return true, nil
	}
	return false, x.exists(ctx, attemptName(jobID, attempt), "SELECT 1 FROM job_attempts WHERE job_id = ? AND attempt = ?", jobID, attempt)
}

func (x *q) RecordAttemptKey(ctx context.Context, jobID string, attempt int, publicKey []byte) error {
	what := attemptName(jobID, attempt) + " key"
	if len(publicKey) == 0 {
		return fmt.Errorf("store: %s: public key is required: %w", what, ErrInvalid)
	}
	a, err := x.lockAttempt(ctx, what, jobID, attempt)
	if err != nil {
		return err
	}
	switch {
	case bytes.Equal(a.PublicKey, publicKey):
		return nil
	case len(a.PublicKey) != 0:
		return fmt.Errorf("store: %s: another key was reported first: %w", what, ErrConflict)
	}
	_, err = x.exec(ctx, "UPDATE job_attempts SET public_key = ? WHERE job_id = ? AND attempt = ?", publicKey, jobID, attempt)
	return x.d.wrap(what, err)
}

func (x *q) RecordAttemptCSR(ctx context.Context, jobID string, attempt int, csr []byte, at time.Time) error {
	what := attemptName(jobID, attempt) + " CSR"
	if len(csr) == 0 {
		return fmt.Errorf("store: %s: CSR is required: %w", what, ErrInvalid)
	}
	res, err := x.exec(ctx, "UPDATE job_attempts SET csr = ?, csr_at = ? WHERE job_id = ? AND attempt = ? AND csr IS NULL",
		csr, x.d.ts(orNow(at)), jobID, attempt)
	if err != nil {
		return x.d.wrap(what, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if err := x.exists(ctx, attemptName(jobID, attempt), "SELECT 1 FROM job_attempts WHERE job_id = ? AND attempt = ?", jobID, attempt); err != nil {
			return err
		}
		return fmt.Errorf("store: %s: a CSR was already accepted for this attempt: %w", what, ErrConflict)
	}
	return nil
}

// ---- token PINs ----

const tokenPINCols = "id, token_serial, purpose, job_id, attempt, sealed, recorded_at, revealed_at"

func scanTokenPIN(r scanner) (TokenPIN, error) {
	var p TokenPIN
	err := r.Scan(&p.ID, &p.TokenSerial, &p.Purpose, &p.JobID, &p.Attempt, bytesCol{(*[]byte)(&p.Sealed)},
		timeCol{&p.Recorded}, timeCol{&p.Revealed})
	return p, err
}

func (x *q) AddTokenPIN(ctx context.Context, p TokenPIN) (TokenPIN, error) {
	what := fmt.Sprintf("token %s %s", p.TokenSerial, p.Purpose)
	if err := required("add "+what, "token serial", p.TokenSerial, "purpose", p.Purpose, "job ID", p.JobID); err != nil {
		return TokenPIN{}, err
	}
	if p.Purpose != PINPurposeUser && p.Purpose != PINPurposeSO {
		return TokenPIN{}, fmt.Errorf("store: add %s: unknown purpose: %w", what, ErrInvalid)
	}
	if p.Attempt < 1 {
		return TokenPIN{}, fmt.Errorf("store: add %s: attempt %d: attempts start at 1: %w", what, p.Attempt, ErrInvalid)
	}
	if len(p.Sealed) == 0 {
		return TokenPIN{}, fmt.Errorf("store: add %s: the sealed PIN is required: %w", what, ErrInvalid)
	}
	if err := checkJSON("add "+what, p.Sealed); err != nil {
		return TokenPIN{}, err
	}
	row := x.queryRow(ctx, `INSERT INTO token_pins (token_serial, purpose, job_id, attempt, sealed, recorded_at)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (job_id, attempt, purpose) DO NOTHING RETURNING `+tokenPINCols,
		p.TokenSerial, p.Purpose, p.JobID, p.Attempt, string(p.Sealed), x.d.ts(orNow(p.Recorded)))
	out, err := scanTokenPIN(row)
	if isNoRows(err) {
		return TokenPIN{}, fmt.Errorf("store: add %s: job %s attempt %d already recorded one: %w", what, p.JobID, p.Attempt, ErrConflict)
	}
	return out, x.d.wrap("add "+what, err)
}

func (x *q) GetTokenPIN(ctx context.Context, tokenSerial, purpose string) (TokenPIN, error) {
	p, err := scanTokenPIN(x.queryRow(ctx, "SELECT "+tokenPINCols+` FROM token_pins
		WHERE token_serial = ? AND purpose = ? ORDER BY id DESC LIMIT 1`, tokenSerial, purpose))
	return p, x.d.wrap(fmt.Sprintf("token %s %s", tokenSerial, purpose), err)
}

func (x *q) MarkTokenPINRevealed(ctx context.Context, id int64, at time.Time) error {
	what := fmt.Sprintf("token PIN %d revealed", id)
	res, err := x.exec(ctx, "UPDATE token_pins SET revealed_at = ? WHERE id = ? AND revealed_at IS NULL", x.d.ts(orNow(at)), id)
	if err != nil {
		return x.d.wrap(what, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if err := x.exists(ctx, fmt.Sprintf("token PIN %d", id), "SELECT 1 FROM token_pins WHERE id = ?", id); err != nil {
			return err
		}
		return fmt.Errorf("store: %s: already revealed once: %w", what, ErrConflict)
	}
	return nil
}

func (x *q) RecordAttemptToken(ctx context.Context, jobID string, attempt int, serial string) error {
	what := attemptName(jobID, attempt) + " token"
	if err := required(what, "token serial", serial); err != nil {
		return err
	}
	a, err := x.lockAttempt(ctx, what, jobID, attempt)
	if err != nil {
		return err
	}
	switch a.TokenSerial {
	case serial:
		return nil
	case "":
	default:
		return fmt.Errorf("store: %s: the attempt works on token %s, not %s: %w", what, a.TokenSerial, serial, ErrConflict)
	}
	_, err = x.exec(ctx, "UPDATE job_attempts SET token_serial = ? WHERE job_id = ? AND attempt = ?", serial, jobID, attempt)
	return x.d.wrap(what, err)
}

func (x *q) MarkAttemptReinitialised(ctx context.Context, jobID string, attempt int) error {
	what := attemptName(jobID, attempt) + " re-initialisation"
	res, err := x.exec(ctx, "UPDATE job_attempts SET reinitialised = ? WHERE job_id = ? AND attempt = ?", true, jobID, attempt)
	if err != nil {
		return x.d.wrap(what, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store: %s: %w", what, ErrNotFound)
	}
	return nil
}

func (x *q) RecordAttemptResult(ctx context.Context, jobID string, attempt int, messageID, summary string) error {
	what := attemptName(jobID, attempt) + " result"
	if err := required(what, "message ID", messageID); err != nil {
		return err
	}
	a, err := x.lockAttempt(ctx, what, jobID, attempt)
	if err != nil {
		return err
	}
	switch a.ResultMessageID {
	case messageID:
		return nil
	case "":
	default:
		return fmt.Errorf("store: %s: result %s was taken already: %w", what, a.ResultMessageID, ErrConflict)
	}
	_, err = x.exec(ctx, "UPDATE job_attempts SET result_message_id = ?, result_summary = ? WHERE job_id = ? AND attempt = ?",
		messageID, summary, jobID, attempt)
	return x.d.wrap(what, err)
}
