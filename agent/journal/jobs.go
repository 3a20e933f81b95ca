package journal

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// State is where a job attempt is, as the agent sees it.
type State string

// States. received → running → awaiting_certificate → installing → done, or failed,
// cancelled, superseded.
const (
	StateReceived            State = "received"
	StateRunning             State = "running"
	StateAwaitingCertificate State = "awaiting_certificate"
	StateInstalling          State = "installing"
	StateDone                State = "done"
	StateFailed              State = "failed"
	StateCancelled           State = "cancelled"
	StateSuperseded          State = "superseded"
)

// Finished reports whether nothing more happens to an attempt in state s.
func (s State) Finished() bool {
	switch s {
	case StateDone, StateFailed, StateCancelled, StateSuperseded:
		return true
	}
	return false
}

// StepStatus says whether a step is under way or complete.
type StepStatus string

// Step statuses: a step is journalled started before it runs and done after.
const (
	StepStarted StepStatus = "started"
	StepDone    StepStatus = "done"
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

// Job is one journalled job attempt.
type Job struct {
	Ref   protocol.JobRef
	Kind  protocol.JobKind
	State State
	// Step is the executor's current step and StepStatus whether it is started or done.
	Step       string
	StepStatus StepStatus
	// TokenSerial is the token the job acts on, once known. A new attempt inherits it from
	// the previous attempt of the job.
	TokenSerial string
	// KeyID and PublicKey (PKIX DER) are the key the job generated or uses.
	KeyID     string
	PublicKey []byte
	// OldKeyID is the key a renewal replaces.
	OldKeyID string
	// The messages of the attempt, in wire form: the dispatch as received, the certificate
	// delivery and the cancel when they came, the result once produced.
	DispatchEnvelope    []byte
	CertificateEnvelope []byte
	CancelEnvelope      []byte
	ResultEnvelope      []byte
	Created, Updated    time.Time
}

// Dispatch decodes the attempt's dispatch.
func (j Job) Dispatch() (*protocol.Envelope, protocol.JobDispatch, error) {
	if j.DispatchEnvelope == nil {
		return nil, protocol.JobDispatch{}, fmt.Errorf("journal: job %s attempt %d has no dispatch", j.Ref.JobID, j.Ref.Attempt)
	}
	env, err := protocol.Decode(j.DispatchEnvelope)
	if err != nil {
		return nil, protocol.JobDispatch{}, fmt.Errorf("journal: stored dispatch: %w", err)
	}
	d, err := protocol.DecodeBody[protocol.JobDispatch](env)
	return env, d, err
}

// Delivery decodes the certificate delivered for the attempt; nil when none came yet.
func (j Job) Delivery() (*protocol.CertificateDelivery, error) {
	return decodeStored[protocol.CertificateDelivery](j.CertificateEnvelope, "certificate")
}

// Cancel decodes the cancel received for the attempt; nil when none came.
func (j Job) Cancel() (*protocol.Cancel, error) {
	return decodeStored[protocol.Cancel](j.CancelEnvelope, "cancel")
}

// Result decodes the attempt's result; nil when there is none yet.
func (j Job) Result() (*protocol.Result, error) {
	return decodeStored[protocol.Result](j.ResultEnvelope, "result")
}

// decodeStored decodes the body of a stored envelope; nil when nothing is stored.
func decodeStored[T any, PT interface {
	*T
	protocol.Body
}](data []byte, what string) (*T, error) {
	if data == nil {
		return nil, nil
	}
	env, err := protocol.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("journal: stored %s: %w", what, err)
	}
	v, err := protocol.DecodeBody[T, PT](env)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// Secret is a secret of a job (a PIN the agent generated). Applied says the token has
// it: the step that sets it is done. A secret not applied may or may not be on the token.
type Secret struct {
	Name    string
	Value   string
	Applied bool
}

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
	// Outbox are messages to send, appended in order.
	Outbox []*protocol.Envelope
	// Result is stored on the attempt and appended to the outbox after Outbox.
	Result *protocol.Envelope
}

const jobColumns = `job_id, attempt, kind, state, step, step_status, token_serial, key_id, public_key,
	old_key_id, dispatch, certificate, cancel, result, created_at, updated_at`

type rowScanner interface{ Scan(dest ...any) error }

func scanJob(r rowScanner) (Job, error) {
	var j Job
	var created, updated int64
	var kind, state, status string
	err := r.Scan(&j.Ref.JobID, &j.Ref.Attempt, &kind, &state, &j.Step, &status, &j.TokenSerial, &j.KeyID,
		&j.PublicKey, &j.OldKeyID, &j.DispatchEnvelope, &j.CertificateEnvelope, &j.CancelEnvelope,
		&j.ResultEnvelope, &created, &updated)
	if err != nil {
		return Job{}, err
	}
	j.Kind, j.State, j.StepStatus = protocol.JobKind(kind), State(state), StepStatus(status)
	j.Created, j.Updated = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	return j, nil
}

