package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tokenfleet/tokenfleet/protocol"
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
