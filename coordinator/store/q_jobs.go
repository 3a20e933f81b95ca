package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// toStrings turns typed names into query arguments.
func toStrings[T ~string](in []T) []string {
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = string(v)
	}
	return out
}

// ---- jobs ----

const jobCols = "id, kind, state, state_since, holder_id, profile_name, profile_hash, agent_id, token_serial, requester_id, organisation_id, binding_hash, attempt, step_current, step_highest, deadline, created_at, updated_at, error_code, error_message, superseded_by, version, idempotency_key, request_hash, rollout_id, document_number, document_date"

func scanJob(r scanner) (Job, error) {
	var j Job
	err := r.Scan(&j.ID, &j.Kind, &j.State, timeCol{&j.StateSince}, strCol{&j.HolderID}, &j.ProfileName, &j.ProfileHash,
		strCol{&j.AgentID}, strCol{&j.TokenSerial}, &j.RequesterID, strCol{&j.OrganizationID},
		&j.BindingHash, &j.Attempt, &j.Progress.Current, &j.Progress.Highest, timeCol{&j.Deadline},
		timeCol{&j.Created}, timeCol{&j.Updated}, &j.ErrorCode, &j.ErrorMessage, strCol{&j.SupersededBy}, &j.Version,
		strCol{&j.IdempotencyKey}, &j.RequestHash, strCol{&j.RolloutID}, &j.Document.Number, &j.Document.Date)
	return j, err
}

func (x *q) CreateJob(ctx context.Context, j Job) (Job, error) {
	if j.ID == "" {
		j.ID = newID()
	} else if err := checkID("create job", j.ID); err != nil {
		return Job{}, err
	}
	what := "create job " + j.ID
	if err := required(what, "kind", string(j.Kind), "state", string(j.State), "requester", j.RequesterID); err != nil {
		return Job{}, err
	}
	j.Created = orNow(j.Created)
	row := x.queryRow(ctx, `INSERT INTO jobs (id, kind, state, state_since, holder_id, profile_name, profile_hash, agent_id,
			token_serial, requester_id, organisation_id, binding_hash, attempt, deadline, created_at, updated_at,
			error_code, error_message, superseded_by, version, idempotency_key, request_hash, rollout_id,
			document_number, document_date)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?) RETURNING `+jobCols,
		j.ID, string(j.Kind), string(j.State), x.d.ts(j.Created), nullStr(j.HolderID), j.ProfileName, j.ProfileHash,
		nullStr(j.AgentID), nullStr(j.TokenSerial), j.RequesterID, nullStr(j.OrganizationID), j.BindingHash,
		x.d.ts(j.Deadline), x.d.ts(j.Created), x.d.ts(j.Created), j.ErrorCode, j.ErrorMessage, nullStr(j.SupersededBy),
		nullStr(j.IdempotencyKey), j.RequestHash, nullStr(j.RolloutID), j.Document.Number, j.Document.Date)
	out, err := scanJob(row)
	if err != nil {
		return Job{}, x.d.wrap(what, err)
	}
	if err := x.startAttempt(ctx, out.ID, 1, out.Created); err != nil {
		return Job{}, x.d.wrap(what, err)
	}
	if err := x.addEvent(ctx, JobEvent{JobID: out.ID, To: out.State, Attempt: 1, Actor: out.RequesterID,
		Reason: "created", At: out.Created}); err != nil {
		return Job{}, x.d.wrap(what, err)
	}
	return out, nil
}

func (x *q) startAttempt(ctx context.Context, jobID string, attempt int, at time.Time) error {
	_, err := x.exec(ctx, "INSERT INTO job_attempts (job_id, attempt, started_at) VALUES (?, ?, ?)",
		jobID, attempt, x.d.ts(at))
	return err
}