// Job returns one attempt.
func (j *Journal) Job(ctx context.Context, ref protocol.JobRef) (Job, error) {
	job, err := scanJob(j.db.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE job_id = ? AND attempt = ?`,
		ref.JobID, ref.Attempt))
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, fmt.Errorf("%w: %s attempt %d", ErrNotFound, ref.JobID, ref.Attempt)
	}
	if err != nil {
		return Job{}, fmt.Errorf("journal: %w", err)
	}
	return job, nil
}

// Latest returns the newest attempt of a job.
func (j *Journal) Latest(ctx context.Context, jobID string) (Job, error) {
	job, err := scanJob(j.db.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE job_id = ? ORDER BY attempt DESC LIMIT 1`, jobID))
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, fmt.Errorf("%w: %s", ErrNotFound, jobID)
	}
	if err != nil {
		return Job{}, fmt.Errorf("journal: %w", err)
	}
	return job, nil
}

// Pending lists the attempts not finished yet, oldest first, with their last step: what
// an executor resumes at start-up.
func (j *Journal) Pending(ctx context.Context) ([]Job, error) {
	return j.list(ctx, `SELECT `+jobColumns+` FROM jobs
		WHERE state NOT IN ('done', 'failed', 'cancelled', 'superseded') ORDER BY created_at, job_id, attempt`)
}

// Jobs lists every attempt in the journal, oldest first (for tools and tests).
func (j *Journal) Jobs(ctx context.Context) ([]Job, error) {
	return j.list(ctx, `SELECT `+jobColumns+` FROM jobs ORDER BY created_at, job_id, attempt`)
}

func (j *Journal) list(ctx context.Context, query string, args ...any) ([]Job, error) {
	rows, err := j.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []Job
	for rows.Next() {
		job, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		out = append(out, job)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return out, nil
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
			state := job.State
			if state == StateAwaitingCertificate {
				state = StateInstalling
			}
			if _, err := tx.ExecContext(ctx, `UPDATE jobs SET certificate = ?, state = ?, updated_at = ?
				WHERE job_id = ? AND attempt = ?`, data, string(state), j.stamp(), env.JobID, env.Attempt); err != nil {
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
			if _, err := tx.ExecContext(ctx, `INSERT INTO secrets (job_id, name, attempt, applied, sealed, updated_at)
				VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, name) DO UPDATE SET
				attempt = excluded.attempt, applied = excluded.applied, sealed = excluded.sealed, updated_at = excluded.updated_at`,
				ref.JobID, s.Name, ref.Attempt, s.Applied, sealed[i], now); err != nil {
				return err
			}
		}
		for _, name := range c.Applied {
			if _, err := tx.ExecContext(ctx, `UPDATE secrets SET applied = 1, updated_at = ? WHERE job_id = ? AND name = ?`,
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

// secretPlaintext seals the name with the value, so a row copied under another name
// does not open as that secret.
func secretPlaintext(name, value string) []byte {
	return []byte(name + "\x00" + value)
}

func resumeBinding(jobID string, attempt uint32) seal.Binding {
	return seal.Binding{JobID: jobID, Attempt: attempt, Purpose: protocol.PurposeAgentResume}
}

func (j *Journal) sealSecret(ref protocol.JobRef, s Secret) ([]byte, error) {
	if s.Name == "" || strings.ContainsRune(s.Name, 0) || s.Value == "" {
		return nil, fmt.Errorf("journal: secret %q: name and value are required", s.Name)
	}
	sealed, err := j.sealer.Seal(secretPlaintext(s.Name, s.Value), resumeBinding(ref.JobID, ref.Attempt))
	if err != nil {
		return nil, fmt.Errorf("journal: seal secret %q: %w", s.Name, err)
	}
	return json.Marshal(sealed)
}

// Secrets returns the job's secrets, opened with the agent's key.
func (j *Journal) Secrets(ctx context.Context, jobID string) ([]Secret, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT name, attempt, applied, sealed FROM secrets WHERE job_id = ? ORDER BY name`, jobID)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []Secret
	for rows.Next() {
		var name string
		var attempt uint32
		var applied bool
		var raw []byte
		if err := rows.Scan(&name, &attempt, &applied, &raw); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		var sealed protocol.Sealed
		if err := json.Unmarshal(raw, &sealed); err != nil {
			return nil, fmt.Errorf("journal: secret %q of job %s: %w", name, jobID, err)
		}
		plain, err := j.sealer.Open(&sealed, resumeBinding(jobID, attempt))
		if err != nil {
			return nil, fmt.Errorf("journal: secret %q of job %s: %w", name, jobID, err)
		}
		prefix := []byte(name + "\x00")
		if !bytes.HasPrefix(plain, prefix) {
			return nil, fmt.Errorf("journal: secret %q of job %s was sealed under another name", name, jobID)
		}
		out = append(out, Secret{Name: name, Value: string(plain[len(prefix):]), Applied: applied})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return out, nil
}