func (x *q) addEvent(ctx context.Context, e JobEvent) error {
	_, err := x.exec(ctx, `INSERT INTO job_events (job_id, from_state, to_state, attempt, actor, reason, at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, e.JobID, string(e.From), string(e.To), e.Attempt, e.Actor, e.Reason, x.d.ts(e.At))
	return err
}

func (x *q) UpdateJobState(ctx context.Context, id string, from, to jobs.State, expectedVersion int64, c JobChange) (Job, error) {
	what := fmt.Sprintf("job %s %s -> %s", id, from, to)
	if err := required(what, "job ID", id, "from state", string(from), "to state", string(to), "actor", c.Actor); err != nil {
		return Job{}, err
	}
	if err := checkVersion(what, expectedVersion); err != nil {
		return Job{}, err
	}
	at := orNow(c.At)
	set, args := x.jobChangeSet(to, at, c)
	// Compare-and-set: the row changes only if nobody changed it since the caller read it.
	// On PostgreSQL a concurrent updater waits for the row lock, then re-checks the
	// condition against the committed row and matches nothing.
	row := x.queryRow(ctx, "UPDATE jobs SET "+set+" WHERE id = ? AND state = ? AND version = ? RETURNING "+jobCols,
		append(args, id, string(from), expectedVersion)...)
	j, err := scanJob(row)
	if isNoRows(err) {
		return Job{}, x.jobConflict(ctx, what, id, from, expectedVersion)
	}
	if err != nil {
		return Job{}, x.d.wrap(what, err)
	}
	if c.NewAttempt {
		if err := x.startAttempt(ctx, id, j.Attempt, at); err != nil {
			return Job{}, x.d.wrap(what, err)
		}
	}
	if err := x.addEvent(ctx, JobEvent{JobID: id, From: from, To: to, Attempt: j.Attempt, Actor: c.Actor,
		Reason: c.Reason, At: at}); err != nil {
		return Job{}, x.d.wrap(what, err)
	}
	return j, nil
}

// jobChangeSet is the SET clause of a transition to state to at at, and its arguments.
func (x *q) jobChangeSet(to jobs.State, at time.Time, c JobChange) (string, []any) {
	set := "state = ?, state_since = ?, version = version + 1, updated_at = ?"
	args := []any{string(to), x.d.ts(at), x.d.ts(at)}
	if c.NewAttempt {
		set += ", attempt = attempt + 1, step_current = '', step_highest = ''"
	}
	if c.Error != nil {
		set += ", error_code = ?, error_message = ?"
		args = append(args, c.Error.Code, c.Error.Message)
	}
	if c.SupersededBy != "" {
		set += ", superseded_by = ?"
		args = append(args, c.SupersededBy)
	}
	if c.TokenSerial != "" {
		set += ", token_serial = ?"
		args = append(args, c.TokenSerial)
	}
	if !c.Deadline.IsZero() {
		set += ", deadline = ?"
		args = append(args, x.d.ts(c.Deadline))
	}
	return set, args
}

// UpdateJobStates applies one change to many jobs with a few statements for every
// batchRows of them: lock and check the rows, update them, insert their attempts and
// timeline events. One job takes UpdateJobState's path.
func (x *q) UpdateJobStates(ctx context.Context, moves []JobMove, to jobs.State, c JobChange) ([]Job, error) {
	switch len(moves) {
	case 0:
		return nil, nil
	case 1:
		j, err := x.UpdateJobState(ctx, moves[0].ID, moves[0].From, to, moves[0].ExpectedVersion, c)
		if err != nil {
			return nil, err
		}
		return []Job{j}, nil
	}
	what := fmt.Sprintf("%d jobs -> %s", len(moves), to)
	if err := required(what, "to state", string(to), "actor", c.Actor); err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(moves))
	for _, m := range moves {
		mw := fmt.Sprintf("job %s %s -> %s", m.ID, m.From, to)
		if err := required(mw, "job ID", m.ID, "from state", string(m.From)); err != nil {
			return nil, err
		}
		if err := checkVersion(mw, m.ExpectedVersion); err != nil {
			return nil, err
		}
		if seen[m.ID] {
			return nil, fmt.Errorf("store: %s: job %s is listed twice: %w", what, m.ID, ErrInvalid)
		}
		seen[m.ID] = true
	}
	// Every job is checked before any moves, so that a refusal leaves all as they were.
	for chunk := range slices.Chunk(moves, batchRows) {
		if err := x.lockJobs(ctx, chunk, to); err != nil {
			return nil, err
		}
	}
	at := orNow(c.At)
	out := make([]Job, 0, len(moves))
	for chunk := range slices.Chunk(moves, batchRows) {
		js, err := x.moveJobs(ctx, chunk, to, at, c)
		if err != nil {
			return nil, err
		}
		out = append(out, js...)
	}
	return out, nil
}

// jobVersion is what a compare-and-set on a job compares.
type jobVersion struct {
	id, state string
	version   int64
}

// moveIDs is the IDs of moves as query arguments.
func moveIDs(moves []JobMove) []any {
	ids := make([]any, len(moves))
	for i, m := range moves {
		ids[i] = m.ID
	}
	return ids
}

// lockJobs is the compare-and-set of UpdateJobStates for at most batchRows jobs: it
// locks their rows (on PostgreSQL; SQLite has one writer) and checks that each job is as
// its caller read it. Locking in ID order keeps two sets from deadlocking.
func (x *q) lockJobs(ctx context.Context, moves []JobMove, to jobs.State) error {
	what := fmt.Sprintf("%d jobs -> %s", len(moves), to)
	ids := moveIDs(moves)
	rows, err := x.query(ctx, "SELECT id, state, version FROM jobs WHERE id IN ("+placeholders(len(ids))+") ORDER BY id"+x.d.forUpdate, ids...)
	if err != nil {
		return x.d.wrap(what, err)
	}
	found, err := collect(rows, x.d, what, func(r scanner) (jobVersion, error) {
		var v jobVersion
		err := r.Scan(&v.id, &v.state, &v.version)
		return v, err
	})
	if err != nil {
		return err
	}
	locked := make(map[string]jobVersion, len(found))
	for _, v := range found {
		locked[v.id] = v
	}
	for _, m := range moves {
		mw := fmt.Sprintf("job %s %s -> %s", m.ID, m.From, to)
		v, ok := locked[m.ID]
		switch {
		case !ok:
			return fmt.Errorf("store: %s: %w", mw, ErrNotFound)
		case v.state != string(m.From) || v.version != m.ExpectedVersion:
			return fmt.Errorf("store: %s: job is %s at version %d, expected %s at version %d: %w",
				mw, v.state, v.version, m.From, m.ExpectedVersion, ErrConflict)
		}
	}
	return nil
}

// moveJobs applies the change to at most batchRows jobs that lockJobs checked, with their
// new attempts and timeline events.
func (x *q) moveJobs(ctx context.Context, moves []JobMove, to jobs.State, at time.Time, c JobChange) ([]Job, error) {
	what := fmt.Sprintf("%d jobs -> %s", len(moves), to)
	ids := moveIDs(moves)
	set, args := x.jobChangeSet(to, at, c)
	rows, err := x.query(ctx, "UPDATE jobs SET "+set+" WHERE id IN ("+placeholders(len(ids))+") RETURNING "+jobCols, append(args, ids...)...)
	if err != nil {
		return nil, x.d.wrap(what, err)
	}
	updated, err := collect(rows, x.d, what, scanJob)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]Job, len(updated))
	for _, j := range updated {
		byID[j.ID] = j
	}
	out := make([]Job, len(moves))
	for i, m := range moves {
		j, ok := byID[m.ID]
		if !ok {
			return nil, fmt.Errorf("store: %s: job %s was checked but not updated: %w", what, m.ID, ErrConflict)
		}
		out[i] = j
	}

	if c.NewAttempt {
		vals := make([]any, 0, 3*len(out))
		for _, j := range out {
			vals = append(vals, j.ID, j.Attempt, x.d.ts(at))
		}
		if _, err := x.exec(ctx, "INSERT INTO job_attempts (job_id, attempt, started_at) VALUES "+valueRows(len(out), 3), vals...); err != nil {
			return nil, x.d.wrap(what, err)
		}
	}
	vals := make([]any, 0, 7*len(out))
	for i, j := range out {
		vals = append(vals, j.ID, string(moves[i].From), string(to), j.Attempt, c.Actor, c.Reason, x.d.ts(at))
	}
	if _, err := x.exec(ctx, `INSERT INTO job_events (job_id, from_state, to_state, attempt, actor, reason, at)
		VALUES `+valueRows(len(out), 7), vals...); err != nil {
		return nil, x.d.wrap(what, err)
	}
	return out, nil
}

// jobConflict explains why a compare-and-set on a job matched no row: it is missing
// (ErrNotFound) or was changed by someone else (ErrConflict). An empty from skips the state.
func (x *q) jobConflict(ctx context.Context, what, id string, from jobs.State, expectedVersion int64) error {
	var state string
	var version int64
	if err := x.queryRow(ctx, "SELECT state, version FROM jobs WHERE id = ?", id).Scan(&state, &version); err != nil {
		return x.d.wrap(what, err)
	}
	expected := fmt.Sprintf("version %d", expectedVersion)
	if from != "" {
		expected = fmt.Sprintf("%s at version %d", from, expectedVersion)
	}
	return fmt.Errorf("store: %s: job is %s at version %d, expected %s: %w", what, state, version, expected, ErrConflict)
}

func checkVersion(what string, v int64) error {
	if v < 1 {
		return fmt.Errorf("store: %s: expected version %d: versions start at 1: %w", what, v, ErrInvalid)
	}
	return nil
}

func (x *q) EditJob(ctx context.Context, id string, expectedVersion int64, e JobEdit) (Job, error) {
	what := "edit job " + id
	if err := required(what, "job ID", id, "binding hash", e.BindingHash); err != nil {
		return Job{}, err
	}
	if err := checkVersion(what, expectedVersion); err != nil {
		return Job{}, err
	}
	at := x.d.ts(orNow(e.At))
	row := x.queryRow(ctx, `UPDATE jobs SET holder_id = ?, profile_name = ?, profile_hash = ?, agent_id = ?,
			token_serial = ?, binding_hash = ?, state_since = ?, updated_at = ?, version = version + 1
		WHERE id = ? AND version = ? RETURNING `+jobCols,
		nullStr(e.HolderID), e.ProfileName, e.ProfileHash, nullStr(e.AgentID), nullStr(e.TokenSerial), e.BindingHash,
		at, at, id, expectedVersion)
	j, err := scanJob(row)
	if isNoRows(err) {
		return Job{}, x.jobConflict(ctx, what, id, "", expectedVersion)
	}
	return j, x.d.wrap(what, err)
}

func (x *q) AddJobStep(ctx context.Context, s JobStep, p jobs.Progress, expectedVersion int64) (Job, error) {
	what := fmt.Sprintf("job %s step %s", s.JobID, s.Step)
	if err := required(what, "job ID", s.JobID, "step", string(s.Step)); err != nil {
		return Job{}, err
	}
	if err := checkVersion(what, expectedVersion); err != nil {
		return Job{}, err
	}
	// The attempt in the condition fences off results of an older attempt; the version
	// makes sure the progress was computed from the row as it is.
	at := orNow(s.At)
	row := x.queryRow(ctx, `UPDATE jobs SET step_current = ?, step_highest = ?, updated_at = ?, version = version + 1
		WHERE id = ? AND attempt = ? AND version = ? RETURNING `+jobCols,
		string(p.Current), string(p.Highest), x.d.ts(at), s.JobID, s.Attempt, expectedVersion)
	j, err := scanJob(row)
	if isNoRows(err) {
		var attempt int
		if err := x.queryRow(ctx, "SELECT attempt FROM jobs WHERE id = ?", s.JobID).Scan(&attempt); err != nil {
			return Job{}, x.d.wrap(what, err)
		}
		if attempt != s.Attempt {
			return Job{}, fmt.Errorf("store: %s: attempt %d is not the current attempt %d: %w", what, s.Attempt, attempt, ErrConflict)
		}
		return Job{}, x.jobConflict(ctx, what, s.JobID, "", expectedVersion)
	}
	if err != nil {
		return Job{}, x.d.wrap(what, err)
	}
	if _, err := x.exec(ctx, `INSERT INTO job_steps (job_id, attempt, step, detail, at) VALUES (?, ?, ?, ?, ?)`,
		s.JobID, s.Attempt, string(s.Step), s.Detail, x.d.ts(at)); err != nil {
		return Job{}, x.d.wrap(what, err)
	}
	return j, nil
}

func (x *q) GetJob(ctx context.Context, id string) (Job, error) {
	j, err := scanJob(x.queryRow(ctx, "SELECT "+jobCols+" FROM jobs WHERE id = ?", id))
	return j, x.d.wrap("job "+id, err)
}

func (x *q) GetJobByIdempotencyKey(ctx context.Context, requesterID, key string) (Job, error) {
	what := "job of requester " + requesterID + " with idempotency key " + key
	if err := required(what, "requester", requesterID, "key", key); err != nil {
		return Job{}, err
	}
	j, err := scanJob(x.queryRow(ctx, "SELECT "+jobCols+" FROM jobs WHERE requester_id = ? AND idempotency_key = ?", requesterID, key))
	return j, x.d.wrap(what, err)
}

func (x *q) GetJobs(ctx context.Context, ids []string) ([]Job, error) {
	byID := make(map[string]Job, len(ids))
	for chunk := range slices.Chunk(ids, batchRows) {
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		what := fmt.Sprintf("%d jobs", len(chunk))
		rows, err := x.query(ctx, "SELECT "+jobCols+" FROM jobs WHERE id IN ("+placeholders(len(args))+")", args...)
		if err != nil {
			return nil, x.d.wrap(what, err)
		}
		js, err := collect(rows, x.d, what, scanJob)
		if err != nil {
			return nil, err
		}
		for _, j := range js {
			byID[j.ID] = j
		}
	}
	out := make([]Job, len(ids))
	for i, id := range ids {
		j, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("store: job %s: %w", id, ErrNotFound)
		}
		out[i] = j
	}
	return out, nil
}

func (x *q) ListJobs(ctx context.Context, f JobFilter, p Page) ([]Job, string, error) {
	const op = "list jobs"
	limit, err := p.limit()
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	var w where
	w.in("state", toStrings(f.States))
	w.in("kind", toStrings(f.Kinds))
	for _, c := range []struct{ col, val string }{
		{"organisation_id", f.OrganizationID}, {"holder_id", f.HolderID}, {"agent_id", f.AgentID},
		{"requester_id", f.RequesterID}, {"profile_name", f.ProfileName}, {"token_serial", f.TokenSerial},
		{"rollout_id", f.RolloutID},
	} {
		if c.val != "" {
			w.add(c.col+" = ?", c.val)
		}
	}
	if !f.DeadlineBefore.IsZero() {
		w.add("deadline < ?", x.d.ts(f.DeadlineBefore))
	}
	if f.Undispatched {
		w.add(`EXISTS (SELECT 1 FROM job_attempts a
			WHERE a.job_id = jobs.id AND a.attempt = jobs.attempt AND a.dispatch_message_id = '')`)
	}
	if err := w.olderThan(x.d, p.Cursor); err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	rows, err := x.query(ctx, "SELECT "+jobCols+" FROM jobs"+w.sql()+" ORDER BY created_at DESC, id DESC LIMIT ?",
		append(w.args, limit+1)...)
	if err != nil {
		return nil, "", x.d.wrap(op, err)
	}
	out, err := collect(rows, x.d, op, scanJob)
	if err != nil {
		return nil, "", err
	}
	return pageOf(out, limit, func(j Job) string { return encodeCursor(cursorTime(j.Created), j.ID) })
}

// JobCursor is the cursor that continues a job list after j: for callers that filter a
// page further and stop inside it.
func JobCursor(j Job) string { return encodeCursor(cursorTime(j.Created), j.ID) }

func (x *q) ListJobEvents(ctx context.Context, jobID string) ([]JobEvent, error) {
	rows, err := x.query(ctx, `SELECT id, job_id, from_state, to_state, attempt, actor, reason, at
		FROM job_events WHERE job_id = ? ORDER BY id`, jobID)
	if err != nil {
		return nil, x.d.wrap("job "+jobID+" timeline", err)
	}
	return collect(rows, x.d, "job "+jobID+" timeline", scanJobEvent)
}

func scanJobEvent(r scanner) (JobEvent, error) {
	var e JobEvent
	err := r.Scan(&e.ID, &e.JobID, &e.From, &e.To, &e.Attempt, &e.Actor, &e.Reason, timeCol{&e.At})
	return e, err
}

func (x *q) ListJobSteps(ctx context.Context, jobID string) ([]JobStep, error) {
	rows, err := x.query(ctx, `SELECT id, job_id, attempt, step, detail, at FROM job_steps WHERE job_id = ? ORDER BY id`, jobID)
	if err != nil {
		return nil, x.d.wrap("job "+jobID+" steps", err)
	}
	return collect(rows, x.d, "job "+jobID+" steps", func(r scanner) (JobStep, error) {
		var s JobStep
		err := r.Scan(&s.ID, &s.JobID, &s.Attempt, &s.Step, &s.Detail, timeCol{&s.At})
		return s, err
	})
}

func (x *q) ListJobAttempts(ctx context.Context, jobID string) ([]JobAttempt, error) {
	rows, err := x.query(ctx, `SELECT `+attemptCols+` FROM job_attempts WHERE job_id = ? ORDER BY attempt`, jobID)
	if err != nil {
		return nil, x.d.wrap("job "+jobID+" attempts", err)
	}
	return collect(rows, x.d, "job "+jobID+" attempts", scanAttempt)
}

// ---- approvals ----

const approvalCols = "id, job_id, gate, approver_id, verdict, bound_hash, attempt, reason, at, expires_at"

func scanApproval(r scanner) (Approval, error) {
	var a Approval
	err := r.Scan(&a.ID, &a.JobID, &a.Gate, &a.ApproverID, &a.Verdict, &a.BoundHash, &a.Attempt, &a.Reason,
		timeCol{&a.At}, timeCol{&a.Expires})
	return a, err
}

func (x *q) AddApproval(ctx context.Context, a Approval) (Approval, error) {
	what := fmt.Sprintf("job %s %s approval by %s", a.JobID, a.Gate, a.ApproverID)
	if err := required(what, "job ID", a.JobID, "approver", a.ApproverID, "bound hash", a.BoundHash); err != nil {
		return Approval{}, err
	}
	if a.Gate != jobs.GateRequest && a.Gate != jobs.GateCAOperator {
		return Approval{}, fmt.Errorf("store: %s: unknown gate %q: %w", what, a.Gate, ErrInvalid)
	}
	if a.Verdict != jobs.VerdictApprove && a.Verdict != jobs.VerdictReject {
		return Approval{}, fmt.Errorf("store: %s: unknown verdict %q: %w", what, a.Verdict, ErrInvalid)
	}
	if a.Attempt < 1 {
		return Approval{}, fmt.Errorf("store: %s: attempt %d: attempts start at 1: %w", what, a.Attempt, ErrInvalid)
	}
	row := x.queryRow(ctx, `INSERT INTO approvals (job_id, gate, approver_id, verdict, bound_hash, attempt, reason, at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (job_id, gate, approver_id, bound_hash, attempt) DO NOTHING RETURNING `+approvalCols,
		a.JobID, string(a.Gate), a.ApproverID, string(a.Verdict), a.BoundHash, a.Attempt, a.Reason,
		x.d.ts(orNow(a.At)), x.d.ts(a.Expires))
	out, err := scanApproval(row)
	if isNoRows(err) {
		return Approval{}, fmt.Errorf("store: %s: this approver already decided on this content in this attempt: %w", what, ErrConflict)
	}
	return out, x.d.wrap(what, err)
}

func (x *q) ListApprovals(ctx context.Context, jobID string) ([]Approval, error) {
	rows, err := x.query(ctx, "SELECT "+approvalCols+" FROM approvals WHERE job_id = ? ORDER BY id", jobID)
	if err != nil {
		return nil, x.d.wrap("job "+jobID+" approvals", err)
	}
	return collect(rows, x.d, "job "+jobID+" approvals", scanApproval)
}
